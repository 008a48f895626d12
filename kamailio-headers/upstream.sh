#!/usr/bin/env bash
# Builds an upstream Kamailio release (or master) from its source tarball, with upstream's default
# options (MEMDBG=1 as upstream ships it), into a cached prefix, once; later runs only print it.
#
#   kamailio-headers/upstream.sh WHICH          -> builds if needed, prints the prefix
#   kamailio-headers/upstream.sh --prefix WHICH -> only prints where it is (or will be)
# The prefix has sbin/kamailio, sbin/kamcmd, lib64/kamailio/modules, and src/: the configured
# tree, for KAMAILIO_SRC.
# WHICH: a version whose tarball is in $KAMAILIO_TARBALLS (5.8.8, 6.0.7, 6.1.4, 6.2.0-dev1, or
# `master` = the newest -dev tarball there), a path to a kamailio-*.tar.{xz,gz}, or an https URL
# of one (an upstream release tarball). A SHA256SUMS beside the tarball is checked if present.
# Environment: KAMAILIO_TARBALLS (default: ../shared/kamailio-src next to this repository),
# UPSTREAM_CACHE (default /var/cache/tsilo-rs/upstream), KAMAILIO_CFG (extra `make cfg` options,
# e.g. KMSTATS=0; such a build gets a prefix of its own). Needs root for apt (build-deps).
set -euo pipefail

only_prefix=
if [ "${1:-}" = --prefix ]; then only_prefix=1; shift; fi
which=${1:?usage: upstream.sh [--prefix] VERSION|TARBALL|URL}
repo=$(cd "$(dirname "$0")/.." && pwd)
tarballs=${KAMAILIO_TARBALLS:-$repo/../shared/kamailio-src}
cache=${UPSTREAM_CACHE:-/var/cache/tsilo-rs/upstream}
# The modules the tests, examples and benchmark load (and tsilo, the C module to compare with);
# KAMAILIO_MODULES overrides (some do not build with every KAMAILIO_CFG).
modules=${KAMAILIO_MODULES:-"tm tmx sl registrar usrloc tsilo dmq dmq_usrloc app_lua kex ctl jsonrpcs pv textops
textopsx siputils maxfwd rr xlog sqlops db_text htable cfgutils corex nathelper http_client
http_async_client sanity xhttp async rtimer dialog auth auth_db db_sqlite uac evrexec benchmark
outbound"}
build_deps="bison flex pkg-config make gcc libc6-dev libcurl4-openssl-dev liblua5.1-0-dev
libsqlite3-dev libevent-dev libssl-dev xz-utils ca-certificates curl"

say() { echo "upstream.sh: $*" >&2; }

# The tarball for WHICH.
shopt -s nullglob
case $which in
    https://*) tarball= ;;
    */*|*.tar.*) tarball=$(realpath "$which") ;;
    master) found=("$tarballs"/kamailio-*-dev*.tar.*); tarball=$(printf '%s\n' "${found[@]}" | sort -V | tail -1) ;;
    *) found=("$tarballs"/kamailio-"$which".tar.* "$tarballs"/kamailio-"$which"-*.tar.*); tarball=${found[0]:-} ;;
esac
shopt -u nullglob
if [ -z "${tarball:-}" ] && [[ $which != https://* ]]; then
    say "no tarball for '$which' in $tarballs (set KAMAILIO_TARBALLS, or give a tarball path or URL)"
    exit 1
fi
name=$(basename "${tarball:-$which}"); name=${name%.tar.*}
case $name in kamailio-*) ;; *) name=kamailio-$name ;; esac
cfg_opts=${KAMAILIO_CFG:-}
[ -z "$cfg_opts" ] || name=$name-$(echo "$cfg_opts" | tr ' /=' '_\-\-')
prefix=$cache/$name
if [ -n "$only_prefix" ]; then
    echo "$prefix"
    exit 0
fi

# Written last: a build that stopped halfway is done again.
done_mark=$prefix/.built-by-tsilo
if [ -f "$done_mark" ]; then
    echo "$prefix"
    exit 0
fi

missing=$(for p in $build_deps; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
    say "installing build dependencies:" $missing
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kamailio-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -z "${tarball:-}" ]; then
    say "downloading $which"
    tarball=$work/$(basename "$which")
    curl -fsSL -o "$tarball" "$which"
fi
sums=$(dirname "$tarball")/SHA256SUMS
if [ -f "$sums" ] && grep -q " $(basename "$tarball")\$" "$sums"; then
    ( cd "$(dirname "$tarball")" && grep " $(basename "$tarball")\$" SHA256SUMS | sha256sum -c --quiet - ) >&2 ||
        { say "checksum mismatch for $tarball"; exit 1; }
fi

say "building $name into $prefix (about a minute)"
rm -rf "$prefix"
tar -xf "$tarball" -C "$work"
tree=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -1)
present=$(for m in $modules; do [ -d "$tree/src/modules/$m" ] && echo "$m"; done | tr '\n' ' ')
# Every other module of the tree stays out (some of upstream's defaults need STATISTICS).
others=$(for d in "$tree"/src/modules/*/; do m=$(basename "$d"); case " $present " in *" $m "*) ;; *) echo "$m";; esac; done | tr '\n' ' ')
(
    cd "$tree"
    # shellcheck disable=SC2086 # options are words
    make cfg PREFIX="$prefix" include_modules="$present" exclude_modules="$others" modules_dirs=modules \
        group_include="" $cfg_opts >&2
    # Never install anywhere else (a failed `make cfg` would leave upstream's /usr/local).
    grep -qx "PREFIX= $prefix" src/config.mak || { echo "upstream.sh: make cfg did not take PREFIX=$prefix" >&2; exit 1; }
    make -j"$(nproc)" all >&2
    # Stops at the man pages when the tarball has none: binaries and modules are in place by then.
    make install >&2 || [ -x "$prefix/sbin/kamailio" ]
) || { say "build of $name failed"; exit 1; }
for b in kamailio kamcmd; do
    [ -x "$prefix/sbin/$b" ] || { say "no $prefix/sbin/$b after the build"; exit 1; }
done
# Kamailio's build goes on past a module that fails to compile: every one asked for must be there.
missing_mods=$(for m in $present; do [ -f "$prefix/lib64/kamailio/modules/$m.so" ] || echo "$m"; done | tr '\n' ' ')
[ -z "$missing_mods" ] || { say "not built (see the errors above): $missing_mods"; exit 1; }
# The configured tree (config.mak, modules.lst) is what build.rs reads: keep its src/.
rm -rf "$prefix/src"
cp -a "$tree/src" "$prefix/src"
touch "$done_mark"
echo "$prefix"
