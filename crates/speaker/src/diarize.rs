//! Diarization: speech regions → sliding windows → embeddings → clusters → speaker turns.

use steno_audio::vad::{speech_regions, VadParams};

use crate::encoder::{VoiceEncoder, WINDOW_FRAMES};
use crate::error::{Result, SpeakerError};
use crate::mel::{volume_gain, MelFrontEnd, HOP, N_MELS};
use crate::{cluster, Embedding};

/// Most speakers a caller may ask for (and the default maximum).
pub const MAX_SPEAKERS: usize = 16;
/// A cluster takes a known speaker's name when their embeddings' cosine is at least this.
pub const KNOWN_SPEAKER_SIMILARITY: f32 = 0.75;
/// Clusters stay apart while their average cosine similarity is below this. Tuned on
/// the test conversations (crates/speaker/tests/conversations.rs): 0.60–0.65 give the
/// same turns there; 0.72 split the noisier recordings (jfk, CMU) into extra speakers.
const CLUSTER_SIMILARITY: f32 = 0.62;
/// A cluster of fewer windows than this (about 2.4 s of speech) is a few odd windows of
/// another voice (a cough, a word at a turn's edge), not a speaker: its windows join the
/// nearest larger cluster, unless that would leave fewer than `min_speakers`.
const MIN_CLUSTER_WINDOWS: usize = 3;
/// Frames between window starts inside a speech region (0.8 s: windows overlap by half).
const HOP_FRAMES: usize = 80;
/// At most this many windows are clustered (the clustering's memory is quadratic):
/// longer files cluster an even subsample and give every other window its nearest
/// cluster.
const MAX_CLUSTERED: usize = 2000;
/// Windows embedded per [`Diarization::advance`] call by the engine, between two decoder
/// steps of the other jobs: a pass is 480 sequential LSTM steps whatever its batch, so
/// larger passes cost less in all but hold the other jobs' next step longer.
pub const WINDOWS_PER_PASS: usize = 64;
/// Windows per pass when nothing waits: [`diarize`].
const MAX_PASS_WINDOWS: usize = 256;
/// Same-speaker turns closer than this are one turn (a breath between sentences);
/// a longer pause ends the turn, as annotators mark it.
const JOIN_GAP_SECONDS: f64 = 0.5;

/// `[start, end)` seconds of one speaker's speech.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerTurn {
    pub start: f64,
    pub end: f64,
    pub speaker: String,
}

/// A voice the caller names, from a reference clip's [`VoiceEncoder::embed_utterance`].
#[derive(Debug, Clone, PartialEq)]
pub struct KnownSpeaker {
    pub name: String,
    pub embedding: Embedding,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiarizeOptions {
    /// At least this many speakers (default 1).
    pub min_speakers: Option<usize>,
    /// At most this many speakers (default [`MAX_SPEAKERS`]).
    pub max_speakers: Option<usize>,
    pub known: Vec<KnownSpeaker>,
}

impl DiarizeOptions {
    /// The bounds, checked: `1 <= min <= max <= MAX_SPEAKERS`.
    pub fn bounds(&self) -> Result<(usize, usize)> {
        let min = self.min_speakers.unwrap_or(1);
        let max = self.max_speakers.unwrap_or(MAX_SPEAKERS.max(min));
        if min == 0 || min > max || max > MAX_SPEAKERS {
            return Err(SpeakerError::InvalidOption(format!(
                "min_speakers ({min}) and max_speakers ({max}) must satisfy \
                 1 <= min_speakers <= max_speakers <= {MAX_SPEAKERS}"
            )));
        }
        Ok((min, max))
    }
}

/// Who speaks when in 16 kHz `samples`, in one call (see [`Diarization`] for steps).
pub fn diarize(
    encoder: &VoiceEncoder,
    samples: &[f32],
    options: &DiarizeOptions,
) -> Result<Vec<SpeakerTurn>> {
    let mut job = Diarization::new(encoder.front_end(), samples, options.clone())?;
    // Nothing else to interleave with: the largest passes, fewest sequential LSTM steps.
    while !job.advance(encoder, MAX_PASS_WINDOWS)? {}
    Ok(job.finish())
}

/// One window to embed: its speech region, where its frames start in the region's mel,
/// and the centre of the audio it covers (in samples of the file).
#[derive(Debug, Clone)]
struct Window {
    region: usize,
    first_frame: usize,
    centre: usize,
}

/// A diarization in steps: [`Diarization::new`] does the CPU work (VAD, mel, windows),
/// [`Diarization::advance`] embeds some windows (MLX), [`Diarization::finish`] clusters
/// and makes the turns.
pub struct Diarization {
    options: DiarizeOptions,
    bounds: (usize, usize),
    regions: Vec<(usize, usize)>,
    /// Each region's mel (level raised as Resemblyzer raises an utterance's), kept until
    /// its windows are embedded: 16 kB a second of speech, half what the overlapping
    /// windows' own frames would take.
    region_mels: Vec<Vec<f32>>,
    windows: Vec<Window>,
    embeddings: Vec<Embedding>,
}

impl Diarization {
    pub fn new(front: &MelFrontEnd, samples: &[f32], options: DiarizeOptions) -> Result<Self> {
        let bounds = options.bounds()?;
        let regions = speech_regions(samples, &VadParams::default());
        let region_mels = regions
            .iter()
            .map(|&(start, end)| {
                let audio = &samples[start..end];
                let gain = volume_gain(audio);
                front.mel(&audio.iter().map(|&x| x * gain).collect::<Vec<f32>>())
            })
            .collect();
        let windows = regions
            .iter()
            .enumerate()
            .flat_map(|(r, &(start, end))| region_windows(r, start, end))
            .collect();
        Ok(Diarization {
            options,
            bounds,
            regions,
            region_mels,
            windows,
            embeddings: Vec::new(),
        })
    }

    /// Windows still to embed.
    pub fn remaining(&self) -> usize {
        self.windows.len() - self.embeddings.len()
    }

    /// Embeds up to `max_windows` more windows in one batched pass; true when none is
    /// left.
    pub fn advance(&mut self, encoder: &VoiceEncoder, max_windows: usize) -> Result<bool> {
        let done = self.embeddings.len();
        let next = &self.windows[done..(done + max_windows.max(1)).min(self.windows.len())];
        if !next.is_empty() {
            let mut mels = Vec::with_capacity(next.len() * WINDOW_FRAMES * N_MELS);
            for w in next {
                let mel = &self.region_mels[w.region];
                let from = (w.first_frame * N_MELS).min(mel.len());
                let to = ((w.first_frame + WINDOW_FRAMES) * N_MELS).min(mel.len());
                mels.extend_from_slice(&mel[from..to]);
                // A region shorter than a window: zeros, as Resemblyzer pads.
                mels.resize(mels.len() + WINDOW_FRAMES * N_MELS - (to - from), 0.0);
            }
            self.embeddings.extend(encoder.embed_mels(&mels)?);
            // Regions whose every window is embedded give their mel back.
            let done_regions = self
                .windows
                .get(self.embeddings.len())
                .map_or(self.regions.len(), |w| w.region);
            for mel in &mut self.region_mels[..done_regions] {
                *mel = Vec::new();
            }
        }
        Ok(self.remaining() == 0)
    }

    /// The speaker turns (call after [`Diarization::advance`] returned true; windows not
    /// embedded by then are left out).
    pub fn finish(self) -> Vec<SpeakerTurn> {
        let n = self.embeddings.len();
        if n == 0 {
            return Vec::new();
        }
        let labels = label_windows(&self.embeddings, self.bounds);
        let names = name_clusters(&self.embeddings, &labels, &self.options.known);
        let pieces = region_pieces(&self.regions, &self.windows[..n], &labels);
        join_turns(pieces, &names)
    }
}

/// The windows of speech region `r` (`[start, end)` samples): one every [`HOP_FRAMES`],
/// the last ending at the region's end; a region shorter than a window has one,
/// zero-padded.
fn region_windows(r: usize, start: usize, end: usize) -> Vec<Window> {
    let frames = (end - start) / HOP;
    let mut starts: Vec<usize> = (0..frames.saturating_sub(WINDOW_FRAMES) + 1)
        .step_by(HOP_FRAMES)
        .collect();
    let last = frames.saturating_sub(WINDOW_FRAMES);
    if starts.last() != Some(&last) {
        starts.push(last);
    }
    starts
        .into_iter()
        .map(|f| {
            let covered = (WINDOW_FRAMES * HOP).min(end - start);
            Window {
                region: r,
                first_frame: f,
                centre: start + f * HOP + covered / 2,
            }
        })
        .collect()
}

/// A cluster label per window. Past [`MAX_CLUSTERED`] windows, an even subsample is
/// clustered and the rest take their nearest cluster's label.
fn label_windows(embeddings: &[Embedding], (min, max): (usize, usize)) -> Vec<usize> {
    let n = embeddings.len();
    if n <= MAX_CLUSTERED {
        let labels = cluster(embeddings, CLUSTER_SIMILARITY, min, max);
        return absorb_small_clusters(embeddings, labels, min);
    }
    let picked: Vec<usize> = (0..MAX_CLUSTERED).map(|i| i * n / MAX_CLUSTERED).collect();
    let sample: Vec<Embedding> = picked.iter().map(|&i| embeddings[i].clone()).collect();
    let sample_labels = cluster(&sample, CLUSTER_SIMILARITY, min, max);
    let sample_labels = absorb_small_clusters(&sample, sample_labels, min);
    let k = sample_labels.iter().max().map_or(0, |m| m + 1);
    let centroids: Vec<Embedding> = (0..k)
        .map(|c| centroid(&sample, &sample_labels, c))
        .collect();
    embeddings
        .iter()
        .map(|e| nearest(e, &centroids).0)
        .collect()
}

/// Clusters smaller than [`MIN_CLUSTER_WINDOWS`] merged into the nearest larger one
/// (by mean embedding), while at least `min_speakers` larger ones exist; labels
/// renumbered in order of first appearance.
fn absorb_small_clusters(
    embeddings: &[Embedding],
    labels: Vec<usize>,
    min_speakers: usize,
) -> Vec<usize> {
    let k = labels.iter().max().map_or(0, |m| m + 1);
    let mut sizes = vec![0usize; k];
    labels.iter().for_each(|&l| sizes[l] += 1);
    let large: Vec<usize> = (0..k)
        .filter(|&c| sizes[c] >= MIN_CLUSTER_WINDOWS)
        .collect();
    if large.len() == k || large.is_empty() || large.len() < min_speakers {
        return labels;
    }
    let centroids: Vec<Embedding> = large
        .iter()
        .map(|&c| centroid(embeddings, &labels, c))
        .collect();
    let merged: Vec<usize> = labels
        .iter()
        .zip(embeddings)
        .map(|(&l, e)| match sizes[l] >= MIN_CLUSTER_WINDOWS {
            true => l,
            false => large[nearest(e, &centroids).0],
        })
        .collect();
    in_order_of_appearance(&merged)
}

/// The normalised mean embedding of cluster `c`.
fn centroid(embeddings: &[Embedding], labels: &[usize], c: usize) -> Embedding {
    let members: Vec<Embedding> = embeddings
        .iter()
        .zip(labels)
        .filter(|(_, &l)| l == c)
        .map(|(e, _)| e.clone())
        .collect();
    Embedding::mean(&members)
}

/// Labels renumbered 0, 1, … in order of first appearance.
fn in_order_of_appearance(labels: &[usize]) -> Vec<usize> {
    let mut seen: Vec<usize> = Vec::new();
    labels
        .iter()
        .map(|l| match seen.iter().position(|s| s == l) {
            Some(i) => i,
            None => {
                seen.push(*l);
                seen.len() - 1
            }
        })
        .collect()
}

/// Index and cosine of the most similar of `candidates`.
fn nearest(e: &Embedding, candidates: &[Embedding]) -> (usize, f32) {
    candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (i, e.cosine(c)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, f32::NEG_INFINITY))
}

/// A name per cluster label: the known speaker its mean embedding is closest to (when
/// at least [`KNOWN_SPEAKER_SIMILARITY`]), else "A", "B", … in order of first appearance
/// (labels are numbered in that order).
fn name_clusters(
    embeddings: &[Embedding],
    labels: &[usize],
    known: &[KnownSpeaker],
) -> Vec<String> {
    let k = labels.iter().max().map_or(0, |m| m + 1);
    let known_embeddings: Vec<Embedding> = known.iter().map(|s| s.embedding.clone()).collect();
    let mut unnamed = 0;
    (0..k)
        .map(|c| {
            let (best, similarity) = nearest(&centroid(embeddings, labels, c), &known_embeddings);
            if similarity >= KNOWN_SPEAKER_SIMILARITY {
                known[best].name.clone()
            } else {
                unnamed += 1;
                speaker_name(unnamed - 1)
            }
        })
        .collect()
}

/// "A", "B", …, "Z", "AA", "AB", …: the name of the `i`-th unnamed speaker.
pub fn speaker_name(mut i: usize) -> String {
    let mut name = Vec::new();
    loop {
        name.push(b'A' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    name.reverse();
    String::from_utf8(name).expect("ASCII letters")
}

/// Each region cut where its windows' labels change, half-way between the centres of
/// the two windows: `(start, end, label)` in samples.
fn region_pieces(
    regions: &[(usize, usize)],
    windows: &[Window],
    labels: &[usize],
) -> Vec<(usize, usize, usize)> {
    let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
    let mut previous: Option<(usize, usize)> = None; // (region, centre)
    for (w, &label) in windows.iter().zip(labels) {
        match (pieces.last_mut(), previous) {
            (Some(last), Some((region, _))) if region == w.region && last.2 == label => {}
            (Some(last), Some((region, centre))) if region == w.region => {
                let cut = (centre + w.centre) / 2;
                last.1 = cut;
                pieces.push((cut, regions[w.region].1, label));
            }
            _ => pieces.push((regions[w.region].0, regions[w.region].1, label)),
        }
        previous = Some((w.region, w.centre));
    }
    pieces
}

/// Pieces → turns in seconds, joining a speaker's pieces across short pauses.
fn join_turns(pieces: Vec<(usize, usize, usize)>, names: &[String]) -> Vec<SpeakerTurn> {
    let seconds = |s: usize| s as f64 / steno_audio::SAMPLE_RATE as f64;
    let mut turns: Vec<SpeakerTurn> = Vec::new();
    for (start, end, label) in pieces {
        let (start, end) = (seconds(start), seconds(end));
        match turns.last_mut() {
            Some(last) if last.speaker == names[label] && start - last.end < JOIN_GAP_SECONDS => {
                last.end = end;
            }
            _ => turns.push(SpeakerTurn {
                start,
                end,
                speaker: names[label].clone(),
            }),
        }
    }
    turns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaker_names_run_past_z() {
        let names: Vec<String> = [0, 1, 25, 26, 27, 701, 702].map(speaker_name).to_vec();
        assert_eq!(names, ["A", "B", "Z", "AA", "AB", "ZZ", "AAA"]);
    }

    #[test]
    fn small_clusters_join_the_nearest_voice_unless_too_few_are_left() {
        let e = |x: f32, y: f32| {
            let n = (x * x + y * y).sqrt();
            Embedding(vec![x / n, y / n])
        };
        // Voice 0 (4 windows), an odd pair near voice 2, voice 2 (3 windows).
        let embeddings = [
            e(1.0, 0.0),
            e(1.0, 0.1),
            e(0.3, 1.0),
            e(0.2, 1.0),
            e(1.0, 0.0),
            e(0.0, 1.0),
            e(0.0, 1.0),
            e(0.1, 1.0),
            e(1.0, 0.0),
        ];
        let labels = vec![0, 0, 1, 1, 0, 2, 2, 2, 0];
        let merged = absorb_small_clusters(&embeddings, labels.clone(), 1);
        assert_eq!(merged, [0, 0, 1, 1, 0, 1, 1, 1, 0]);
        // Three speakers asked for: the small cluster stays.
        assert_eq!(
            absorb_small_clusters(&embeddings, labels.clone(), 3),
            labels
        );
    }

    #[test]
    fn bounds_are_checked() {
        let opts = |min, max| DiarizeOptions {
            min_speakers: min,
            max_speakers: max,
            known: Vec::new(),
        };
        assert_eq!(opts(None, None).bounds().unwrap(), (1, MAX_SPEAKERS));
        assert_eq!(opts(Some(2), Some(3)).bounds().unwrap(), (2, 3));
        for (min, max) in [
            (Some(0), None),
            (Some(3), Some(2)),
            (None, Some(MAX_SPEAKERS + 1)),
        ] {
            assert!(opts(min, max).bounds().is_err(), "{min:?} {max:?}");
        }
    }

    #[test]
    fn regions_are_cut_between_windows_of_different_voices() {
        let regions = [(0, 64_000), (80_000, 100_000)];
        let window = |centre, region| Window {
            region,
            first_frame: 0,
            centre,
        };
        let windows = [
            window(12_800, 0),
            window(25_600, 0),
            window(38_400, 0),
            window(51_200, 0),
            window(90_000, 1),
        ];
        let pieces = region_pieces(&regions, &windows, &[0, 0, 1, 1, 1]);
        assert_eq!(
            pieces,
            [(0, 32_000, 0), (32_000, 64_000, 1), (80_000, 100_000, 1)]
        );
        let names = ["A".to_string(), "B".to_string()];
        let turns = join_turns(pieces, &names);
        // B's pieces are 1 s apart, more than JOIN_GAP_SECONDS: two turns.
        assert_eq!(turns.len(), 3);
        assert_eq!((turns[1].start, turns[1].end), (2.0, 4.0));
    }
}
