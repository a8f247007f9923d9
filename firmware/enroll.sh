#!/usr/bin/env bash
# enroll.sh KEYDIR VARS.fd [TEMPLATE]
#
# Writes VARS.fd: OVMF's empty variable store (TEMPLATE, default Debian's
# /usr/share/OVMF/OVMF_VARS_4M.fd) with KEYDIR's pk.crt as PK, kek.crt in
# KEK and db.crt in db, and Secure Boot enabled. The same bytes as
# `nodeimg keys enroll-ovmf KEYDIR --out VARS.fd` (tests/secure_boot.rs
# checks it), for use without the nodeimg binary.
#
# virt-fw-vars comes from the venv firmware/setup-venv.sh creates
# (${NODEIMG_VENV:-~/.cache/nodeimg/venv}), else from PATH.
set -euo pipefail

# The owner GUID recorded with each certificate; the same constant as
# src/lab/secure_boot.rs OWNER_GUID.
OWNER_GUID=6597262f-fa40-4f8b-bdd4-75cce9be1c31

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 KEYDIR VARS.fd [TEMPLATE]" >&2
  exit 2
fi
keydir=$1
out=$2
template=${3:-/usr/share/OVMF/OVMF_VARS_4M.fd}

venv="${NODEIMG_VENV:-$HOME/.cache/nodeimg/venv}"
if [ -x "$venv/bin/virt-fw-vars" ]; then
  tool="$venv/bin/virt-fw-vars"
elif command -v virt-fw-vars >/dev/null; then
  tool=virt-fw-vars
else
  echo "enroll: virt-fw-vars is missing: run firmware/setup-venv.sh" >&2
  exit 1
fi
for f in "$template" "$keydir/pk.crt" "$keydir/kek.crt" "$keydir/db.crt"; do
  [ -f "$f" ] || { echo "enroll: $f is missing" >&2; exit 1; }
done

tmp="$(dirname "$out")/.$(basename "$out").tmp-$$"
trap 'rm -f "$tmp"' EXIT
"$tool" --loglevel warning --input "$template" \
  --set-pk "$OWNER_GUID" "$keydir/pk.crt" \
  --add-kek "$OWNER_GUID" "$keydir/kek.crt" \
  --add-db "$OWNER_GUID" "$keydir/db.crt" \
  --secure-boot --output "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
