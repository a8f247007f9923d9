# nodeimg: the README's commands. `make demo` builds the worker image and
# boots it in QEMU; `make test` runs every test, QEMU included.

CARGO     ?= cargo
OUT       ?= out
IMAGE     ?= worker
TARGET    := x86_64-unknown-linux-gnu
NODEIMG   := target/release/nodeimg

.PHONY: setup demo build images agent nodeimg test test-k8s-ha lint lock bench repro clean

setup:
	./scripts/setup.sh

nodeimg:
	$(CARGO) build --release --locked -p nodeimg

# The agent is PID 1 and pause runs in an image with no libraries: both are
# static, pure-Rust binaries (glibc with crt-static; no musl target needed).
# nodeimg finds them in this target directory by itself.
agent:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --locked -p nodeagent -p nodeimg-pause --target $(TARGET)

build: setup nodeimg agent
	$(NODEIMG) build images/$(IMAGE).toml --out $(OUT)/$(IMAGE)

images: setup nodeimg agent
	for i in images/*.toml; do n=$$(basename $$i .toml); $(NODEIMG) build $$i --out $(OUT)/$$n || exit 1; done

demo: build
	$(NODEIMG) lab boot $(OUT)/$(IMAGE)

lock: nodeimg
	$(NODEIMG) lock

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

test: setup agent
	$(CARGO) test --workspace --locked --no-fail-fast

# The 3 + 1 Kubernetes lab with a leader kill (tests/k8s_ha.rs): ignored by
# `make test` because 2 emulated cores cannot carry three control planes.
test-k8s-ha: setup agent
	$(CARGO) test --locked --test k8s_ha -- --ignored --nocapture

bench: setup nodeimg agent
	./scripts/bench.sh

# Two cold builds of recipes/kubernetes from empty caches: byte-identical
# and equal to the lock (slow; not part of `make test`).
repro: setup nodeimg
	./scripts/repro-kubernetes.sh

clean:
	rm -rf $(OUT)
