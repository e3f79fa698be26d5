# Steno: `make run` serves, `make test` proves. Both start from a fresh clone.
MLX_BACKEND ?= $(if $(filter Darwin,$(shell uname -s)),metal,cpu)
export MLX_BACKEND
CARGO ?= cargo
PROFILE ?= release
STENO_ASSETS ?= $(HOME)/.cache/steno/assets
export STENO_ASSETS
STAMP := target/.setup-$(MLX_BACKEND)

.PHONY: setup assets build run test bench lint fmt openapi clean-setup

$(STAMP): scripts/setup.sh requirements/mlx-$(MLX_BACKEND).txt scripts/fetch-assets.sh scripts/assets.lock
	./scripts/setup.sh
	./scripts/fetch-assets.sh
	@mkdir -p target && touch $@

setup: $(STAMP)

assets:
	./scripts/fetch-assets.sh

build: setup
	$(CARGO) build --profile $(PROFILE) --workspace

run: build
	./target/$(PROFILE)/steno serve

test: setup
	@# Tests that run the model share 2 cores badly; run them one at a time.
	$(CARGO) build --profile $(PROFILE) --workspace --all-targets
	RUST_TEST_THREADS=1 $(CARGO) test --profile $(PROFILE) --workspace

bench: build
	$(CARGO) run --profile $(PROFILE) -p steno-whisper --example bench -- $(BENCH_MODEL)

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

openapi: build
	./target/$(PROFILE)/steno openapi > openapi/openapi.json

clean-setup:
	rm -f target/.setup-*
