#!/usr/bin/env bash
# Installs what nodeimg's builds and tests need on a fresh Debian machine
# (the reference tools that judge our outputs, QEMU, firmware, the Python
# judges) and then proves that every command it promises exists and runs.
# Idempotent; run as root (or with sudo available).
#
# Every package goes into ONE apt transaction, including the ones already
# installed: apt then has to keep them all consistent. Installing only the
# missing ones let apt remove an installed package as a conflict (a
# bookworm-backports qemu-utils removed by bookworm's qemu-system-x86),
# leaving the machine without qemu-img. When that one transaction cannot be
# solved because a package of ours came from another release (a backport),
# the packages of ours built from the same source as that one (its family:
# qemu-system-x86 beside qemu-utils) are first installed from that release
# in a transaction of their own (-t applies to nothing else), then the whole
# set again: apt never downgrades what is installed, so it keeps them.
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
# Go builds the Kubernetes programs (recipes/): Debian's, unless the
# machine has a go already (its version matters less: see below).
command -v go >/dev/null || packages+=(golang-go)

# command, then the arguments that make it print something and exit 0
checks=(
  "qemu-img --version"
  "qemu-system-x86_64 --version"
  "veritysetup --version"
  "mksquashfs -version"
  "unsquashfs -help"
  "mkfs.erofs --help"
  "fsck.erofs --help"
  "sgdisk --version"
  "sfdisk --version"
  "fsck.vfat --help"
  "mcopy --version"
  "mdir --version"
  "objdump --version"
  "objcopy --version"
  "sbsign --help"
  "sbverify --help"
  "osslsigncode --version"
  "zstd --version"
  "xz --version"
  "cpio --version"
  "curl --version"
  "python3 --version"
)
# files that packages promise and the lab and tests open directly
files=(
  /usr/share/OVMF/OVMF_CODE_4M.fd
  /usr/share/OVMF/OVMF_VARS_4M.fd
  /usr/share/OVMF/OVMF_CODE_4M.secboot.fd
  /usr/lib/ipxe/qemu/pxe-virtio.rom
  /usr/lib/systemd/boot/efi/systemd-bootx64.efi
  /usr/lib/systemd/boot/efi/linuxx64.efi.stub
  /usr/share/keyrings/debian-archive-keyring.gpg
)

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

installed_ok() {
  local status
  status=$(dpkg-query -W -f='${Status}\n' "$@" 2>/dev/null || true)
  [ "$(grep -cx 'install ok installed' <<<"$status")" = "$#" ]
}

# Packages of ours installed from a backports release: "release package" lines.
foreign_installs() {
  local p inst
  for p in "${packages[@]}"; do
    inst=$(dpkg-query -W -f='${Status} ${Version}' "$p" 2>/dev/null) || continue
    case "$inst" in "install ok installed "*) inst=${inst#install ok installed } ;; *) continue ;; esac
    apt-cache madison "$p" 2>/dev/null | awk -F' [|] ' -v v="$inst" -v p="$p" \
      '$2 == v { split($3, a, " "); sub("/.*", "", a[2]); if (a[2] ~ /-backports$/) print a[2], p }'
  done | sort -u
}

# The source package a binary package is built from (Source: may be absent
# or carry a version in parentheses).
source_of() {
  apt-cache show --no-all-versions "$1" 2>/dev/null |
    awk -v p="$1" '/^Source:/ { print $2; found = 1; exit } END { if (!found) print p }'
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@" "${packages[@]}"
}

if ! installed_ok "${packages[@]}" || [ "${NODEIMG_SETUP_FORCE:-}" = 1 ]; then
  echo "setup: installing ${packages[*]} in one transaction" >&2
  $sudo apt-get update -qq
  log=$(mktemp)
  if ! apt_install >"$log" 2>&1; then
    foreign=$(foreign_installs)
    if [ -z "$foreign" ]; then
      cat "$log" >&2
      echo "setup: FAILED: apt could not install ${packages[*]} (its output is above)" >&2
      exit 1
    fi
    while read -r rel pkg; do
      src=$(source_of "$pkg")
      family=()
      for q in "${packages[@]}"; do
        [ "$(source_of "$q")" = "$src" ] && family+=("$q")
      done
      echo "setup: $pkg is installed from $rel: taking its family (${family[*]}) from $rel too" >&2
      if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
           -t "$rel" "${family[@]}" >"$log" 2>&1; then
        cat "$log" >&2
        echo "setup: FAILED: installing ${family[*]} from $rel (its output is above)" >&2
        exit 1
      fi
    done <<<"$foreign"
    if ! apt_install >"$log" 2>&1; then
      cat "$log" >&2
      echo "setup: FAILED: apt could not install ${packages[*]} (its output is above)" >&2
      exit 1
    fi
  fi
  rm -f "$log"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: FAILED: cargo is missing; install Rust (rustup or Debian's cargo) first" >&2
  exit 1
fi

# Python judges in one venv (~/.cache/nodeimg/venv, or $NODEIMG_VENV):
# virt-fw-vars enrolls Secure Boot keys into OVMF variables; pyspdxtools
# validates our SPDX SBOMs. pip uses the machine's configured index.
"$(dirname "$0")/../firmware/setup-venv.sh"
venv="${NODEIMG_VENV:-$HOME/.cache/nodeimg/venv}"
# pip_pin NAME VERSION [VENV]: NAME at exactly VERSION in VENV (the venv)
pip_pin() {
  local shown into="${3:-$venv}"
  shown=$("$into/bin/python" -m pip show "$1" 2>/dev/null || true)
  if ! grep -qx "Version: $2" <<<"$shown"; then
    echo "setup: installing $1 $2 into $into" >&2
    "$into/bin/python" -m pip install -q "$1==$2"
  fi
}
pip_pin spdx-tools 0.8.5
# ntplib: an NTP client of its own (not our packet code) that judges the
# lab's time server (tests/lab_network.rs)
pip_pin ntplib 0.4.0
# kubernetes-validate: the OpenAPI schemas of the pinned Kubernetes minor,
# strict, judge DIR/manifests (tests/cluster_init.rs)
pip_pin kubernetes-validate 1.34.1
# checkov judges the stack's workloads (tests/cluster_init.rs), offline.
# A venv of its own: it pins packaging 23, older than the judges above take.
checkov_venv="${NODEIMG_CHECKOV_VENV:-$HOME/.cache/nodeimg/checkov-venv}"
[ -x "$checkov_venv/bin/python" ] || python3 -m venv "$checkov_venv"
pip_pin checkov 3.3.30 "$checkov_venv"
# The recipe's pinned Go toolchain must answer. A go of 1.21 or later
# fetches it by itself (GOTOOLCHAIN) through the module proxy; an older one
# (bookworm's 1.19) cannot, but can download it as the module
# golang.org/toolchain (checked against Go's checksum database), which
# then serves as the go on PATH.
recipe_go=$(sed -n 's/^go = "\(go[0-9.]*\)"$/\1/p' "$(dirname "$0")/../recipes/kubernetes/recipe.toml")
if [ "$(GOTOOLCHAIN="$recipe_go" go env GOVERSION 2>/dev/null)" != "$recipe_go" ]; then
  tc="${XDG_CACHE_HOME:-$HOME/.cache}/nodeimg/go-toolchain"
  mod="golang.org/toolchain@v0.0.1-$recipe_go.linux-amd64"
  echo "setup: $(go version) cannot run $recipe_go; fetching it as the module $mod" >&2
  GOMODCACHE="$tc" GOFLAGS=-modcacherw GOTOOLCHAIN=local go mod download "$mod"
  dir="$tc/$mod"
  # module zips keep no modes: the toolchain's programs need theirs back
  chmod +x "$dir"/bin/* "$dir"/pkg/tool/linux_amd64/*
  $sudo ln -sfn "$dir/bin/go" /usr/local/bin/go
  hash -r
fi
if [ "$(GOTOOLCHAIN="$recipe_go" go env GOVERSION 2>&1)" != "$recipe_go" ]; then
  echo "setup: FAILED: GOTOOLCHAIN=$recipe_go go env GOVERSION does not say $recipe_go:" >&2
  GOTOOLCHAIN="$recipe_go" go env GOVERSION >&2 || true
  exit 1
fi
checks+=("go version")
checks+=("$venv/bin/virt-fw-vars --help" "$venv/bin/pyspdxtools --help" "cargo --version")
checks+=("$venv/bin/python -m ntplib" "$venv/bin/kubernetes-validate --version")
checks+=("$checkov_venv/bin/checkov --version")

# Prove what was promised: every command runs, every file is there. A
# package that apt says is installed but whose command is gone (removed as
# a conflict, diverted, a broken backport) fails here, not in the middle of
# a build.
failed=()
for c in "${checks[@]}"; do
  # shellcheck disable=SC2086
  if ! out=$($c 2>&1 </dev/null); then
    failed+=("$c: $(printf '%s' "$out" | head -n 2 | tr '\n' ' ')")
  fi
done
for f in "${files[@]}"; do
  [ -s "$f" ] || failed+=("$f: missing or empty")
done
if ((${#failed[@]})); then
  echo "setup: FAILED: these promised commands or files do not work after installing:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "setup: ok (${#checks[@]} commands and ${#files[@]} files checked)" >&2
