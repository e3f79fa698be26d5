//! `make bench`: throughput of steno-whisper on this machine, printed as a table
//! and written to target/bench/whisper.md.
//!
//! * GEMM roofline: fp32 matmul of the encoder's MLP shape, the best this backend does.
//! * Encoder: seconds per 30 s window at batch 1 and 4, and its achieved GFLOP/s as a
//!   share of that roofline.
//! * One long file (clips joined with pauses) in `sequential` and `batched` modes.
//! * Short clips, one row at a time vs batched across clips.
//!
//! Usage: bench [MODEL_DIR] (default: tiny.en from the test assets).

use std::fmt::Write as _;
use std::time::Instant;

use mlx_rs::Dtype;
use steno_e2e::assets;
use steno_whisper::decoding::{Batch, RowSpec};
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

fn gemm_gflops(m: i32, k: i32, n: i32, dtype: Dtype) -> f64 {
    let a = mlx_rs::random::normal::<f32>(&[m, k], None, None, None)
        .unwrap()
        .as_dtype(dtype)
        .unwrap();
    let b = mlx_rs::random::normal::<f32>(&[k, n], None, None, None)
        .unwrap()
        .as_dtype(dtype)
        .unwrap();
    a.matmul(&b).unwrap().eval().unwrap();
    let runs: Vec<f64> = (0..7)
        .map(|_| timed(|| a.matmul(&b).unwrap().eval().unwrap()).1)
        .collect();
    2.0 * m as f64 * k as f64 * n as f64 / median(runs) / 1e9
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

fn main() {
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
        "| encoder batch | s / window | GFLOP/s | share of GEMM roofline |\n|---|---|---|---|"
    );
    for batch in [1usize, 4] {
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
            "| {batch} | {per_window:.3} | {gflops:.1} | {:.0} % |",
            100.0 * gflops / roofline
        );
    }

    // Decoder steps: B rows that never emit EOT, timed per step.
    let jfk = decode(&assets::jfk().path);
    let mel = whisper.mel(&jfk);
    let mut window = mel.window(0, 3000);
    window.resize(3000 * dims.n_mels, 0.0);
    let features = whisper.encode(&[window]).unwrap().remove(0);
    let mut rules = whisper.row_rules(&TranscribeOptions::default()).unwrap();
    rules.suppress_tokens.push(rules.specials.eot);
    rules.timestamps = None;
    rules.sample_len = 10_000;
    let rules = std::sync::Arc::new(rules);
    let _ = writeln!(
        report,
        "\n| decoder batch | ms / step | ms / token |\n|---|---|---|"
    );
    for rows in [1usize, 4, 16] {
        let mut batch = Batch::new(&whisper.model);
        let specs = (0..rows)
            .map(|i| RowSpec {
                id: i as u64,
                initial_tokens: whisper
                    .tokenizer
                    .sot_sequence(Some("en"), Task::Transcribe)
                    .unwrap(),
                sot_index: 0,
                temperature: 0.0,
                seed: 0,
                rules: rules.clone(),
                features: features.clone(),
            })
            .collect();
        batch.admit(&whisper.model, specs).unwrap();
        let steps: Vec<f64> = (0..40)
            .map(|_| timed(|| batch.step(&whisper.model).unwrap()).1)
            .collect();
        let step = median(steps) * 1e3;
        let _ = writeln!(report, "| {rows} | {step:.1} | {:.1} |", step / rows as f64);
    }

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
        long.extend(std::iter::repeat_n(0f32, 9600));
        if long.len() >= 16_000 * 300 {
            break;
        }
    }
    let long_seconds = long.len() as f64 / 16_000.0;
    let _ = writeln!(
        report,
        "\n| case | audio s | wall s | audio s / wall s |\n|---|---|---|---|"
    );
    for mode in [Mode::Sequential, Mode::Batched] {
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
    let short_seconds: f64 = short.iter().map(|s| s.len() as f64 / 16_000.0).sum();
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
