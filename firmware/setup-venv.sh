#!/usr/bin/env bash
# Creates the Python venv that holds virt-fw-vars (PyPI's virt-firmware),
# the tool `nodeimg keys enroll-ovmf` runs to enroll our Secure Boot PK,
# KEK and db into an OVMF variable store. Idempotent: an existing venv with
# the pinned version is left alone.
#
#   NODEIMG_VENV   where the venv goes (default: ~/.cache/nodeimg/venv)
#
# pip uses whatever index the machine is configured for (pip.conf,
# PIP_INDEX_URL); no index address is written here.
set -euo pipefail

VIRT_FIRMWARE_VERSION=26.10
venv="${NODEIMG_VENV:-$HOME/.cache/nodeimg/venv}"

# pip's output is captured first: `pip show | grep -q` under pipefail fails
# whenever grep exits before pip has written everything (SIGPIPE).
shown=$("$venv/bin/python" -m pip show virt-firmware 2>/dev/null || true)
if [ -x "$venv/bin/virt-fw-vars" ] && grep -qx "Version: $VIRT_FIRMWARE_VERSION" <<<"$shown"; then
  exit 0
fi

if ! command -v python3 >/dev/null; then
  echo "setup-venv: python3 is missing (apt-get install python3 python3-venv)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv" || {
    echo "setup-venv: creating $venv failed (apt-get install python3-venv)" >&2
    exit 1
  }
fi
echo "setup-venv: installing virt-firmware==$VIRT_FIRMWARE_VERSION into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "virt-firmware==$VIRT_FIRMWARE_VERSION"
"$venv/bin/virt-fw-vars" --help >/dev/null
