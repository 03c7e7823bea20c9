#!/usr/bin/env bash
# Fetch the reference VMM (Debian bookworm's QEMU 7.2) without installing it.
#
# `qemu-system-x86` 7.2 conflicts with this machine's backported `qemu-utils`,
# so it is never `apt-get install`ed: the .debs are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` into a scratch folder
# (default: <repo>/target/reference-qemu, override with REFERENCE_QEMU_DIR).
# Shared libraries the machine lacks are fetched the same way (direct `Depends`
# of qemu-system-x86, then theirs, until `ldd` finds everything).
#
# Prints one line on stdout: the path of an executable wrapper
# `<dir>/qemu-system-x86_64` that sets LD_LIBRARY_PATH and the firmware
# directory (`-L`) and `exec`s the real binary, so it can be used exactly like
# an installed `qemu-system-x86_64`. Progress goes to stderr. Idempotent: a
# second run only prints the path.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${REFERENCE_QEMU_DIR:-$repo/target/reference-qemu}"
root="$dir/root"
debs="$dir/debs"
wrapper="$dir/qemu-system-x86_64"
real="$root/usr/bin/qemu-system-x86_64"
# shellcheck source=scripts/lib/unpacked-qemu.sh
. "$repo/scripts/lib/unpacked-qemu.sh"

log() { echo "reference-qemu: $*" >&2; }



fetch() { # fetch PKG...: download (if not already) and unpack
    mkdir -p "$debs" "$root"
    for pkg in "$@"; do
        if ls "$debs/${pkg}_"*.deb >/dev/null 2>&1; then continue; fi
        log "downloading $pkg"
        if ! (cd "$debs" && { apt-get download -q=2 "$pkg/bookworm" 2>/dev/null || apt-get download -q=2 "$pkg"; }) >&2; then
            # Package lists may be missing or stale (fresh CI image): refresh once.
            if [ -z "${refreshed:-}" ]; then
                refreshed=1
                log "apt-get download failed; running apt-get update"
                if [ "$(id -u)" = 0 ]; then apt-get update -q=2 >&2; else sudo -n apt-get update -q=2 >&2; fi
            fi
            (cd "$debs" && { apt-get download -q=2 "$pkg/bookworm" 2>/dev/null || apt-get download -q=2 "$pkg"; }) >&2
        fi
        dpkg-deb -x "$debs/${pkg}_"*.deb "$root"
    done
}


lib_depends() { # the library packages PKG depends on that the machine lacks
    apt-cache depends "$1" 2>/dev/null |
        awk '/^ *Depends: [^<]/ {print $2}' |
        grep -E '^lib' |
        while read -r dep; do installed "$dep" || echo "$dep"; done
}

# SeaBIOS: the q35 machine types (`cargo xtask oracle`) need bios-256k.bin.
if [ -x "$wrapper" ] && [ -x "$real" ] && [ -z "$(missing_libs)" ] \
    && [ -e "$root/usr/share/seabios/bios-256k.bin" ]; then
    echo "$wrapper"
    exit 0
fi

fetch qemu-system-x86 qemu-system-data seabios
# Libraries: the direct ones first, then one more level, then check with ldd.
pending="$(lib_depends qemu-system-x86)"
for _round in 1 2 3; do
    [ -z "$pending" ] && break
    # shellcheck disable=SC2086
    fetch $pending
    next=""
    for p in $pending; do next="$next $(lib_depends "$p")"; done
    pending="$(echo "$next" | tr ' ' '\n' | sort -u | while read -r p; do
        [ -n "$p" ] && ! ls "$debs/${p}_"*.deb >/dev/null 2>&1 && echo "$p"; done || true)"
done

write_wrapper "scripts/reference-qemu.sh (Debian bookworm QEMU 7.2)"
