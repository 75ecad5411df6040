# The two commands a newcomer needs: `make demo` and `make test`.
# Both run `make setup` first, which installs what is missing (as root).

SHELL := /bin/bash
# Build output lives outside the clone, shared by every checkout on this machine.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/ferry/target
CARGO ?= cargo

.PHONY: setup build demo test lint

setup:
	bash scripts/setup.sh

build: setup
	$(CARGO) build --locked -p ferry

# Brings the local environment up and runs until Ctrl-C.
demo: build
	"$(CARGO_TARGET_DIR)/debug/ferry" dev up

test: setup
	$(CARGO) test --workspace --locked

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
