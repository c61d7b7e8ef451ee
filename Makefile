# DiffKeeper — the commands a newcomer needs. Every target installs what it
# needs first (scripts/deps.sh is idempotent and needs root for apt).

CARGO ?= cargo
.PHONY: all deps build test lint bench demo clean

all: build

deps:
	bash scripts/deps.sh

build: deps
	$(CARGO) build --workspace --all-targets

## Every test, including the end-to-end suites (real kernel, real files).
test: deps
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Benchmarks print tables; compare ratios, not absolute times.
bench: deps
	$(CARGO) bench --workspace

## The main job (see README): record a crashing service, read back its past.
demo: deps
	bash scripts/demo.sh

clean:
	$(CARGO) clean
