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
    # apt-get source needs a deb-src entry; add Debian's own for this release if none is enabled.
    if ! grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
        cat > /etc/apt/sources.list.d/tsilo-deb-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        apt-get update -qq
    fi
    dl=$(mktemp -d)
    trap 'rm -rf "$dl"' EXIT
    chmod 755 "$dl"   # apt's download user must be able to write here
    ( cd "$dl" && apt-get source --download-only -qq "kamailio=$pkgver" >&2 ) || {
        echo "fetch.sh: apt-get source kamailio=$pkgver failed (is a deb-src entry enabled?)" >&2; exit 1; }
    mkdir -p "$tree.tmp"
    tar -xzf "$dl/kamailio_$upstream.orig.tar.gz" -C "$tree.tmp" --strip-components=1 \
        "kamailio-$upstream/src"
    rm -rf "$tree" && mv "$tree.tmp" "$tree"
fi

# The first `make` in src/ writes config.mak; after that `make printcdefs` prints the core's C_DEFS.
[ -f "$tree/src/config.mak" ] || make -s -C "$tree/src" printcdefs >/dev/null 2>&1 || true
[ -f "$tree/src/config.mak" ] || { echo "fetch.sh: could not configure $tree/src" >&2; exit 1; }
ln -sfn "kamailio-$upstream" "$here/current"
echo "$here/current/src"
