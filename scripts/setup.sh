#!/usr/bin/env bash
# Installs what nodeimg's builds and tests need on a fresh Debian machine:
# the reference tools that judge our outputs, QEMU, and the Rust toolchain's
# static target. Idempotent; run as root (or with sudo available).
set -euo pipefail

packages=(
  ca-certificates curl xz-utils zstd cpio binutils bc
  cryptsetup-bin squashfs-tools erofs-utils
  qemu-system-x86 qemu-utils
  debian-archive-keyring
  gdisk fdisk dosfstools mtools
  ovmf ipxe-qemu systemd-boot-efi sbsigntool osslsigncode
  python3 python3-venv
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# qemu-utils may be a newer backport here; any installed version will do.
if command -v qemu-img >/dev/null; then
  missing=("${missing[@]/qemu-utils}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))

if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install Rust (rustup or Debian's cargo) first" >&2
  exit 1
fi

# Python judges in one venv (~/.cache/nodeimg/venv, or $NODEIMG_VENV):
# virt-fw-vars enrolls Secure Boot keys into OVMF variables; pyspdxtools
# validates our SPDX SBOMs. pip uses the machine's configured index.
"$(dirname "$0")/../firmware/setup-venv.sh"
venv="${NODEIMG_VENV:-$HOME/.cache/nodeimg/venv}"
SPDX_TOOLS_VERSION=0.8.5
if ! "$venv/bin/python" -m pip show spdx-tools 2>/dev/null | grep -qx "Version: $SPDX_TOOLS_VERSION"; then
  echo "setup: installing spdx-tools $SPDX_TOOLS_VERSION into $venv" >&2
  "$venv/bin/python" -m pip install -q "spdx-tools==$SPDX_TOOLS_VERSION"
fi
