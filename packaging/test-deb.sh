#!/usr/bin/env bash
# make test-deb: the package as an operator uses it, on this machine (as root; the machine's own
# kamailio package, left as it was found):
#   lintian (no errors); apt install; the stock tsilo.so path is ours and Debian's C module sits
#   diverted beside it; the example config, unchanged, loads ours and late-forks a call, and so
#   does a config the C module understands too (tests/package.rs); apt remove: the C module is
#   back, byte for byte, and loads and late-forks with that config; the same after install + purge.
#   FOREIGN_DEB=file   also: apt must refuse this package built for another kamailio version.
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=kamailio-tsilo-rs
say() { echo "test-deb: $*" >&2; }
apt_log=$(mktemp)
apt() {   # apt-get, its chatter kept in a file and shown only when it fails
    DEBIAN_FRONTEND=noninteractive apt-get -y -qq "$@" >"$apt_log" 2>&1 || { cat "$apt_log" >&2; return 1; }
}
die() { say "FAILED: $*"; exit 1; }

deb=$(packaging/build-deb.sh)
stock=$(dpkg -L kamailio | grep '/modules/tsilo\.so$')
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
    die "$pkg is installed on this machine already; this test installs and removes it: remove it first"
fi
c_module=$(md5sum < "$stock")
# Whatever happens below, the machine ends as it was: package gone, C module in place.
restore() {
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'installed'; then
        say "removing $pkg (restoring the machine)"
        apt purge "$pkg" || true
    fi
    if [ "$(dpkg-divert --listpackage "$stock")" = "$pkg" ]; then   # a broken postrm left it
        say "removing the leftover diversion of $stock"
        dpkg-divert --package "$pkg" --remove --rename --divert "$stock.distrib" "$stock" >&2
    fi
    [ "$(md5sum < "$stock")" = "$c_module" ] || say "WARNING: $stock differs from Debian's C module"
}
trap 'restore; rm -f "$apt_log"' EXIT

missing=$(for p in lintian; do dpkg-query -W -f='${Status}\n' $p 2>/dev/null | grep -q '^install ok installed' || echo $p; done)
[ -z "$missing" ] || { say "installing $missing"; apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null; }

say "lintian $deb"
lintian --fail-on error --info "$deb" >&2 || die "lintian reports errors"

package_test() {   # $1: installed | removed
    say "tests/package.rs, package $1"
    # Removed: only the C-compatible config (the example's resume_route is ours alone).
    local only=""
    [ "$1" = installed ] || only=a_c_compatible_config
    TSILO_PACKAGE=$1 cargo test -q --release --test package -- --ignored $only >&2 ||
        die "tests/package.rs with the package $1"
}
installed() {
    apt install "$(realpath "$deb")" || die "apt install $deb"
    [ "$(dpkg-divert --listpackage "$stock")" = "$pkg" ] || die "$stock is not diverted to $pkg"
    [ "$(md5sum < "$stock.distrib")" = "$c_module" ] || die "Debian's C module is not at $stock.distrib"
    cmp -s "$stock" "build/deb/$pkg$stock" || die "$stock is not the packaged module"
    package_test installed
}
removed() {   # $1: remove | purge
    apt "$1" "$pkg" || die "apt $1 $pkg"
    [ -z "$(dpkg-divert --listpackage "$stock")" ] || die "$stock is still diverted after apt $1"
    [ ! -e "$stock.distrib" ] || die "$stock.distrib is left after apt $1"
    [ "$(md5sum < "$stock")" = "$c_module" ] || die "Debian's C module is not back at $stock after apt $1"
    package_test removed
}

say "install, then remove"
installed
removed remove
say "install, then purge"
installed
removed purge

if [ -n "${FOREIGN_DEB:-}" ]; then
    say "apt install $FOREIGN_DEB (built for another kamailio): must be refused"
    if out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y "$(realpath "$FOREIGN_DEB")" 2>&1); then
        die "apt installed a package built for another kamailio:
$out"
    fi
    echo "$out" | grep -E "Depends: kamailio \(= [^)]+\) but [^ ]+ is to be installed" >&2 ||
        die "apt refused, but without naming the kamailio version:
$out"
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' && die "$pkg got installed"
fi
say "passed ($deb)"
