#!/usr/bin/env bash
# make deb: build/kamailio-tsilo-rs_<version>_<arch>.deb from build/tsilo.so, for the kamailio
# package installed on this machine (the one the module was built against), with dpkg-deb and the
# control files of packaging/. Prints the package's path.
#   DEB_MAINTAINER   the Maintainer field (default: "tsilo-rs developers <tsilo-rs@example.org>")
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=kamailio-tsilo-rs
die() { echo "deb: $*" >&2; exit 1; }

[ -f build/tsilo.so ] || die "build/tsilo.so is missing (make build)"
kamailio_version=$(dpkg-query -W -f='${Version}' kamailio 2>/dev/null) || die "the kamailio package is not installed"
# The C module's path in Debian's package: where ours goes (dpkg -L names it even while diverted).
stock=$(dpkg -L kamailio | grep '/modules/tsilo\.so$') || die "kamailio's package lists no tsilo.so"
moddir=$(dirname "$stock")
upstream=${kamailio_version#*:}
upstream=${upstream%%-*}
# Kamailio loads a module only if its version string matches: the .so must be built for this one.
grep -aq "kamailio $upstream (" build/tsilo.so ||
    die "build/tsilo.so is not built for kamailio $upstream (the installed package): make clean build"

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)-1+kam$upstream"
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-tsilo-rs developers <tsilo-rs@example.org>}
out=build/${pkg}_${version}_${arch}.deb
stage=build/deb/$pkg
doc=$stage/usr/share/doc/$pkg

rm -rf build/deb
install -d -m 0755 "$stage/DEBIAN" "$stage$moddir" "$doc/examples/cluster" "$doc/docs"
install -m 0644 build/tsilo.so "$stage$moddir/tsilo.so"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage$moddir/tsilo.so"   # as dh_strip
install -m 0644 README.md packaging/copyright "$doc/"
install -m 0644 examples/kamailio.cfg examples/kamailio-lua.cfg examples/tsilo.lua "$doc/examples/"
install -m 0644 examples/cluster/* "$doc/examples/cluster/"
install -m 0644 docs/design.md docs/performance.md "$doc/docs/"
gzip -9n "$doc/README.md"

fill() {   # template -> file, placeholders replaced
    sed -e "s|@VERSION@|$version|g" -e "s|@ARCH@|$arch|g" -e "s|@MAINTAINER@|$maintainer|g" \
        -e "s|@KAMAILIO_VERSION@|$kamailio_version|g" -e "s|@MODDIR@|$moddir|g" \
        -e "s|@DIST@|$(. /etc/os-release; echo "$VERSION_CODENAME")|g" \
        -e "s|@COMMIT@|$(git rev-parse --short HEAD 2>/dev/null || echo unknown)|g" \
        -e "s|@DATE@|$(date -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")|g" \
        -e "s|@SHLIBS@|${shlibs:-}|g" -e "s|@SIZE@|${size:-0}|g" "$1"
}
fill packaging/changelog.in | gzip -9n > "$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"
for s in preinst postrm; do
    fill "packaging/$s.in" > "$stage/DEBIAN/$s"
    chmod 0755 "$stage/DEBIAN/$s"
done

# The shared libraries the module needs (libc, libgcc_s), as dpkg-shlibdeps names them; it wants
# a debian/control to read, so it runs in a scratch directory.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" > "$scratch/debian/control"
so=$(realpath "$stage$moddir/tsilo.so")
deps=$(cd "$scratch" && dpkg-shlibdeps -O -e"$so" 2>&1) || die "dpkg-shlibdeps failed: $deps"
shlibs=$(echo "$deps" | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no library dependencies for tsilo.so: $deps"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
fill packaging/control.in > "$stage/DEBIAN/control"
(cd "$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"

rm -f build/${pkg}_*.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
echo "$out"
