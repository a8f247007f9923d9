#!/usr/bin/env bash
# `make bench`: measures the builder on this machine and rewrites
# BENCHMARKS.md. Numbers are wall-clock; the machine's 2 cores are often
# shared, so each timing is the best of several runs.
set -euo pipefail
cd "$(dirname "$0")/.."

NODEIMG=target/release/nodeimg
AGENT=target/x86_64-unknown-linux-gnu/release/nodeagent
RUNS=${BENCH_RUNS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

best_of() { # best_of N cmd... -> prints the fastest wall time in seconds
  local n=$1; shift
  local best=""
  for _ in $(seq "$n"); do
    local s e t
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc)" = 1 ]; then best=$t; fi
  done
  printf '%.2f' "$best"
}

build() { # build PROJECT_DIR OUT [ARGS...]: the root, verity, kernel, initramfs only
  local proj=$1 out=$2; shift 2
  "$NODEIMG" build "$proj/images/worker.toml" --out "$out" --agent "$AGENT" --quiet --format none "$@"
}
ALL_FORMATS=uki,disk-raw,disk-qcow2,vhd,gce,vmdk,pxe
build_all() { build . "$1" --format "$ALL_FORMATS"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
boot_ms() { # boot_ms DIR ARGS... -> median boot_ms of RUNS boots
  for _ in $(seq "$RUNS"); do
    "$NODEIMG" lab boot "$@" --json --quiet 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["boot_ms"])'
  done | median
}

echo "bench: warming the package cache" >&2
build . "$work/warm" >/dev/null

echo "bench: warm build" >&2
warm=$(best_of "$RUNS" build . "$work/out")

echo "bench: rebuild after changing one file in one layer" >&2
cp -r images layers nodeimg.lock "$work/"
mkdir -p "$work/proj" && mv "$work/images" "$work/layers" "$work/nodeimg.lock" "$work/proj/"
build "$work/proj" "$work/p" >/dev/null
rebuild_once() {
  echo "# bench $(date +%s%N)" >> "$work/proj/layers/containerd/config.toml"
  build "$work/proj" "$work/p"
}
rebuild=$(best_of "$RUNS" rebuild_once)

echo "bench: warm build with every output format" >&2
all=$(best_of "$RUNS" build_all "$work/all")
formats_add=$(echo "$all - $warm" | bc)
formats_ratio=$(echo "scale=0; 100 * $formats_add / $warm" | bc)
sizes=""
for f in uki.efi disk.raw disk.qcow2 disk.vhd disk-gce.tar.gz disk.vmdk pxe/initrd.img; do
  bytes=$(stat -c %s "$work/all/$f")
  used=$(du -k "$work/all/$f" | cut -f1)
  sizes="$sizes| \`$f\` | $((bytes / 1024 / 1024)) MiB | $((used / 1024)) MiB |
"
done

echo "bench: sign and verify the worker build" >&2
NODEIMG_KEY_PASSWORD=bench "$NODEIMG" keys gen --signing-only --out "$work/keys" >/dev/null 2>&1
sign_s=$(NODEIMG_KEY_PASSWORD=bench best_of "$RUNS" "$NODEIMG" sign "$work/all" --key "$work/keys/signing.key")
verify_s=$(best_of "$RUNS" "$NODEIMG" verify "$work/all" --key "$work/keys/signing.pub")
artifact_files=$(python3 -c 'import json,sys; print("\n".join(a["path"] for a in json.load(open(sys.argv[1]))["artifacts"]))' "$work/all/manifest.json")
sha256sum_all() { (cd "$work/all" && echo "$artifact_files" | xargs sha256sum); }
sha_s=$(best_of "$RUNS" sha256sum_all)
artifact_mb=$(cd "$work/all" && echo "$artifact_files" | xargs stat -c %s | awk '{s+=$1} END {printf "%.0f", s/1e6}')
verify_ratio=$(echo "scale=2; $sha_s / $verify_s" | bc)

echo "bench: what the services add to the direct boot (containerd, sandbox import, confinement probe)" >&2
services_rows=$(for _ in $(seq "$RUNS"); do
  # one compact JSON line per boot (lab boot --json pretty-prints)
  "$NODEIMG" lab boot "$work/out" --json --quiet 2>/dev/null |
    python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))'
done | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin if l.strip()]
def med(xs):
    xs = sorted(xs); return xs[(len(xs) - 1) // 2]
st = [r["stage_ms"] for r in rows]
svc = [r["services"][0] for r in rows]
print("| services: start to report (containerd ready + runtime check) [< 3000 ms] | %d ms |" % med([s["report"] - s["services"] for s in st]))
print("| containerd: start to ready | %d ms |" % med([s["ready_ms"] for s in svc]))
print("| runtime check: sandbox import + confinement probe | %d ms |" % med([s["runtime"] - s["services"] - v["ready_ms"] for s, v in zip(st, svc)]))
def ms(xs):
    # a boot whose report lacks the figure (no runtime, an older agent)
    # says so instead of a believable 0
    xs = [x for x in xs if isinstance(x, int)]
    return "%d ms" % med(xs) if len(xs) == len(rows) else "n/a"
rt = [r.get("runtime") or {} for r in rows]
print("| of which: the sandbox image imported (one `ctr images import`, digest checked) | %s |" % ms([(x.get("images") or [{}])[0].get("import_ms") for x in rt]))
print("| of which: the confinement probe (one `ctr run --rm`: the shim and runc started, the probe run, all removed) | %s |" % ms([x.get("probe_ms") for x in rt]))
print("| nodeagent RSS while supervising [< 16 MiB] | %d KiB |" % med([r["agent_rss_kib"] for r in rows]))
')

echo "bench: a configured node (fw_cfg config, DHCP, containerd) and its node API" >&2
"$NODEIMG" cluster init --name bench --control-plane-endpoint 10.0.2.15:6443 --out "$work/cluster" >/dev/null
"$NODEIMG" cluster config "$work/cluster" --role worker --hostname bench-1 --address 10.0.2.15 \
  --out "$work/bench-1.toml" >/dev/null
api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$NODEIMG" lab boot "$work/out" --net user --config "$work/bench-1.toml" --api-port "$api_port" \
  --wait-shutdown 300 --json --quiet > "$work/node.json" 2>/dev/null &
lab_pid=$!
node() { "$NODEIMG" node --node "127.0.0.1:$api_port" --nodeconfig "$work/cluster/admin.nodeconfig" \
  --server-name 10.0.2.15 "$@"; }
for _ in $(seq 150); do node status --timeout 5 >/dev/null 2>&1 && break; sleep 2; done
status_s=$(best_of 5 node status)
node shutdown >/dev/null
wait "$lab_pid"
node_rows=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1])); st = r["stage_ms"]
print("| boot to ready (QEMU start to report), config from fw_cfg, DHCP, containerd, runtime check | %d ms |" % r["boot_ms"])
print("| stage 2 start to the network up (config read and checked, DHCP lease) | %d ms |" % (st["network"] - st["stage2_start"]))
print("| services: start to report (containerd ready + runtime check) [< 3000 ms] | %d ms |" % (st["report"] - st["services"]))
print("| nodeagent RSS while supervising, with the node API up [< 16 MiB] | %d KiB |" % r["agent_rss_kib"])
' "$work/node.json")

echo "bench: UEFI (OVMF) and PXE (iPXE) boots beside the direct boot" >&2
direct_ms=$(boot_ms "$work/all")
uefi_ms=$(boot_ms "$work/all" --firmware uefi --disk-size 2G --timeout 300)
pxe_ms=$(boot_ms "$work/all" --pxe --timeout 300)

rootfs_size=$(stat -c %s "$work/out/rootfs.squashfs")
verity_size=$(stat -c %s "$work/out/rootfs.verity")


echo "bench: Kubernetes programs (recipes/kubernetes) and the images that carry them" >&2
# warm: the binaries in nodeimg's cache (an index hit, every binary hash-checked)
recipe_warm_s=$(best_of "$RUNS" "$NODEIMG" recipe build kubernetes --quiet)
# Go's build cache warm, nodeimg's empty: every program linked again
recipe_link_s=$(best_of 1 env NODEIMG_CACHE="$work/empty-cache" "$NODEIMG" recipe build kubernetes --quiet)
k8s_rows=""
for pair in worker:k8s-worker control-plane:k8s-control-plane; do
  base=${pair%%:*}; k8s=${pair#*:}
  "$NODEIMG" build "images/$base.toml" --out "$work/$base" --quiet --format none >/dev/null
  "$NODEIMG" build "images/$k8s.toml" --out "$work/$k8s" --quiet --format none >/dev/null
  b=$(stat -c %s "$work/$base/rootfs.squashfs"); k=$(stat -c %s "$work/$k8s/rootfs.squashfs")
  k8s_rows+="| $k8s root image (vs $base) | $((k / 1048576)) MiB (+$(((k - b) / 1048576)) MiB) |"$'\n'
done
k8s_build_s=$(best_of "$RUNS" "$NODEIMG" build images/k8s-control-plane.toml --out "$work/k8s-cp-timed" --quiet --format none)
repro_rows=$(cat benches/kubernetes-repro.md 2>/dev/null || echo "| cold builds | not measured: run \`make repro\` |")

echo "bench: Kubernetes in the lab (tests/k8s.rs: a control-plane node and a worker, TCG)" >&2
k8s_out=$(cargo test --locked --quiet --test k8s -- --nocapture 2>&1 || true)
k8s_ready_s=$(sed -n 's/^k8s: lab up to 2 Ready nodes in \([0-9.]*\) s$/\1/p' <<<"$k8s_out")
k8s_rss_rows=$(sed -n 's/^k8s: rss \([^ ]*\) \([^ ]*\) \([0-9]*\) MiB$/| RSS on \1: \2 | \3 MiB |/p' <<<"$k8s_out")
k8s_cpu_rows=$(sed -n 's/^k8s: cpu \([^ ]*\) \([^ ]*\) \([0-9]*\) s$/| CPU time on \1 by the end of the test: \2 | \3 s |/p' <<<"$k8s_out")
# the security stack (tests/support/stack.rs), from the API's own timestamps
k8s_stack_rows=$(sed -n \
  -e 's/^k8s: stack applied \([0-9-]*\) s after the first control-plane node was Ready$/| security stack applied, after the first control-plane node Ready | \1 s |/p' \
  -e 's/^k8s: every add-on Ready \([0-9-]*\) s after the first control-plane node was$/| every add-on (CoreDNS, kube-network-policies) Ready, after the first control-plane node Ready | \1 s |/p' \
  -e 's/^k8s: memory \([^ ]*\) \(coredns-[^ ]*\|kube-network-policies-[^ ]*\) \([0-9]*\) MiB$/| add-on memory (working set) on \1: \2 | \3 MiB |/p' \
  -e 's/^k8s: kube-bench on \([^:]*\): \([0-9]* PASS, .*\)$/| kube-bench cis-1.12 on \1 (FAILs: the documented exceptions) | \2 |/p' \
  <<<"$k8s_out")

echo "bench: the HA control plane (tests/ha.rs: etcd's static bootstrap, then the self-join lab)" >&2
# the two labs run one after the other (the test binary holds one lock)
ha_out=$(cargo test --locked --quiet --test ha -- --nocapture 2>&1 || true)
ha_rows=$(python3 -c '
import re, sys
out = sys.stdin.read()
def one(pattern):
    m = re.search(pattern, out, re.M)
    return m.group(1) if m else None
static = one(r"^ha: static lab up to three voters in ([0-9.]+) s$")
joined = one(r"^ha: lab up to three voters in ([0-9.]+) s$")
rows = [
    ("`lab up` to three voters, static bootstrap (the baseline: every member started with the whole list)", static and static + " s"),
    ("`lab up` to three voters, bootstrap once + self-join (learner, then voter)", joined and joined + " s"),
    ("self-join against the baseline [< 1.5x]", static and joined and "%.2fx" % (float(joined) / float(static))),
    ("longest write gap when the leader is killed (one etcdctl put after another through the survivors)", one(r"^ha: leader .* longest write gap ([0-9]+ ms)")),
    ("a blank machine replacing cp-2: a voter after its start", one(r"^ha: blank cp-2 a voter ([0-9.]+ s) after its start$")),
    ("restore from the object store to three voters", one(r"^ha: restored and three voters again ([0-9.]+ s) after the restore call$")),
]
for what, got in rows:
    print("| %s | %s |" % (what, got or "failed"))
for f, node, prog, mib in re.findall(r"^ha: rss (\S+) (\S+) (\S+) ([0-9]+) MiB$", out, re.M):
    print("| RSS on %s (%s): %s | %s MiB |" % (node, f, prog, mib))
' <<<"$ha_out")

echo "bench: root image + verity vs mksquashfs + veritysetup on the worker tree" >&2
unsquashfs -q -n -d "$work/tree" "$work/out/rootfs.squashfs" >/dev/null
fsrow=$(cargo bench --quiet --bench fs_reference -- "$work/tree" 2>/dev/null | tail -1)

echo "bench: boot to the report under QEMU TCG, beside a kernel-only baseline" >&2
bootrows=$(cargo bench --quiet --bench boot_baseline -- "$work/out" "$RUNS" 2>/dev/null | grep '^|')
agent_size=$(stat -c %s "$AGENT")

cat > BENCHMARKS.md <<MD
# Benchmarks

Written by \`make bench\` (scripts/bench.sh) on $(nproc) cores, $(date -u +%Y-%m-%d).
Best of $RUNS runs, wall-clock, warm package cache. Targets from the issues
in brackets.

## Builder (worker image)

| what | result |
| --- | --- |
| warm build, total [≤ 15 s] | ${warm} s |
| rebuild after changing one file in one layer [≤ 5 s] | ${rebuild} s |
| root image (squashfs, zstd level 6) | $((rootfs_size / 1024 / 1024)) MiB (${rootfs_size} bytes) |
| verity hash tree | $((verity_size / 1024)) KiB |

## Outputs (worker image, every format)

\`--format none\` (root, verity, kernel, initramfs) against
\`--format $ALL_FORMATS\`, same run [formats add ≤ 50 %].

| what | result |
| --- | --- |
| warm build, every format | ${all} s |
| what the formats add | ${formats_add} s (${formats_ratio} % of the warm build) |

| output | size | blocks on disk (sparse) |
| --- | --- | --- |
${sizes}
## Signing and verification (worker build, every format: ${artifact_mb} MB of artifacts)

| what | result |
| --- | --- |
| \`nodeimg sign\` | ${sign_s} s |
| \`nodeimg verify\` (signature + every artifact) | ${verify_s} s |
| \`sha256sum\` over the same artifacts | ${sha_s} s |
| verify speed relative to sha256sum [≥ 0.8] | ${verify_ratio} |

## Boot paths (QEMU TCG, q35, 1 vCPU; median of $RUNS, QEMU start to report)

Each is a first boot through \`nodeimg lab boot\`: the direct and UEFI boots
format their state (a 1 GiB ext4, about 4 s of mke2fs under TCG); the PXE
node has no disk and keeps \`/var\` on tmpfs.

| path | to ready |
| --- | --- |
| direct (PVH vmlinux, root, verity and state as virtio disks) | $((direct_ms)) ms |
| UEFI: OVMF → systemd-boot → UKI → GPT disk, state partition made | $((uefi_ms)) ms |
| PXE: iPXE ROM → boot.ipxe over HTTP → kernel + initrd carrying the root | $((pxe_ms)) ms |

## Services (direct boot, median of $RUNS; from the node's own report)

Where the time goes: containerd (a Go daemon) to its socket, one \`ctr\`
import, and one \`ctr run\` that makes containerd start its shim, which
runs runc three times; every one a Go program of tens of MiB started
under emulation. The agent's own work between them takes milliseconds.

| what | result |
| --- | --- |
${services_rows}

## A configured node (direct boot on QEMU's user network; one boot)

| what | result |
| --- | --- |
${node_rows}
| \`nodeimg node status\` round trip (TLS 1.3 handshake with client certificates, best of 5) | ${status_s} s |

## Kubernetes programs (recipes/kubernetes, v1.34.4, go1.26.8)

Six programs (kube-apiserver, kube-controller-manager, kube-scheduler,
kube-proxy, kubelet, kubectl). The cold rows come from \`make repro\`
(two builds from empty caches, byte-identical and equal to the lock).

| what | result |
| --- | --- |
${repro_rows}
| nodeimg's cache warm (index hit, binaries hash-checked) | ${recipe_warm_s} s |
| Go's build cache warm, nodeimg's empty (link only) | ${recipe_link_s} s |
| warm build of k8s-control-plane (\`--format none\`) | ${k8s_build_s} s |
| qemu/k8s-small.toml: \`lab up\` to two Ready nodes (TCG, 1 + 1) | ${k8s_ready_s:-failed} s |
${k8s_rss_rows}
${k8s_cpu_rows}
${k8s_stack_rows}
${k8s_rows}
## The HA control plane (tests/ha.rs: 3 control-plane nodes + 1 worker, TCG)

The same four VMs and images brought up twice in one run, one lab after
the other: with etcd's static bootstrap (\`[etcd] formation = "static"\`), and the way
clusters form here (one bootstrap call, the others join as learners and
are promoted); the rest of the rows come from the second lab.

| what | result |
| --- | --- |
${ha_rows}

## Root image + verity against the reference tools, same tree

nodeimg writes squashfs + dm-verity itself; the reference is
\`mksquashfs -comp zstd -Xcompression-level L -b 131072 -all-root\` then
\`veritysetup format\`. Ratio > 1 means nodeimg is faster [target ≥ 1].

| zstd level | tree | nodeimg squashfs | nodeimg verity | mksquashfs | veritysetup | ratio |
| --- | --- | --- | --- | --- | --- | --- |
${fsrow}

## Boot (QEMU TCG, q35, 1 vCPU, PVH vmlinux, formatted state disk)

The baseline is the same kernel and command line with an initramfs whose
\`/init\` is a 144-byte ELF that only powers off (benches/boot_baseline.rs),
measured in the same run.

| what | result |
| --- | --- |
${bootrows}
| nodeagent binary (static, stripped) | $((agent_size / 1024)) KiB |
MD
# sections measured by hand (slow labs, cold builds): kept as they are
{ echo; cat benches/by-hand.md; } >> BENCHMARKS.md
cat BENCHMARKS.md
