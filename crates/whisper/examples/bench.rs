//! `make bench`: throughput of steno-whisper on this machine, printed as a table
//! and written to target/bench/whisper.md.
//!
//! * GEMM roofline: fp32 matmul of the encoder's MLP shape, the best this backend does.
//! * Encoder: seconds per 30 s window at batch 1 and 4, with CPU lanes off and on
//!   (`runtime::set_cpu_lanes`), and its achieved GFLOP/s as a share of that roofline.
//! * One long file (clips joined with pauses) in `sequential` and `parallel` modes.
//! * Short clips, one row at a time vs batched across clips.
//!
//! Usage: bench [MODEL_DIR] (default: tiny.en from the test assets).
//!
//! `bench --turbo-random [OUT.md]`: production scale without production weights. A model
//! with large-v3-turbo's dimensions (128 mels, 32 encoder layers, d=1280, 20 heads, 4
//! decoder layers) and *random* weights, so its text is meaningless and only its speed
//! is measured: the device's fp16 GEMM rate (the roofline), encoder windows/s and its
//! share of that roofline at batch 1–32, decoder steps/s at batch 1–32, and whole
//! windows/s decoding a fixed number of tokens per window. The tokenizer is base's
//! (51865 tokens; large-v3 has one more language token, which changes nothing in cost).
//! `STENO_BENCH_TURBO_LAYERS` / `STENO_BENCH_TURBO_BATCHES` shrink it for a smoke test.
//!
//! For peers on the same audio (deploy/gpu/):
//! * `bench --clips MODEL_DIR 1,8,32,64 OUT_DIR`: every English clip through
//!   `transcribe_many` (the CLI's path) at each max-batch-rows: audio s / wall s, corpus
//!   WER, MLX peak memory; writes OUT_DIR/steno-clips.md and OUT_DIR/steno-B.tsv.
//! * `bench --wavs16 OUT_DIR`: the same clips decoded by Steno to 16 kHz mono WAVs plus
//!   OUT_DIR/clips.tsv (key, wav, seconds), so a peer sees exactly Steno's samples.
//! * `bench --score HYP.tsv…`: corpus WER (Steno's normaliser) of `key<TAB>text` files.
//! * `bench --steps MODEL_DIR`: decoder step time at 1, 8, 32, 64 rows
//!   (`STENO_BENCH_STEP_ROWS`), dynamic caches vs static vs the compiled step, back to back.

use std::fmt::Write as _;
use std::time::Instant;

use mlx_rs::fast;
use mlx_rs::ops;
use mlx_rs::{Array, Dtype};
use steno_e2e::assets;
use steno_whisper::beam::Search;
use steno_whisper::config::ModelDims;
use steno_whisper::decoding::{AudioFeatures, Batch, RowSpec, StepKind};
use steno_whisper::model::{Weights, WhisperModel};
use steno_whisper::tokenizer::Tokenizer;
use steno_whisper::{LoadOptions, Mode, Task, TranscribeOptions, Whisper};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

/// Normal samples (standard deviation `scale`, default 1) of `shape` as `dtype`, evaluated.
fn random_array(shape: &[i32], scale: Option<f32>, dtype: Dtype) -> Array {
    let a = mlx_rs::random::normal::<f32>(shape, None, scale, None)
        .unwrap()
        .as_dtype(dtype)
        .unwrap();
    a.eval().unwrap();
    a
}

fn gemm_gflops(m: i32, k: i32, n: i32, dtype: Dtype) -> f64 {
    let a = random_array(&[m, k], None, dtype);
    let b = random_array(&[k, n], None, dtype);
    a.matmul(&b).unwrap().eval().unwrap();
    let runs: Vec<f64> = (0..7)
        .map(|_| timed(|| a.matmul(&b).unwrap().eval().unwrap()).1)
        .collect();
    2.0 * m as f64 * k as f64 * n as f64 / median(runs) / 1e9
}

/// Milliseconds of `x·wᵀ` for `x` `[m, k]` and `w` `[n, k]`, dense and through MLX's
/// quantized matmul at 8 and 4 bits (group 64): whether quantized weights pay here.
fn quantized_matmul_ms(m: i32, k: i32, n: i32) -> [f64; 3] {
    let x = random_array(&[m, k], None, Dtype::Float32);
    let w = random_array(&[n, k], None, Dtype::Float32);
    let time = |f: &dyn Fn() -> Array| {
        f().eval().unwrap();
        let runs: Vec<f64> = (0..7).map(|_| timed(|| f().eval().unwrap()).1).collect();
        1e3 * median(runs)
    };
    let dense = time(&|| x.matmul(w.t()).unwrap());
    let [eight, four] = [8, 4].map(|bits| {
        let (q, scales, biases) = ops::quantize(&w, 64, bits).unwrap();
        time(&|| ops::quantized_matmul(&x, &q, &scales, &biases, true, 64, bits).unwrap())
    });
    [dense, eight, four]
}

fn quantized_report(dims: &ModelDims) -> String {
    let (d, t, vocab) = (
        dims.n_audio_state as i32,
        dims.n_audio_ctx as i32,
        dims.n_vocab as i32,
    );
    let mut report = String::from(
        "\nQuantized weights (MLX quantized_matmul, group 64) against fp32, ms per product\n\n",
    );
    report.push_str("| product | fp32 | 8-bit | 4-bit |\n|---|---:|---:|---:|\n");
    let shapes = [
        ("encoder MLP fc1", t, d, 4 * d),
        ("decoder MLP fc1, 1 row", 1, d, 4 * d),
        ("decoder MLP fc1, 16 rows", 16, d, 4 * d),
        ("logits, 1 row", 1, d, vocab),
        ("logits, 16 rows", 16, d, vocab),
    ];
    for (name, m, k, n) in shapes {
        let [dense, eight, four] = quantized_matmul_ms(m, k, n);
        let _ = writeln!(
            report,
            "| {name} ({m}×{k}·{k}×{n}) | {dense:.2} | {eight:.2} | {four:.2} |"
        );
    }
    report
}

/// Multiply-accumulate FLOPs of one encoder window (convs, projections, attention, MLP).
fn encoder_flops(w: &Whisper) -> f64 {
    let d = w.model.dims.n_audio_state as f64;
    let t = w.model.dims.n_audio_ctx as f64;
    let mels = w.model.dims.n_mels as f64;
    let conv = 2.0 * (2.0 * t * mels * d * 3.0) + 2.0 * t * d * d * 3.0;
    let per_layer = 2.0 * t * d * d * 4.0 + 2.0 * 2.0 * t * t * d + 2.0 * t * d * 4.0 * d * 2.0;
    conv + per_layer * w.model.dims.n_audio_layer as f64
}

fn decode(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    steno_audio::decode(&bytes, None, &steno_audio::Limits::default())
        .unwrap()
        .samples
}

/// One large-v3-turbo-shaped parameter set with random values (std 0.02 for matrices
/// and biases, LayerNorms at identity), in OpenAI's state-dict names.
fn random_turbo_weights(dims: &ModelDims) -> Weights {
    struct Builder {
        weights: Weights,
        d: usize,
    }
    impl Builder {
        fn normal(&mut self, name: String, shape: &[usize]) {
            let shape: Vec<i32> = shape.iter().map(|&x| x as i32).collect();
            let a = mlx_rs::random::normal::<f32>(&shape, None, Some(0.02), None).unwrap();
            a.eval().unwrap();
            self.weights.insert(name, a);
        }
        fn layer_norm(&mut self, p: &str) {
            let d = self.d as i32;
            let ones = mlx_rs::ops::ones::<f32>(&[d]).unwrap();
            let zeros = mlx_rs::ops::zeros::<f32>(&[d]).unwrap();
            self.weights.insert(format!("{p}.weight"), ones);
            self.weights.insert(format!("{p}.bias"), zeros);
        }
        fn linear(&mut self, p: &str, out: usize, inputs: usize, bias: bool) {
            self.normal(format!("{p}.weight"), &[out, inputs]);
            if bias {
                self.normal(format!("{p}.bias"), &[out]);
            }
        }
        fn attention(&mut self, p: &str) {
            let d = self.d;
            self.linear(&format!("{p}.query"), d, d, true);
            self.linear(&format!("{p}.key"), d, d, false);
            self.linear(&format!("{p}.value"), d, d, true);
            self.linear(&format!("{p}.out"), d, d, true);
        }
        fn mlp(&mut self, p: &str) {
            let d = self.d;
            self.linear(&format!("{p}.mlp.0"), 4 * d, d, true);
            self.linear(&format!("{p}.mlp.2"), d, 4 * d, true);
            self.layer_norm(&format!("{p}.mlp_ln"));
        }
    }
    let d = dims.n_audio_state;
    let mut b = Builder {
        weights: Weights::new(),
        d,
    };
    b.normal("encoder.conv1.weight".into(), &[d, dims.n_mels, 3]);
    b.normal("encoder.conv1.bias".into(), &[d]);
    b.normal("encoder.conv2.weight".into(), &[d, d, 3]);
    b.normal("encoder.conv2.bias".into(), &[d]);
    b.weights.insert(
        "encoder.positional_embedding".into(),
        steno_whisper::load::sinusoids(dims.n_audio_ctx, d),
    );
    for i in 0..dims.n_audio_layer {
        let p = format!("encoder.blocks.{i}");
        b.attention(&format!("{p}.attn"));
        b.layer_norm(&format!("{p}.attn_ln"));
        b.mlp(&p);
    }
    b.layer_norm("encoder.ln_post");
    b.normal("decoder.token_embedding.weight".into(), &[dims.n_vocab, d]);
    b.normal("decoder.positional_embedding".into(), &[dims.n_text_ctx, d]);
    for i in 0..dims.n_text_layer {
        let p = format!("decoder.blocks.{i}");
        b.attention(&format!("{p}.attn"));
        b.layer_norm(&format!("{p}.attn_ln"));
        b.attention(&format!("{p}.cross_attn"));
        b.layer_norm(&format!("{p}.cross_attn_ln"));
        b.mlp(&p);
    }
    b.layer_norm("decoder.ln");
    b.weights
}

/// Median TFLOP/s of `reps` back-to-back `m×k · k×n` products evaluated together
/// (one host synchronisation per batch of products), on fresh random inputs.
fn gemm_tflops(m: i32, k: i32, n: i32, dtype: Dtype, reps: usize) -> f64 {
    let inputs: Vec<(Array, Array)> = (0..2)
        .map(|_| {
            (
                random_array(&[m, k], None, dtype),
                random_array(&[k, n], None, dtype),
            )
        })
        .collect();
    let run = || {
        let outs: Vec<Array> = (0..reps)
            .map(|i| {
                let (a, b) = &inputs[i % inputs.len()];
                a.matmul(b).unwrap()
            })
            .collect();
        mlx_rs::transforms::eval(outs.iter()).unwrap();
    };
    run();
    let runs: Vec<f64> = (0..5).map(|_| timed(run).1).collect();
    2.0 * m as f64 * k as f64 * n as f64 * reps as f64 / median(runs) / 1e12
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

/// `bench --turbo-random`: see the header.
/// Long on purpose: a benchmark script whose measurements run and print in the order of
/// the report it writes; splitting it would scatter one table over several functions.
fn turbo_random(out: Option<String>) {
    let layers = env_list("STENO_BENCH_TURBO_LAYERS", &[32])[0];
    let batches = env_list("STENO_BENCH_TURBO_BATCHES", &[1, 2, 4, 8, 16, 32]);
    // STENO_BENCH_TURBO_STEPS=0 measures the encoder alone (a kernel trace's run).
    let tokens_per_window = env_list("STENO_BENCH_TURBO_STEPS", &[64])[0];
    let dims = ModelDims {
        n_mels: 128,
        n_audio_ctx: 1500,
        n_audio_state: 1280,
        n_audio_head: 20,
        n_audio_layer: layers,
        n_vocab: 51865,
        n_text_ctx: 448,
        n_text_state: 1280,
        n_text_head: 20,
        n_text_layer: 4,
    };
    let dtype = steno_whisper::load::default_dtype();
    let tokenizer_path = assets::model_dir(assets::BASE).join("tokenizer.json");
    let (whisper, load_s) = timed(|| {
        let weights = random_turbo_weights(&dims);
        Whisper {
            model: WhisperModel::from_weights(
                dims.clone(),
                weights,
                dtype,
                std::path::Path::new("random"),
            )
            .expect("random turbo model"),
            tokenizer: Tokenizer::from_file(&tokenizer_path, dims.n_vocab).expect("tokenizer"),
            mel_filters: steno_whisper::mel::MelFilters::new(dims.n_mels),
            alignment_heads: steno_whisper::load::default_alignment_heads(&dims),
        }
    });
    let memory_after_load = steno_whisper::runtime::memory();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# large-v3-turbo dimensions, RANDOM weights (speed only: the text is meaningless)

         {} mels, {} encoder layers, d={}, {} heads, {} decoder layers; dtype {dtype:?};          built in {load_s:.1} s; weights {:.0} MiB on the device
",
        dims.n_mels,
        dims.n_audio_layer,
        dims.n_audio_state,
        dims.n_audio_head,
        dims.n_text_layer,
        memory_after_load.active_bytes as f64 / 1048576.0
    );

    // The roofline: the device's best fp16 GEMM, measured now through MLX.
    // STENO_BENCH_TURBO_ROOFLINE=0 skips it (a kernel trace of the encoder alone).
    let roofline = env_list("STENO_BENCH_TURBO_ROOFLINE", &[1])[0] != 0;
    let d = dims.n_audio_state as i32;
    let (peak, mlp_shape) = if roofline {
        (
            gemm_tflops(8192, 8192, 8192, dtype, 20),
            gemm_tflops(8 * 1500, d, 4 * d, dtype, 20),
        )
    } else {
        (f64::NAN, f64::NAN)
    };
    let _ = writeln!(
        report,
        "| GEMM ({dtype:?}) | TFLOP/s |
|---|---:|
| 8192×8192·8192×8192 (roofline) | {peak:.1} |
         | 12000×1280·1280×5120 (encoder MLP, 8 windows) | {mlp_shape:.1} |
"
    );
    eprint!("{report}");

    let d_f = dims.n_audio_state as f64;
    let t = dims.n_audio_ctx as f64;
    let mels = dims.n_mels as f64;
    let conv = 2.0 * (2.0 * t * mels * d_f * 3.0) + 2.0 * t * d_f * d_f * 3.0;
    let per_layer =
        2.0 * t * d_f * d_f * 4.0 + 2.0 * 2.0 * t * t * d_f + 2.0 * t * d_f * 4.0 * d_f * 2.0;
    let flops = conv + per_layer * dims.n_audio_layer as f64;

    let max_batch = batches.iter().copied().max().unwrap_or(1);
    let n_frames = 3000usize;
    let mel_windows: Vec<Vec<f32>> = (0..max_batch)
        .map(|i| {
            (0..n_frames * dims.n_mels)
                .map(|j| ((i * 7919 + j) % 1000) as f32 / 1000.0 - 0.5)
                .collect()
        })
        .collect();
    let _ = writeln!(
        report,
        "| encoder batch | ms / call | windows/s | audio s / wall s | TFLOP/s | share of GEMM roofline |
|---:|---:|---:|---:|---:|---:|"
    );
    let mut encoder_ms = Vec::new();
    for &batch in &batches {
        let flat: Vec<f32> = mel_windows[..batch]
            .iter()
            .flat_map(|m| m.iter().copied())
            .collect();
        let input = Array::from_slice(&flat, &[batch as i32, n_frames as i32, dims.n_mels as i32])
            .as_dtype(dtype)
            .unwrap();
        input.eval().unwrap();
        let encode = || {
            whisper
                .model
                .encoder
                .forward(&input)
                .unwrap()
                .eval()
                .unwrap()
        };
        encode();
        let runs: Vec<f64> = (0..5).map(|_| timed(encode).1).collect();
        let call = median(runs);
        encoder_ms.push(call * 1e3);
        let windows = batch as f64 / call;
        let tflops = flops * windows / 1e12;
        let _ = writeln!(
            report,
            "| {batch} | {:.1} | {windows:.1} | {:.0} | {tflops:.1} | {:.0} % |",
            call * 1e3,
            30.0 * windows,
            100.0 * tflops / peak
        );
    }
    let _ = writeln!(
        report,
        "
Encoder FLOPs per window: {:.1} GFLOP (convs, projections, attention, MLP).
",
        flops / 1e9
    );
    eprint!("{report}");

    // Decoder steps: rows that never emit EOT, one token per row per step.
    if tokens_per_window == 0 {
        print!("{report}");
        return;
    }
    let features = whisper.encode(&mel_windows[..1]).unwrap().remove(0);
    let specs = |rows: usize| endless_rows(&whisper, &features, rows);
    let _ = writeln!(
        report,
        "| decoder batch | ms / step | steps/s | tokens/s | windows/s ({tokens_per_window} tokens each, encoder included) | audio s / wall s |
|---:|---:|---:|---:|---:|---:|"
    );
    for (&rows, enc_ms) in batches.iter().zip(&encoder_ms) {
        let mut batch = Batch::new(&whisper.model);
        batch.admit(&whisper.model, specs(rows)).unwrap();
        for _ in 0..3 {
            batch.step(&whisper.model).unwrap();
        }
        let steps: Vec<f64> = (0..tokens_per_window)
            .map(|_| timed(|| batch.step(&whisper.model).unwrap()).1)
            .collect();
        let step = median(steps.clone());
        let decode_s: f64 = steps.iter().sum();
        let windows = rows as f64 / (enc_ms / 1e3 + decode_s);
        let _ = writeln!(
            report,
            "| {rows} | {:.2} | {:.0} | {:.0} | {windows:.1} | {:.0} |",
            step * 1e3,
            1.0 / step,
            rows as f64 / step,
            30.0 * windows
        );
    }
    let memory = steno_whisper::runtime::memory();
    let _ = writeln!(
        report,
        "
MLX memory: active {:.0} MiB, peak {:.0} MiB, cache {:.0} MiB.",
        memory.active_bytes as f64 / 1048576.0,
        memory.peak_bytes as f64 / 1048576.0,
        memory.cache_bytes as f64 / 1048576.0
    );
    print!("{report}");
    if let Some(out) = out {
        std::fs::write(&out, &report).expect("write the report");
    }
}

/// `bench --turbo-ops`: where one large-v3-turbo encoder layer's time goes, op by op, at
/// `STENO_BENCH_OPS_BATCH` windows (8): the median of 10 evaluations of each op alone.
/// Long on purpose: a benchmark script whose measurements run and print in the order of
/// the report it writes; splitting it would scatter one table over several functions.
fn turbo_ops() {
    let b = env_list("STENO_BENCH_OPS_BATCH", &[8])[0] as i32;
    let layers = env_list("STENO_BENCH_OPS_LAYERS", &[32])[0];
    let (t, d, heads) = (1500i32, 1280i32, 20i32);
    let dtype = Dtype::Float16;
    let rand = |shape: &[i32]| random_array(shape, Some(0.5), dtype);
    let time = |f: &dyn Fn() -> Array| {
        f().eval().unwrap();
        let runs: Vec<f64> = (0..10).map(|_| timed(|| f().eval().unwrap()).1).collect();
        median(runs)
    };
    let x = rand(&[b, t, d]);
    let h4 = rand(&[b, t, 4 * d]);
    let w = rand(&[d, d]);
    let w1 = rand(&[4 * d, d]);
    let w2 = rand(&[d, 4 * d]);
    let bias = rand(&[d]);
    let bias4 = rand(&[4 * d]);
    let ln_w = rand(&[d]);
    let q = rand(&[b, heads, t, d / heads]);
    let k = rand(&[b, heads, t, d / heads]);
    let v = rand(&[b, heads, t, d / heads]);
    let heads_view = |a: &Array| {
        a.reshape(&[b, t, heads, d / heads])
            .unwrap()
            .transpose_axes(&[0, 2, 1, 3])
            .unwrap()
    };
    let (xq, xk, xv) = (rand(&[b, t, d]), rand(&[b, t, d]), rand(&[b, t, d]));
    let mel = rand(&[b, 2 * t, 128]);
    let c1 = rand(&[d, 3, 128]);
    let x2 = rand(&[b, 2 * t, d]);
    let c2 = rand(&[d, 3, d]);
    let bt = (b * t) as f64;
    let (df, tf) = (d as f64, t as f64);
    let scale = 1.0 / ((d / heads) as f32).sqrt();
    let sdpa = |q: &Array, k: &Array, v: &Array| {
        fast::scaled_dot_product_attention(
            q,
            k,
            v,
            scale,
            None::<fast::ScaledDotProductAttentionMask>,
            None,
        )
        .unwrap()
    };
    type Op<'a> = (&'a str, f64, Box<dyn Fn() -> Array + 'a>);
    let ops_list: Vec<Op> = vec![
        (
            "layer_norm [B,1500,1280]",
            0.0,
            Box::new(|| fast::layer_norm(&x, &ln_w, &bias, 1e-5).unwrap()),
        ),
        (
            "x·Wᵀ 1280→1280 (q, k, v or out)",
            2.0 * bt * df * df,
            Box::new(|| x.matmul(w.t()).unwrap()),
        ),
        (
            "x·Wᵀ + b 1280→1280",
            2.0 * bt * df * df,
            Box::new(|| x.matmul(w.t()).unwrap().add(&bias).unwrap()),
        ),
        (
            "addmm(b, x, Wᵀ) 1280→1280",
            2.0 * bt * df * df,
            Box::new(|| ops::addmm(&bias, &x, w.t(), None, None).unwrap()),
        ),
        (
            "x·W1ᵀ + b 1280→5120 (fc1)",
            2.0 * bt * df * 4.0 * df,
            Box::new(|| x.matmul(w1.t()).unwrap().add(&bias4).unwrap()),
        ),
        (
            "h·W2ᵀ + b 5120→1280 (fc2)",
            2.0 * bt * df * 4.0 * df,
            Box::new(|| h4.matmul(w2.t()).unwrap().add(&bias).unwrap()),
        ),
        (
            "gelu (erf) [B,1500,5120]",
            0.0,
            Box::new(|| mlx_rs::nn::gelu(&h4).unwrap()),
        ),
        (
            "gelu (tanh approx.) [B,1500,5120]",
            0.0,
            Box::new(|| mlx_rs::nn::gelu_approximate(&h4).unwrap()),
        ),
        (
            "sdpa 20 heads × 1500² × 64",
            4.0 * b as f64 * tf * tf * df,
            Box::new(|| sdpa(&q, &k, &v)),
        ),
        (
            "sdpa on head views of [B,1500,1280] (as the encoder calls it)",
            4.0 * b as f64 * tf * tf * df,
            Box::new(|| sdpa(&heads_view(&xq), &heads_view(&xk), &heads_view(&xv))),
        ),
        (
            "sdpa on head views made contiguous first",
            4.0 * b as f64 * tf * tf * df,
            Box::new(|| {
                let contiguous = |x: &Array| heads_view(x).contiguous().unwrap();
                sdpa(&contiguous(&xq), &contiguous(&xk), &contiguous(&xv))
            }),
        ),
        (
            "attention unfused (q·kᵀ, softmax, ·v)",
            4.0 * b as f64 * tf * tf * df,
            Box::new(|| {
                let s = q
                    .matmul(k.transpose_axes(&[0, 1, 3, 2]).unwrap())
                    .unwrap()
                    .multiply(Array::from_f32(scale))
                    .unwrap();
                ops::softmax_axis(&s, -1, true).unwrap().matmul(&v).unwrap()
            }),
        ),
        (
            "split/merge heads (reshape+transpose copy)",
            0.0,
            Box::new(|| {
                x.reshape(&[b, t, heads, d / heads])
                    .unwrap()
                    .transpose_axes(&[0, 2, 1, 3])
                    .unwrap()
                    .transpose_axes(&[0, 2, 1, 3])
                    .unwrap()
                    .reshape(&[b, t, d])
                    .unwrap()
                    .add(&bias)
                    .unwrap()
            }),
        ),
        (
            "conv1 128→1280 k3 over 3000",
            2.0 * b as f64 * 2.0 * tf * 128.0 * df * 3.0,
            Box::new(|| ops::conv1d(&mel, &c1, 1, 1, 1, 1).unwrap()),
        ),
        (
            "conv2 1280→1280 k3 stride 2",
            2.0 * bt * df * df * 3.0,
            Box::new(|| ops::conv1d(&x2, &c2, 2, 1, 1, 1).unwrap()),
        ),
    ];
    let mut report = format!(
        "# large-v3-turbo encoder ops, batch {b}, float16 (random inputs)\n\n| op | ms | TFLOP/s |\n|---|---:|---:|\n"
    );
    for (name, flops, f) in &ops_list {
        let s = time(f.as_ref());
        let tflops = if *flops > 0.0 {
            format!("{:.0}", flops / s / 1e12)
        } else {
            "–".into()
        };
        let _ = writeln!(report, "| {name} | {:.3} | {tflops} |", s * 1e3);
    }
    // The same ops composed as the encoder composes a layer, 32 layers in one graph, with
    // and without the attention call (q + k + v instead): attention's in-graph cost.
    let layer = |x: &Array, attention: bool| -> Array {
        let h = fast::layer_norm(x, &ln_w, &bias, 1e-5).unwrap();
        let q = heads_view(&h.matmul(w.t()).unwrap().add(&bias).unwrap());
        let k = heads_view(&h.matmul(w.t()).unwrap());
        let v = heads_view(&h.matmul(w.t()).unwrap().add(&bias).unwrap());
        let o = if attention {
            fast::scaled_dot_product_attention(
                q,
                k,
                v,
                scale,
                None::<fast::ScaledDotProductAttentionMask>,
                None,
            )
            .unwrap()
        } else {
            q.add(&k).unwrap().add(&v).unwrap()
        };
        let o = o
            .transpose_axes(&[0, 2, 1, 3])
            .unwrap()
            .reshape(&[b, t, d])
            .unwrap();
        let x = x.add(o.matmul(w.t()).unwrap().add(&bias).unwrap()).unwrap();
        let h = fast::layer_norm(&x, &ln_w, &bias, 1e-5).unwrap();
        let h = mlx_rs::nn::gelu(h.matmul(w1.t()).unwrap().add(&bias4).unwrap()).unwrap();
        x.add(h.matmul(w2.t()).unwrap().add(&bias).unwrap())
            .unwrap()
    };
    for attention in [true, false] {
        let run = || {
            let mut y = x.clone();
            for _ in 0..layers {
                y = layer(&y, attention);
            }
            y
        };
        let s = time(&run);
        let _ = writeln!(
            report,
            "| {layers} layers composed as the encoder does{} | {:.3} ({:.3} per layer) | |",
            if attention { "" } else { ", attention skipped" },
            s * 1e3,
            s * 1e3 / layers as f64
        );
    }
    print!("{report}");
}

fn tsv_field(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ").trim().to_string()
}

/// `bench --wavs16 OUT_DIR`.
fn write_wavs16(out: &std::path::Path) {
    std::fs::create_dir_all(out).unwrap();
    let mut index = String::new();
    for (i, clip) in assets::english_clips().iter().enumerate() {
        let samples = decode(&clip.path);
        let wav = out.join(format!("{i:05}.wav"));
        steno_e2e::cli::write_wav(&wav, &samples);
        let _ = writeln!(
            index,
            "{}\t{}\t{:.3}",
            clip.speech_key(),
            wav.display(),
            steno_audio::seconds(samples.len())
        );
    }
    std::fs::write(out.join("clips.tsv"), index).unwrap();
}

/// `bench --score HYP.tsv…`.
fn score(files: &[String]) {
    let clips = assets::english_clips();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let hyps: std::collections::HashMap<&str, &str> =
            text.lines().filter_map(|l| l.split_once('\t')).collect();
        let stats = steno_e2e::wer::corpus_stats(
            clips
                .iter()
                .filter_map(|c| hyps.get(c.speech_key().as_str()).map(|h| (c, *h)))
                .map(|(c, h)| (c.reference.as_str(), h)),
        );
        println!(
            "{file}: {} hypotheses, WER {:.2} % ({} edits / {} words)",
            hyps.len(),
            100.0 * stats.wer(),
            stats.edits(),
            stats.reference_words
        );
    }
}

/// `bench --clips MODEL_DIR ROWS OUT_DIR`: at each row count, each beam size of
/// `STENO_BENCH_BEAMS` (default `1`: greedy; e.g. `1,5`) back to back.
fn clips_throughput(model_dir: &std::path::Path, rows: &[usize], out: &std::path::Path) {
    std::fs::create_dir_all(out).unwrap();
    let whisper = Whisper::load(model_dir, &LoadOptions::default()).expect("load model");
    let clips = assets::english_clips();
    let audio: Vec<Vec<f32>> = clips.iter().map(|c| decode(&c.path)).collect();
    let seconds: f64 = audio.iter().map(|a| steno_audio::seconds(a.len())).sum();
    let beams: Vec<usize> = std::env::var("STENO_BENCH_BEAMS")
        .unwrap_or_else(|_| "1".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let inputs = |beam_size: usize| -> Vec<(&[f32], TranscribeOptions)> {
        let options = TranscribeOptions {
            language: Some("en".into()),
            beam_size,
            ..TranscribeOptions::default()
        };
        audio
            .iter()
            .map(|a| (a.as_slice(), options.clone()))
            .collect()
    };
    // Warm-up: kernels, caches, every batch shape the largest level uses.
    let warm = rows.iter().copied().max().unwrap_or(1);
    let _ = whisper.transcribe_many(&inputs(1)[..warm.min(audio.len())], warm);
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# Steno transcribe_many: {} English clips ({seconds:.0} s), {}\n\ndtype {:?}\n\n\
         | max batch rows | wall s | audio s / wall s | WER | MLX peak MiB |\n|---:|---:|---:|---:|---:|",
        clips.len(),
        model_dir.display(),
        whisper.model.dtype
    );
    for &b in rows {
        for &beam in &beams {
            let (results, wall) = timed(|| whisper.transcribe_many(&inputs(beam), b));
            let texts: Vec<String> = results
                .into_iter()
                .map(|r| r.map(|t| t.text).unwrap_or_default())
                .collect();
            let wer = 100.0 * clips_wer(&clips, &texts, &out.join(clips_tsv(b, beam)));
            let peak = steno_whisper::runtime::memory().peak_bytes as f64 / 1048576.0;
            let label = if beam > 1 {
                format!("{b}, beam {beam}")
            } else {
                b.to_string()
            };
            let speed = seconds / wall;
            let _ = writeln!(
                report,
                "| {label} | {wall:.2} | {speed:.1} | {wer:.2} % | {peak:.0} |"
            );
            eprintln!("rows {label}: {wall:.2} s, WER {wer:.2} %");
        }
    }
    print!("{report}");
    std::fs::write(out.join("steno-clips.md"), report).unwrap();
}

/// `steno-B.tsv`, or `steno-B-beamK.tsv` for a beam search.
fn clips_tsv(rows: usize, beam: usize) -> String {
    match beam {
        0 | 1 => format!("steno-{rows}.tsv"),
        k => format!("steno-{rows}-beam{k}.tsv"),
    }
}

/// The corpus WER of `texts` against the clips' references; writes the hypotheses to
/// `tsv` (`key<TAB>text`).
fn clips_wer(clips: &[assets::Clip], texts: &[String], tsv: &std::path::Path) -> f64 {
    let stats = steno_e2e::wer::corpus_stats(
        clips
            .iter()
            .zip(texts)
            .map(|(c, t)| (c.reference.as_str(), t.as_str())),
    );
    let hyps: String = clips
        .iter()
        .zip(texts)
        .map(|(c, t)| format!("{}\t{}\n", c.speech_key(), tsv_field(t)))
        .collect();
    std::fs::write(tsv, hyps).unwrap();
    stats.wer()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // STENO_BENCH_KERNELS=off: MLX's own ops instead of Steno's CPU encoder kernels, to
    // compare transcripts and times of the two.
    if std::env::var("STENO_BENCH_KERNELS").as_deref() == Ok("off") {
        steno_whisper::cpu::set_enabled(false);
    }
    match args.get(1).map(String::as_str) {
        Some("--turbo-random") => turbo_random(args.get(2).cloned()),
        Some("--turbo-ops") => turbo_ops(),
        Some("--wavs16") => write_wavs16(std::path::Path::new(&args[2])),
        Some("--score") => score(&args[2..]),
        Some("--steps") => {
            let whisper = Whisper::load(std::path::Path::new(&args[2]), &LoadOptions::default())
                .expect("load model");
            let rows = env_list("STENO_BENCH_STEP_ROWS", &[1, 8, 32, 64]);
            print!("{}", decoder_steps(&whisper, &rows));
        }
        Some("--clips") => {
            let rows: Vec<usize> = args[3].split(',').filter_map(|x| x.parse().ok()).collect();
            clips_throughput(
                std::path::Path::new(&args[2]),
                &rows,
                std::path::Path::new(&args[4]),
            )
        }
        _ => model_bench(),
    }
}

/// `rows` greedy rows on `features` that never emit EOT (no timestamps, no length or
/// degeneracy stop): one token per row per step for as long as a bench steps them.
fn endless_rows(whisper: &Whisper, features: &AudioFeatures, rows: usize) -> Vec<RowSpec> {
    let mut rules = whisper.row_rules(&TranscribeOptions::default()).unwrap();
    rules.suppress_tokens.push(rules.specials.eot);
    rules.timestamps = None;
    rules.sample_len = 10_000;
    rules.stop_degenerate = false;
    let rules = std::sync::Arc::new(rules);
    let sot = whisper
        .tokenizer
        .sot_sequence(Some("en"), Task::Transcribe)
        .unwrap();
    (0..rows)
        .map(|i| RowSpec {
            id: i as u64,
            initial_tokens: sot.clone(),
            sot_index: 0,
            temperature: 0.0,
            seed: 0,
            rules: rules.clone(),
            features: features.clone(),
            max_tokens: usize::MAX,
            search: Search::Single,
        })
        .collect()
}

/// Decoder step time at each row count, the three [`StepKind`]s side by side: their
/// batches step in turn (one step each, round after round), so each ratio is measured
/// back to back. Rows never emit EOT; the first steps (the compiled step's traces) are
/// left out, then the median of 40 steps.
fn decoder_steps(whisper: &Whisper, rows: &[usize]) -> String {
    let dims = &whisper.model.dims;
    let jfk = decode(&assets::jfk().path);
    let mel = whisper.mel(&jfk);
    let mut window = mel.window(0, 3000);
    window.resize(3000 * dims.n_mels, 0.0);
    let features = whisper.encode(&[window]).unwrap().remove(0);
    let kinds = [StepKind::Dynamic, StepKind::Static, StepKind::Compiled];
    let mut report = format!(
        "\nDecoder step ms ({} layers, state {}, {:?}; median of 40 steps)\n\n\
         | rows | dynamic | static | compiled | compiled / dynamic | ms / token (best) |\n\
         |---|---|---|---|---|---|\n",
        dims.n_text_layer, dims.n_text_state, whisper.model.dtype,
    );
    let mut profiles = Vec::new();
    for &n in rows {
        let specs = || endless_rows(whisper, &features, n);
        let mut batches: Vec<Batch> = kinds
            .iter()
            .map(|&kind| {
                let mut batch = Batch::with_kind(&whisper.model, kind);
                batch.admit(&whisper.model, specs()).unwrap();
                batch
            })
            .collect();
        let mut times = vec![Vec::new(); kinds.len()];
        for round in 0..45 {
            for (batch, times) in batches.iter_mut().zip(&mut times) {
                let t = timed(|| batch.step(&whisper.model).unwrap()).1;
                if round >= 5 {
                    times.push(t * 1e3);
                }
            }
        }
        let ms: Vec<f64> = times.into_iter().map(median).collect();
        let best = ms.iter().cloned().fold(f64::INFINITY, f64::min);
        profiles.push((
            format!("{n} rows"),
            profiled(|| batches[0].step(&whisper.model).unwrap()),
        ));
        let _ = writeln!(
            report,
            "| {n} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            ms[0],
            ms[1],
            ms[2],
            ms[2] / ms[0],
            best / n as f64
        );
    }
    report.push_str(&stage_table(
        "Dynamic decoder step, seconds per stage (rest: logits, sampling, cache upkeep)",
        &profiles,
    ));
    report
}

/// The stages of the median (by total) of 5 profiled calls of `f`, plus the time no
/// stage mark covered as `rest`.
fn profiled<T>(mut f: impl FnMut() -> T) -> Vec<(&'static str, f64)> {
    let mut runs: Vec<_> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let (_, mut stages) = steno_whisper::runtime::profile(&mut f);
            let wall = start.elapsed().as_secs_f64();
            stages.push(("rest", (wall - total(&stages)).max(0.0)));
            stages
        })
        .collect();
    runs.sort_by(|a, b| total(a).total_cmp(&total(b)));
    runs.swap_remove(2)
}

/// A Markdown table of stage seconds and shares, one column pair per profile.
fn stage_table(title: &str, columns: &[(String, Vec<(&'static str, f64)>)]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for (_, stages) in columns {
        for (name, _) in stages {
            if !names.contains(name) {
                names.push(name);
            }
        }
    }
    let mut report = format!("\n{title}\n\n| stage |");
    for (label, _) in columns {
        let _ = write!(report, " {label} | share |");
    }
    report.push_str("\n|---|");
    report.push_str(&"---:|---:|".repeat(columns.len()));
    for name in names.iter().copied().chain(["total"]) {
        let _ = write!(report, "\n| {name} |");
        for (_, stages) in columns {
            let seconds = match name {
                "total" => total(stages),
                _ => stages
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0.0, |(_, s)| *s),
            };
            let _ = write!(
                report,
                " {seconds:.4} | {:.0} % |",
                100.0 * seconds / total(stages)
            );
        }
    }
    report.push('\n');
    report
}

/// Where one encoder window's time goes, MLX's ops vs Steno's CPU kernels (median of 3
/// profiled windows each; every stage evaluated on its own, see `runtime::profile`).
/// Where one encoder window's time goes, MLX's ops vs Steno's CPU kernels (median of 5
/// profiled windows each; every stage evaluated on its own, see `runtime::profile`).
fn encoder_stages(whisper: &Whisper) -> String {
    let n_mels = whisper.model.dims.n_mels as i32;
    let mel = Array::from_slice(&vec![0.05f32; 3000 * n_mels as usize], &[1, 3000, n_mels]);
    let mut columns: Vec<(String, Vec<(&'static str, f64)>)> = Vec::new();
    steno_whisper::runtime::set_cpu_lanes(0);
    for kernels in [false, true] {
        steno_whisper::cpu::set_enabled(kernels);
        if kernels && !steno_whisper::cpu::available() {
            continue;
        }
        let forward = || whisper.model.encoder.forward(&mel).unwrap().eval().unwrap();
        forward();
        let label = if kernels { "CPU kernels" } else { "MLX ops" };
        columns.push((label.to_string(), profiled(forward)));
    }
    stage_table("Encoder window, seconds per stage", &columns)
}

fn total(stages: &[(&'static str, f64)]) -> f64 {
    stages.iter().map(|(_, s)| s).sum()
}

/// `bench [MODEL_DIR]`: see the header.
/// Long on purpose: a benchmark script whose measurements run and print in the order of
/// the report it writes; splitting it would scatter one table over several functions.
fn model_bench() {
    let model_dir = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| assets::model_dir(assets::TINY_EN));
    let whisper = Whisper::load(&model_dir, &LoadOptions::default()).expect("load model");
    let dims = &whisper.model.dims;
    let mut report = String::new();
    let _ = writeln!(report, "# steno-whisper bench: {}\n", model_dir.display());
    let _ = writeln!(
        report,
        "device dtype {:?}, {} encoder layers, state {}\n",
        whisper.model.dtype, dims.n_audio_layer, dims.n_audio_state
    );

    let d = dims.n_audio_state as i32;
    let roofline = gemm_gflops(dims.n_audio_ctx as i32, d, 4 * d, whisper.model.dtype);
    let big = gemm_gflops(1024, 1024, 1024, whisper.model.dtype);
    let _ = writeln!(report, "| GEMM | GFLOP/s |\n|---|---|\n| {}×{}·{}×{} (encoder MLP) | {roofline:.1} |\n| 1024³ | {big:.1} |\n", dims.n_audio_ctx, d, d, 4 * d);

    let flops = encoder_flops(&whisper);
    let _ = writeln!(
        report,
        "| CPU kernels | CPU lanes | encoder batch | s / window | GFLOP/s | share of GEMM roofline |\n|---|---|---|---|---|---|"
    );
    // MLX's own ops on one stream, then over the default lanes (one per core; none on a
    // GPU), then Steno's CPU kernels (steno_whisper::cpu; where this CPU runs them).
    let cases = [
        (false, 1usize, 1usize),
        (false, 0, 1),
        (false, 0, 4),
        (true, 0, 1),
        (true, 0, 4),
    ];
    for (kernels, lanes, batch) in cases {
        steno_whisper::cpu::set_enabled(kernels);
        if kernels && !steno_whisper::cpu::available() {
            continue;
        }
        steno_whisper::runtime::set_cpu_lanes(lanes);
        let mels: Vec<Vec<f32>> = (0..batch)
            .map(|i| vec![0.05 * i as f32; 3000 * dims.n_mels])
            .collect();
        whisper.encode(&mels).unwrap();
        let runs: Vec<f64> = (0..3)
            .map(|_| timed(|| whisper.encode(&mels).unwrap()).1)
            .collect();
        let per_window = median(runs) / batch as f64;
        let gflops = flops / per_window / 1e9;
        let _ = writeln!(
            report,
            "| {} | {} | {batch} | {per_window:.3} | {gflops:.1} | {:.0} % |",
            if kernels { "on" } else { "off" },
            if lanes == 1 { "off" } else { "per core" },
            100.0 * gflops / roofline
        );
    }

    report.push_str(&encoder_stages(&whisper));
    report.push_str(&quantized_report(dims));

    // Decoder steps: B rows that never emit EOT, timed per step, each way of stepping.
    report.push_str(&decoder_steps(
        &whisper,
        &env_list("STENO_BENCH_STEP_ROWS", &[1, 4, 16, 64]),
    ));

    if std::env::var_os("STENO_BENCH_KERNELS_ONLY").is_some() {
        print!("{report}");
        return;
    }
    let clips = assets::english_clips();
    let options = TranscribeOptions {
        language: Some("en".into()),
        ..TranscribeOptions::default()
    };
    let mut long = Vec::new();
    for clip in clips.iter().step_by(3) {
        long.extend(decode(&clip.path));
        // 0.6 s of silence between clips.
        long.extend(std::iter::repeat_n(
            0f32,
            steno_audio::SAMPLE_RATE as usize * 6 / 10,
        ));
        if long.len() >= steno_audio::SAMPLE_RATE as usize * 300 {
            break;
        }
    }
    let long_seconds = steno_audio::seconds(long.len());
    let _ = writeln!(
        report,
        "\n| case | audio s | wall s | audio s / wall s |\n|---|---|---|---|"
    );
    for mode in [Mode::Sequential, Mode::Parallel] {
        let opts = TranscribeOptions {
            mode,
            ..options.clone()
        };
        let (_, wall) = timed(|| whisper.transcribe_many(&[(&long, opts)], 16));
        let _ = writeln!(
            report,
            "| long file, {mode:?} | {long_seconds:.0} | {wall:.1} | {:.2} |",
            long_seconds / wall
        );
    }
    let short: Vec<Vec<f32>> = clips
        .iter()
        .step_by(17)
        .take(32)
        .map(|c| decode(&c.path))
        .collect();
    let short_seconds: f64 = short.iter().map(|s| steno_audio::seconds(s.len())).sum();
    let inputs: Vec<(&[f32], TranscribeOptions)> = short
        .iter()
        .map(|s| (s.as_slice(), options.clone()))
        .collect();
    for rows in [1usize, 16] {
        let (_, wall) = timed(|| whisper.transcribe_many(&inputs, rows));
        let label = if rows == 1 {
            "unbatched (1 row)"
        } else {
            "batched (16 rows)"
        };
        let _ = writeln!(
            report,
            "| {} short clips, {label} | {short_seconds:.0} | {wall:.1} | {:.2} |",
            short.len(),
            short_seconds / wall
        );
    }
    print!("{report}");
    let _ = std::fs::create_dir_all("target/bench");
    let _ = std::fs::write("target/bench/whisper.md", &report);
}
