# nodeimg: the README's commands. `make demo` builds the worker image and
# boots it in QEMU; `make test` runs every test, QEMU included.

CARGO     ?= cargo
OUT       ?= out
IMAGE     ?= worker
TARGET    := x86_64-unknown-linux-gnu
AGENT     := target/$(TARGET)/release/nodeagent
NODEIMG   := target/release/nodeimg

.PHONY: setup demo build images agent nodeimg test lint lock bench clean

setup:
	./scripts/setup.sh

nodeimg:
	$(CARGO) build --release --locked -p nodeimg

# The agent is PID 1: a static, pure-Rust binary (glibc with crt-static;
# no musl target needed).
agent:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --locked -p nodeagent --target $(TARGET)

build: setup nodeimg agent
	$(NODEIMG) build images/$(IMAGE).toml --out $(OUT)/$(IMAGE) --agent $(AGENT)

images: setup nodeimg agent
	for i in images/*.toml; do n=$$(basename $$i .toml); $(NODEIMG) build $$i --out $(OUT)/$$n --agent $(AGENT) || exit 1; done

demo: build
	$(NODEIMG) lab boot $(OUT)/$(IMAGE)

lock: nodeimg
	$(NODEIMG) lock

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

test: setup agent
	$(CARGO) test --workspace --locked

bench: setup nodeimg agent
	./scripts/bench.sh

clean:
	rm -rf $(OUT)
