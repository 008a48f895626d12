#!/usr/bin/env bash
# Fetch the Kamailio source tree that matches the installed `kamailio` package from Debian's
# source package, and prepare it for bindgen/cc (config.mak, so `make printcdefs` answers).
# Prints the path of the prepared `src/` directory. Nothing fetched here is committed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
pkgver=$(dpkg-query -W -f='${Version}' kamailio 2>/dev/null) || {
    echo "fetch.sh: the kamailio package is not installed (run: make deps)" >&2; exit 1; }
upstream=${pkgver#*:}; upstream=${upstream%%-*}          # 5.6.3-2 -> 5.6.3
tree=$here/kamailio-$upstream

if [ ! -f "$tree/src/core/ver_defs.h" ]; then
    # apt-get source needs a deb-src entry; if none is enabled, add one for this release, on the same
    # archive (URI and key) as this machine's own `deb` entry: no mirror address is written here.
    if ! grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
        read -r uri signed_by < <("$here/debian-archive.sh" "$codename") || exit 1
        {
            echo "Types: deb-src"
            echo "URIs: $uri"
            echo "Suites: $codename $codename-updates"
            echo "Components: main"
            [ -z "$signed_by" ] || echo "Signed-By: $signed_by"
        } > /etc/apt/sources.list.d/tsilo-deb-src.sources
        apt-get update -qq
    fi
    dl=$(mktemp -d)
    trap 'rm -rf "$dl"' EXIT
    chown _apt "$dl" 2>/dev/null || chmod 755 "$dl"   # apt downloads as user _apt
    # Debian 13: the mirror lacks kamailio_6.0.1.orig.tar.gz.asc (404), so apt-get source fails although
    # the .dsc and the tarball arrived. What counts is the tarball's sha256 against the .dsc, below.
    ( cd "$dl" && apt-get source --download-only -qq "kamailio=$pkgver" >&2 ) ||
        echo "fetch.sh: apt-get source kamailio=$pkgver exited non-zero; checking what arrived" >&2
    dsc=$dl/kamailio_${pkgver#*:}.dsc
    [ -f "$dsc" ] || { echo "fetch.sh: no $(basename "$dsc") (is a deb-src entry enabled?)" >&2; exit 1; }
    # Checksums-Sha256 of the .dsc: " <sha256> <size> <name>" lines; the orig tarball, not its .asc.
    read -r sum orig < <(awk -v pfx="kamailio_$upstream.orig.tar." '
        /^Checksums-Sha256:/ { on = 1; next }  /^[^ ]/ { on = 0 }
        on && index($3, pfx) == 1 && $3 !~ /\.asc$/ { print $1, $3; exit }' "$dsc") || {
        echo "fetch.sh: no orig tarball in the Checksums-Sha256 of $(basename "$dsc")" >&2; exit 1; }
    [ -f "$dl/$orig" ] || { echo "fetch.sh: $orig did not arrive" >&2; exit 1; }
    echo "$sum  $dl/$orig" | sha256sum --check --status || {
        echo "fetch.sh: SHA256 MISMATCH: $orig does not match $(basename "$dsc") (want $sum)" >&2; exit 1; }
    rm -rf "$tree.tmp" && mkdir -p "$tree.tmp"
    tar -xf "$dl/$orig" -C "$tree.tmp" --strip-components=1 \
        "kamailio-$upstream/src"
    rm -rf "$tree" && mv "$tree.tmp" "$tree"
fi

# The first `make` in src/ writes config.mak; after that `make printcdefs` prints the core's C_DEFS.
[ -f "$tree/src/config.mak" ] || make -s -C "$tree/src" printcdefs >/dev/null 2>&1 || true
[ -f "$tree/src/config.mak" ] || { echo "fetch.sh: could not configure $tree/src" >&2; exit 1; }
ln -sfn "kamailio-$upstream" "$here/current"
echo "$here/current/src"
