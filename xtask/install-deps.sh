#!/usr/bin/env bash
# Installs the system packages Hestia needs on Debian/Ubuntu (called by `cargo xtask`
# when something is missing; .ci/run uses it with --sources-only for the backports suite).
# g++ compiles libFuzzer for `cargo xtask fuzz-host`.
# QEMU comes from bookworm-backports on Debian 12: QEMU 7.2's TCG mis-emulates
# `INT n` in long mode (wrong #GP error code), which breaks PV guests.
set -euo pipefail

pkgs=(qemu-system-x86 grub-pc-bin grub-efi-amd64-bin grub-common xorriso mtools ovmf xz-utils gzip e2fsprogs g++)
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
    echo "install-deps: run as root: apt-get update && apt-get install -y ${pkgs[*]}" >&2
    exit 1
  fi
fi

. /etc/os-release
backports=()
if [ "${VERSION_CODENAME:-}" = bookworm ]; then
  src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ] && ! grep -q 'bookworm-backports' "$src"; then
    # Extend the existing Debian source's Suites line; never name a mirror here.
    "${sudo[@]}" sed -i '0,/^Suites: bookworm\b/s//Suites: bookworm bookworm-backports/' "$src"
  elif [ ! -f "$src" ] && [ -f /etc/apt/sources.list ] && ! grep -q bookworm-backports /etc/apt/sources.list; then
    line=$(grep -m1 -E '^deb .* bookworm main' /etc/apt/sources.list || true)
    [ -n "$line" ] && echo "${line/ bookworm / bookworm-backports }" | "${sudo[@]}" tee -a /etc/apt/sources.list >/dev/null
  fi
  backports=(-t bookworm-backports)
fi

# `--sources-only`: stop here (.ci/run installs the packages itself).
[ "${1:-}" = --sources-only ] && exit 0

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
# QEMU 10 first (see above); installing 7.2 from the main suite would also
# clash with a newer qemu-utils that some images already carry.
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${backports[@]}" qemu-system-x86
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${pkgs[@]:1}"
qemu-system-x86_64 --version | head -1
