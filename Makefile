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
# CUDA builds get their own target directory so they never replace the CPU build's
# artifacts (MLX_BACKEND=cuda make build → target/cuda/release/steno).
ifeq ($(MLX_BACKEND),cuda)
export CARGO_TARGET_DIR ?= target/cuda
endif
BIN_DIR = $(or $(CARGO_TARGET_DIR),target)/$(PROFILE)

.PHONY: setup assets build run test bench bench-server bench-setup bench-peers bench-live bench-model lint fmt openapi clean-setup gpu-bundle fuzz

$(STAMP): scripts/setup.sh requirements/mlx-$(MLX_BACKEND).txt scripts/fetch-assets.sh scripts/assets.lock \
          requirements/clients.txt tests/clients/node/package-lock.json
	MLX_BACKEND=$(MLX_BACKEND) ./scripts/setup.sh
	./scripts/fetch-assets.sh
	@mkdir -p target && touch $@

setup: $(STAMP)

assets:
	./scripts/fetch-assets.sh

build: setup
	$(CARGO) build --profile $(PROFILE) --workspace

run: build
	$(BIN_DIR)/steno serve

test: setup
	@# Tests that run the model share 2 cores badly; run them one at a time.
	$(CARGO) build --profile $(PROFILE) --workspace --all-targets
	RUST_TEST_THREADS=1 $(CARGO) test --profile $(PROFILE) --workspace

# The server under 1/4/8/16 concurrent clients, batching on and off
# (BENCH_MODEL=base-ct2 or a directory; BENCH_CLIENTS=1,8; BENCH_REQUESTS=16).
BENCH_MODEL ?= tiny.en-ct2
BENCH_CLIENTS ?= 1,4,8,16
BENCH_REQUESTS ?= 16
bench: bench-server bench-peers bench-live

bench-server: build
	$(CARGO) build --profile $(PROFILE) -p steno-e2e --bin steno-bench
	$(BIN_DIR)/steno-bench --model $(BENCH_MODEL) --clients $(BENCH_CLIENTS) --requests $(BENCH_REQUESTS)

# Live sessions over /v1/realtime while file requests run: BENCH_LIVE_SESSIONS concurrent
# sessions streaming English clips of 2-10 s at real-time pace (turn latency speech_stopped ->
# completed and first delta, p50/p95), then the English set (every BENCH_LIVE_WER_STRIDE-th
# clip; 0 skips it) through live sessions against the same clips as files. Writes
# target/bench/live.md.
BENCH_LIVE_SESSIONS ?= 1,4,8
BENCH_LIVE_TURNS ?= 6
BENCH_LIVE_WER_STRIDE ?= 1
bench-live: build
	$(CARGO) build --profile $(PROFILE) -p steno-e2e --bin steno-bench
	$(BIN_DIR)/steno-bench live --model $(BENCH_MODEL) --sessions $(BENCH_LIVE_SESSIONS) \
	    --turns $(BENCH_LIVE_TURNS) --wer-stride $(BENCH_LIVE_WER_STRIDE)

# Steno next to faster-whisper (int8, float32) and mlx-whisper on the same audio and weights:
# a long file, BENCH_CLIPS short clips one by one, BENCH_PEER_CLIENTS concurrent clients
# (BENCH_LONG_SECONDS=600 BENCH_CLIPS=100 BENCH_PEER_CLIENTS=8
# BENCH_PEERS=faster-whisper-int8,faster-whisper-float32,mlx-whisper, or none).
# Writes target/bench/peers.md and peers.png.
bench-setup:
	./tests/peers/setup.sh

bench-peers: build bench-setup
	$(CARGO) build --profile $(PROFILE) -p steno-e2e --bin steno-bench
	BENCH_MODEL=$(BENCH_MODEL) $(BIN_DIR)/steno-bench peers

# The model alone: GEMM roofline, encoder, decoder steps, long files, short clips.
bench-model: build
	$(CARGO) run --profile $(PROFILE) -p steno-whisper --example bench -- $(BENCH_MODEL_DIR)

# NVIDIA GPU hosts without registry access (deploy/gpu/): the CUDA build (target/cuda) and the
# model bench, packed with libmlx (CUDA), models and speech into gzip parts of at most 45 MB
# under .gpu-bundle/; deploy/gpu/unpack.sh and run.sh on the host (deploy/gpu/RESULTS.md).
GPU_ENV = MLX_BACKEND=cuda CARGO_TARGET_DIR=target/cuda
gpu-bundle:
	$(GPU_ENV) $(MAKE) build
	$(GPU_ENV) $(CARGO) build --profile $(PROFILE) -p steno-whisper --example bench
	$(GPU_ENV) PROFILE=$(PROFILE) ./deploy/gpu/bundle.sh

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

openapi: build
	$(BIN_DIR)/steno openapi > openapi/openapi.json

# Fuzzing (fuzz/: its own workspace and target dir, fuzz/target): the audio decoder and
# the multipart form layer, FUZZ_SECONDS each, from a scratch copy of the committed seeds
# (fuzz/corpus/<target>). libFuzzer's fork mode keeps going after a crash, so every target
# gets its full time; crashes land in fuzz/artifacts/<target>/, are listed at the end and
# fail the run. Past findings are kept in fuzz/crashes/ (replayed by tests/tests/hostile.rs).
# cargo-fuzz is pinned and runs on the stable toolchain without sanitizers (no nightly).
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= decode form
fuzz: setup
	@$(CARGO) fuzz --version 2>/dev/null | grep -qx 'cargo-fuzz $(CARGO_FUZZ_VERSION)' || \
	    $(CARGO) install cargo-fuzz --version $(CARGO_FUZZ_VERSION) --locked
	@mkdir -p fuzz/target && touch fuzz/target/.fuzz-start
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p fuzz/target/corpus/$$t fuzz/artifacts/$$t && \
	    $(CARGO) fuzz run --fuzz-dir fuzz --sanitizer none -O $$t \
	        fuzz/target/corpus/$$t fuzz/corpus/$$t -- \
	        -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
	        -max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
	        || exit 1; \
	done
	@new=$$(find fuzz/artifacts -type f -newer fuzz/target/.fuzz-start | sort); \
	if [ -n "$$new" ]; then echo "make fuzz: crashes found:"; echo "$$new"; exit 1; fi; \
	echo "make fuzz: no crashes"

clean-setup:
	rm -f target/.setup-*
