#!/usr/bin/env bash
# `make test` inside a Debian 13 (trixie) root: Debian's kamailio 6.0.x and Debian's own Rust (1.85),
# as a new Debian 13 user would run it. Called by `make test-debian13`; exit code = the inner make test's.
#
#   .ci/debian13.sh [CACHE [COMMAND]]   (defaults: /var/cache/tsilo-rs/debian13, "make test"; see the Makefile)
#   CACHE/base    pristine root, made once: debootstrap --variant=minbase + rustc cargo make git
#                 ca-certificates, this machine's CA certificates; never changed afterwards
#   CACHE/root    this run's root: base under an overlay whose upper layer (CACHE/upper) starts empty
#                 each run; the project cloned (committed HEAD) into /src/tsilo-rs, where `make test`
#                 runs `make deps` (kamailio, libclang, ...) itself. Mounted only while the script runs.
#   DEBIAN13_CARRY  files of this machine copied into the root's /src/carry (space-separated)
#   CACHE/cargo   CARGO_HOME in the root, CACHE/apt its /var/cache/apt/archives: downloads kept between runs
# The mirror is this machine's own Debian archive (kamailio-headers/debian-archive.sh).
set -euo pipefail

suite=trixie
cache=${1:-/var/cache/tsilo-rs/debian13}
mkdir -p "$cache" && cache=$(cd "$cache" && pwd -P)   # canonical: compared with /proc/PID/root below
command=${2:-make test}
repo=$(cd "$(dirname "$0")/.." && pwd)
base=$cache/base root=$cache/root
say() { echo "debian13 [$SECONDS s]: $*" >&2; }

command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap; }
mkdir -p "$cache/cargo" "$cache/apt"

# 1. The pristine root, once.
if [ ! -f "$base/etc/tsilo-base" ]; then
    read -r mirror keyring < <("$repo/kamailio-headers/debian-archive.sh") || exit 1
    say "creating $base (debootstrap $suite from this machine's Debian archive)"
    rm -rf --one-file-system "$base.tmp" "$base"
    # libc6-dev by name: debootstrap does not resolve rustc's virtual dependency libc-dev.
    debootstrap --variant=minbase ${keyring:+--keyring="$keyring"} \
        --include=rustc,cargo,libc6-dev,make,git,ca-certificates "$suite" "$base.tmp" "$mirror" >&2
    # The proxy's CAs as local CAs: update-ca-certificates (and apt's later runs of it) keep them.
    cp /usr/local/share/ca-certificates/*.crt "$base.tmp/usr/local/share/ca-certificates/"
    chroot "$base.tmp" update-ca-certificates >/dev/null
    # No daemon of a package (kamailio) may start inside the root.
    printf '#!/bin/sh\nexit 101\n' > "$base.tmp/usr/sbin/policy-rc.d" && chmod 755 "$base.tmp/usr/sbin/policy-rc.d"
    [ -f "$base.tmp/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$base.tmp/etc/hosts"
    date -u > "$base.tmp/etc/tsilo-base"
    mv "$base.tmp" "$base"
fi

# 2. Mounts, undone on any exit (failure, Ctrl-C, TERM): first every process of the root, by pid.
mounted=()
root_pids() { local p; for p in /proc/[0-9]*; do [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && echo "${p#/proc/}"; done; true; }
cleanup() {
    local pids i
    pids=$(root_pids)
    if [ -n "$pids" ]; then
        say "processes left in the root, killing:"; ps -o pid=,args= -p $pids >&2 || true
        kill -TERM $pids 2>/dev/null || true
        for i in 1 2 3 4 5; do sleep 1; pids=$(root_pids); [ -z "$pids" ] && break; done
        [ -z "$pids" ] || { kill -KILL $pids 2>/dev/null || true; sleep 1; }
    fi
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" || { say "umount ${mounted[i]} failed, detaching it"; umount -l "${mounted[i]}"; }
    done
    mounted=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
bind() { mkdir -p "$2"; mount --bind "$1" "$2"; mounted+=("$2"); }

# 3. This run's root: base under a fresh, empty overlay (the run's writes land in CACHE/upper), a fresh clone.
if mountpoint -q "$root"; then say "$root is still mounted (a killed run?): umount it first"; exit 1; fi
rm -rf --one-file-system "$root" "$cache/upper" "$cache/work"   # never descends into a mount: fails instead
mkdir -p "$root" "$cache/upper" "$cache/work"
mount -t overlay tsilo-debian13 -o "lowerdir=$base,upperdir=$cache/upper,workdir=$cache/work" "$root"
mounted+=("$root")
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
git clone -q --no-checkout "$repo" "$root/src/tsilo-rs"
git -C "$root/src/tsilo-rs" checkout -q --detach "$(git -C "$repo" rev-parse HEAD)"
# Files from this machine the command may use (DEBIAN13_CARRY, e.g. the Debian 12 package), in /src/carry.
mkdir -p "$root/src/carry"
for f in ${DEBIAN13_CARRY:-}; do cp "$f" "$root/src/carry/"; done
say "testing $(git -C "$repo" log -1 --format='%h %s') in $root"
for m in /proc /dev /dev/pts /sys; do bind "$m" "$root$m"; done
bind "$cache/cargo" "$root/var/cache/cargo"
bind "$cache/apt" "$root/var/cache/apt/archives"

# 4. make test (or COMMAND) as root in the root, with a clean environment (the host's proxy variables, if any).
env=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
     TERM="${TERM:-dumb}" CARGO_HOME=/var/cache/cargo)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do [ -z "${!v:-}" ] || env+=("$v=${!v}"); done
say "running '$command' in /src/tsilo-rs"
chroot "$root" /usr/bin/env -i "${env[@]}" sh -c 'cd /src/tsilo-rs && rustc --version && eval "$1"' sh "$command" &
wait $! && rc=0 || rc=$?
say "'$command' in Debian 13 exited $rc"
exit $rc
