#!/usr/bin/env bash
# `make repro`: builds recipes/kubernetes twice, each from empty caches
# (nodeimg's, Go's build cache and module cache: every module downloaded
# and every package compiled again), and requires byte-identical binaries
# that equal the sha256s in nodeimg.lock. Prints each build's wall time:
# the cold-build figure in BENCHMARKS.md. Two cold builds take a while
# (about 6-10 min each on 2 cores); nothing here runs in `make test`.
set -euo pipefail
declare -a secs
cd "$(dirname "$0")/.."
NODEIMG=${NODEIMG:-target/release/nodeimg}
work=$(mktemp -d "${TMPDIR:-/tmp}/nodeimg-repro.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

for run in 1 2; do
  c="$work/caches-$run"
  mkdir -p "$c"
  s=$(date +%s)
  NODEIMG_CACHE="$c/nodeimg" GOCACHE="$c/go-build" GOMODCACHE="$c/go-mod" \
    "$NODEIMG" recipe build kubernetes --quiet --out "$work/out-$run" >"$work/sums-$run"
  secs[$run]=$(( $(date +%s) - s ))
  echo "repro: cold build $run: ${secs[$run]} s" >&2
done
if ! cmp -s "$work/sums-1" "$work/sums-2"; then
  echo "repro: FAILED: the two builds differ:" >&2
  diff "$work/sums-1" "$work/sums-2" >&2 || true
  exit 1
fi
for f in "$work"/out-1/*; do
  cmp "$f" "$work/out-2/$(basename "$f")"
done
cat "$work/sums-1"
# the rows `make bench` puts in BENCHMARKS.md
{
  echo "| cold build 1 (empty module, build and nodeimg caches), measured $(date -u +%F) | ${secs[1]} s |"
  echo "| cold build 2, same | ${secs[2]} s |"
  echo "| the two builds and the lock | byte-identical ($(wc -l <"$work/sums-1") programs) |"
} > benches/kubernetes-repro.md
echo "repro: ok: two cold builds are byte-identical and equal to nodeimg.lock ($(wc -l <"$work/sums-1") programs)" >&2
