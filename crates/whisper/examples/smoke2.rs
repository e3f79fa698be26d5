use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let w =
        steno_whisper::Whisper::load(std::path::Path::new(&args[1]), &Default::default()).unwrap();
    let n_mels = w.model.dims.n_mels;
    for b in [1usize, 1, 4] {
        let mels: Vec<Vec<f32>> = (0..b).map(|_| vec![0.1f32; 3000 * n_mels]).collect();
        let t = Instant::now();
        let f = w.encode(&mels).unwrap();
        eprintln!("encode b={b}: {:?} ({} feats)", t.elapsed(), f.len());
    }
}
