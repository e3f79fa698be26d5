use std::time::Instant;
fn read_wav16(path: &str) -> Vec<f32> {
    let b = std::fs::read(path).unwrap();
    let mut i = 12;
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let n = u32::from_le_bytes(b[i + 4..i + 8].try_into().unwrap()) as usize;
        if id == b"data" {
            return b[i + 8..i + 8 + n]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0)
                .collect();
        }
        i += 8 + n;
    }
    panic!("no data")
}
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let t = Instant::now();
    let w =
        steno_whisper::Whisper::load(std::path::Path::new(&args[1]), &Default::default()).unwrap();
    eprintln!("load {:?}", t.elapsed());
    let audio = read_wav16(&args[2]);
    let t = Instant::now();
    let r = w.transcribe(&audio, Default::default()).unwrap();
    eprintln!("transcribe {:?}", t.elapsed());
    for s in &r.segments {
        println!("[{:.2} - {:.2}] {}", s.start, s.end, s.text);
    }
    println!("{}", r.text);
}
