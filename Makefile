# Steno: `make run` serves, `make test` proves. Both start from a fresh clone.
# The default matches crates/mlx-sys's (metal on macOS, cpu elsewhere). It is not
# exported, so `make` and plain `cargo` see the same environment and share one build;
# MLX_BACKEND given in the environment or on the command line reaches both.
MLX_BACKEND ?= $(if $(filter Darwin,$(shell uname -s)),metal,cpu)
CARGO ?= cargo
PROFILE ?= release
STENO_ASSETS ?= $(HOME)/.cache/steno/assets
export STENO_ASSETS
STAMP := target/.setup-$(MLX_BACKEND)

.PHONY: setup assets build run test bench bench-model lint fmt openapi clean-setup

$(STAMP): scripts/setup.sh requirements/mlx-$(MLX_BACKEND).txt scripts/fetch-assets.sh scripts/assets.lock
	MLX_BACKEND=$(MLX_BACKEND) ./scripts/setup.sh
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

# The server under 1/4/8/16 concurrent clients, batching on and off
# (BENCH_MODEL=base-ct2 or a directory; BENCH_CLIENTS=1,8; BENCH_REQUESTS=16).
BENCH_MODEL ?= tiny.en-ct2
BENCH_CLIENTS ?= 1,4,8,16
BENCH_REQUESTS ?= 16
bench: build
	$(CARGO) build --profile $(PROFILE) -p steno-e2e --bin steno-bench
	./target/$(PROFILE)/steno-bench --model $(BENCH_MODEL) --clients $(BENCH_CLIENTS) --requests $(BENCH_REQUESTS)

# The model alone: GEMM roofline, encoder, decoder steps, long files, short clips.
bench-model: build
	$(CARGO) run --profile $(PROFILE) -p steno-whisper --example bench -- $(BENCH_MODEL_DIR)

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

openapi: build
	./target/$(PROFILE)/steno openapi > openapi/openapi.json

clean-setup:
	rm -f target/.setup-*
