#!/usr/bin/env bash
# Fetch the second reference VMM (Debian's QEMU 10.0 from bookworm-backports)
# without installing it.
#
# Like scripts/reference-qemu.sh: the .debs are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` into a scratch folder
# (default: <repo>/target/reference-qemu10, override with
# REFERENCE_QEMU10_DIR); nothing is installed.
#
# The backports suite is made available first: its mirror is the one this
# machine already uses for Debian bookworm (the `URIs:` of the deb822 stanza
# in /etc/apt/sources.list.d/*.sources whose `Suites:` include `bookworm`, or
# the URI of a `deb ... bookworm ...` line of /etc/apt/sources.list), written
# with `Suites: bookworm-backports` to
# /etc/apt/sources.list.d/vmm-bookworm-backports.sources, then `apt-get
# update` (as root, or with `sudo -n`). No host name is written in this script.
#
# Which packages: what `apt-get install -t bookworm-backports
# --no-install-recommends qemu-system-x86` would install, as apt simulates it
# (`-s`, never run for real), so backports versions are preferred where the
# package exists there and installed libraries that satisfy the dependencies
# are used as they are. If the simulation fails, the direct library
# `Depends` are fetched as reference-qemu.sh does, until `ldd` finds
# everything.
#
# Prints one line on stdout: the path of an executable wrapper
# `<dir>/qemu-system-x86_64` that sets LD_LIBRARY_PATH and the firmware
# directory (`-L`) and `exec`s the real binary. Progress goes to stderr.
# Idempotent: a second run only prints the path.
#
# `reference-qemu10.sh --mirror [FILE...]` prints the mirror URI and the
# keyring (`-` if none) derived from FILE (default: this machine's apt
# sources) and exits: the derivation alone, no network, no root.
set -euo pipefail

suite=bookworm-backports
list=/etc/apt/sources.list.d/vmm-bookworm-backports.sources

log() { echo "reference-qemu10: $*" >&2; }

# mirror FILE...: "URI KEYRING" of the first enabled `deb` entry for suite
# `bookworm` (KEYRING `-` when it has none or an inline key). *.sources files
# are deb822 stanzas; other files one-line `deb [opts] URI SUITE COMP...`.
mirror() {
    local f
    for f in "$@"; do
        [ -r "$f" ] || continue
        case "$f" in
        *.sources)
            awk '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )bookworm( |$)/ &&
                        enabled != "no" && uri != "" && !done) {
                        print uri, (key == "" ? "-" : key); done = 1
                    }
                    types = suites = uri = key = enabled = ""; field = ""
                }
                /^#/ { next }
                /^[ \t]*$/ { flush(); next }
                /^[ \t]/ { next }  # continuation (e.g. an inline key)
                {
                    field = tolower($1); sub(/:.*/, "", field)
                    val = $0; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val)
                    if (field == "types") types = val
                    else if (field == "suites") suites = val
                    else if (field == "uris") { split(val, u, /[ \t]+/); uri = u[1] }
                    else if (field == "enabled") enabled = tolower(val)
                    else if (field == "signed-by" && val ~ /^\//) key = val
                }
                END { flush() }
            ' "$f"
            ;;
        *)
            awk '
                $1 != "deb" { next }
                {
                    line = $0; sub(/^[ \t]*deb[ \t]+/, "", line); key = "-"
                    if (line ~ /^\[/) {
                        opts = line; sub(/\].*/, "", opts); sub(/^[^]]*\][ \t]*/, "", line)
                        if (match(opts, /signed-by=[^ \t\]]+/))
                            key = substr(opts, RSTART + 10, RLENGTH - 10)
                    }
                    split(line, w, /[ \t]+/)
                    if (w[2] == "bookworm" && !done) { print w[1], key; done = 1 }
                }
            ' "$f"
            ;;
        esac
    done | head -n 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

if [ "${1:-}" = "--mirror" ]; then
    shift
    if [ $# = 0 ]; then set -- /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; fi
    out="$(mirror "$@")"
    [ -n "$out" ] || { log "no deb entry for bookworm in: $*"; exit 1; }
    echo "$out"
    exit 0
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${REFERENCE_QEMU10_DIR:-$repo/target/reference-qemu10}"
root="$dir/root"
debs="$dir/debs"
wrapper="$dir/qemu-system-x86_64"
real="$root/usr/bin/qemu-system-x86_64"
# shellcheck source=scripts/lib/unpacked-qemu.sh
. "$repo/scripts/lib/unpacked-qemu.sh"



if [ -x "$wrapper" ] && [ -x "$real" ] && [ -z "$(missing_libs)" ]; then
    echo "$wrapper"
    exit 0
fi

# The backports suite, from this machine's own bookworm mirror.
backports_known() { apt-cache policy 2>/dev/null | grep -q " $suite/"; }
if ! backports_known; then
    read -r uri key < <(mirror /etc/apt/sources.list.d/*.sources /etc/apt/sources.list) || true
    if [ -z "${uri:-}" ]; then
        log "no Debian bookworm entry in /etc/apt/sources.list{,.d/*.sources} to take the mirror from"
        exit 1
    fi
    if [ "$key" = - ] && [ -r /usr/share/keyrings/debian-archive-keyring.gpg ]; then
        key=/usr/share/keyrings/debian-archive-keyring.gpg
    fi
    text="# Written by the vmm repository's scripts/reference-qemu10.sh.
Types: deb
URIs: $uri
Suites: $suite
Components: main"
    [ "$key" = - ] || text="$text
Signed-By: $key"
    if [ "$(cat "$list" 2>/dev/null)" != "$text" ]; then
        log "writing $list (mirror $uri)"
        printf '%s\n' "$text" | as_root tee "$list" >/dev/null
    fi
    log "apt-get update"
    as_root apt-get update -q=2 >&2
fi
backports_known || { log "apt does not know $suite after apt-get update"; exit 1; }

mkdir -p "$debs" "$root"
fetch() { # fetch PKG[=VERSION|/SUITE]...: download (if not already) and unpack
    local spec name
    for spec in "$@"; do
        name="${spec%%[=/]*}"
        if ls "$debs/${name}_"*.deb >/dev/null 2>&1; then continue; fi
        log "downloading $spec"
        (cd "$debs" && apt-get download -q=2 "$spec") >&2
        dpkg-deb -x "$debs/${name}_"*.deb "$root"
    done
}

# What apt would install (NAME=VERSION), backports preferred.
plan="$(apt-get -s -q=2 --no-install-recommends -t "$suite" install qemu-system-x86 2>/dev/null |
    awk '$1 == "Inst" { v = ($3 ~ /^\[/) ? $4 : $3; sub(/^\(/, "", v); print $2 "=" v }' || true)"
if [ -n "$plan" ]; then
    # shellcheck disable=SC2086
    fetch $plan
else
    log "apt-get -s install -t $suite qemu-system-x86 failed; fetching library Depends instead"
    best() { # PKG/bookworm-backports if it exists there, else PKG
        if apt-cache madison "$1" 2>/dev/null | grep -q " $suite/"; then echo "$1/$suite"; else echo "$1"; fi
    }
    lib_depends() {
        apt-cache depends "$1" 2>/dev/null | awk '/^ *Depends: [^<]/ {print $2}' | grep -E '^lib' |
            while read -r dep; do installed "$dep" || echo "$dep"; done
    }
    fetch qemu-system-x86/$suite qemu-system-common/$suite qemu-system-data/$suite "$(best seabios)"
    pending="$(lib_depends qemu-system-x86)"
    for _round in 1 2 3; do
        [ -z "$pending" ] && break
        for p in $pending; do fetch "$(best "$p")"; done
        next=""
        for p in $pending; do next="$next $(lib_depends "$p")"; done
        pending="$(echo "$next" | tr ' ' '\n' | sort -u | while read -r p; do
            [ -n "$p" ] && ! ls "$debs/${p}_"*.deb >/dev/null 2>&1 && echo "$p"; done || true)"
    done
fi

[ -x "$real" ] || { log "no $real after unpacking"; exit 1; }
write_wrapper "scripts/reference-qemu10.sh (Debian bookworm-backports QEMU 10.0)"
