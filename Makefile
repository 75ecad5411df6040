# The two commands a newcomer needs: `make demo` and `make test`.
# Both run `make setup` first, which installs what is missing (as root).

SHELL := /bin/bash
# Build output lives outside the clone, shared by every checkout on this machine.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/ferry/target
CARGO ?= cargo

.PHONY: setup build demo test lint bench chaos manifests image

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --locked -p ferry

# Brings the local environment up and runs until Ctrl-C.
demo: build
	"$(CARGO_TARGET_DIR)/debug/ferry" dev up --demo

test: setup
	$(CARGO) test --workspace --locked

# The long runs of the fault tests: the parser property tests with 20,000 inputs each (256 in
# `make test`), and the controller killed 100 times mid-sync (20 in `make test`).
chaos: setup
	FERRY_FUZZ_CASES=20000 $(CARGO) test --locked -p ferry-fuzz --release
	FERRY_CHAOS_KILLS=100 $(CARGO) test --locked -p ferry-controller --test failures killed_again

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Benchmarks against the local environment; writes docs/benchmarks.md. 1,000 apps x 10 objects
# by default; `make bench BENCH_APPS=200` for a quick run.
BENCH_APPS ?= 1000
bench: setup
	$(CARGO) build --locked --release -p ferry -p ferry-bench
	"$(CARGO_TARGET_DIR)/release/ferry-bench" --apps $(BENCH_APPS) --out docs/benchmarks.md

# Regenerates deploy/install.yaml and the chart's CRDs from `ferry install` (a test fails when
# they are stale).
manifests: build
	"$(CARGO_TARGET_DIR)/debug/ferry" install > deploy/install.yaml
	"$(CARGO_TARGET_DIR)/debug/ferry" install --crds-only > deploy/chart/crds/crds.yaml

# Ferry's container image, built offline (mmdebstrap + umoci; see deploy/image/README.md), then
# its root filesystem's smoke test. REGISTRY=host:port (with REGISTRY_USER, REGISTRY_PASSWORD,
# INSECURE=1) also pushes it.
image: setup
	$(CARGO) build --locked --release -p ferry
	FERRY_BIN="$(CARGO_TARGET_DIR)/release/ferry" bash deploy/image/build.sh
	bash deploy/image/smoke.sh "$${OUT:-$(HOME)/.cache/ferry/image}/rootfs"
