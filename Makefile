# The two commands a newcomer needs: `make demo` and `make test`.
# Both run `make setup` first, which installs what is missing (as root).

SHELL := /bin/bash
# Build output lives outside the clone, shared by every checkout on this machine.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/ferry/target
CARGO ?= cargo

.PHONY: setup build demo test lint bench

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --locked -p ferry

# Brings the local environment up and runs until Ctrl-C.
demo: build
	"$(CARGO_TARGET_DIR)/debug/ferry" dev up --demo

test: setup
	$(CARGO) test --workspace --locked

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Benchmarks against the local environment; writes docs/benchmarks.md.
bench: setup
	$(CARGO) build --locked --release -p ferry -p ferry-bench
	"$(CARGO_TARGET_DIR)/release/ferry-bench" --out docs/benchmarks.md
