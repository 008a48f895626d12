#!/usr/bin/env bash
# Prints "URI SIGNED-BY" of this machine's own Debian archive: the enabled `deb` entry whose suite
# is the release codename (one-line /etc/apt/sources.list or deb822 *.sources). SIGNED-BY may be
# empty. Used by fetch.sh (deb-src entry) and .ci/debian13.sh (debootstrap mirror), so that no
# mirror address is written into the project. Exits 1 if there is no such entry.
set -euo pipefail

codename=${1:-$(. /etc/os-release && echo "$VERSION_CODENAME")}
files=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
done
[ ${#files[@]} -gt 0 ] || { echo "debian-archive.sh: no apt sources" >&2; exit 1; }

awk -v want="$codename" '
    function has(list, w,   n, a, i) { n = split(list, a, /[ \t]+/); for (i = 1; i <= n; i++) if (a[i] == w) return 1; return 0 }
    function stanza() {   # deb822: one stanza finished
        if (has(f["types"], "deb") && has(f["suites"], want) && tolower(f["enabled"]) != "no" && f["uris"] != "") {
            split(f["uris"], u, /[ \t]+/); print u[1], f["signed-by"]; found = 1; exit
        }
        delete f
    }
    FNR == 1 { if (deb822) stanza(); deb822 = (FILENAME ~ /\.sources$/) }
    /^[ \t]*#/ { next }
    deb822 && /^[ \t]*$/ { stanza(); next }
    deb822 && /^[A-Za-z-]+:/ { k = tolower($1); sub(/:$/, "", k); v = $0; sub(/^[^:]+:[ \t]*/, "", v); f[k] = v; next }
    !deb822 && $1 == "deb" {   # deb [opt=val ...] URI suite component...
        sb = ""; i = 2
        if ($2 ~ /^\[/) { for (; i <= NF; i++) { if ($i ~ /^\[?signed-by=/) { sb = $i; sub(/^\[?signed-by=/, "", sb); sub(/\]$/, "", sb) } if ($i ~ /\]$/) { i++; break } } }
        if ($(i + 1) == want) { print $i, sb; found = 1; exit }
    }
    END { if (!found && deb822) stanza(); if (!found) exit 1 }
' "${files[@]}" || { echo "debian-archive.sh: no enabled 'deb' entry for suite $codename in the apt sources" >&2; exit 1; }
