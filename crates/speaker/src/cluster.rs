//! Average-linkage agglomerative clustering of embeddings, by cosine distance.
//!
//! The nearest-neighbour chain builds the whole dendrogram in O(n²) time and memory
//! (average linkage is reducible, so merging mutual nearest neighbours in any order gives
//! the same tree); the merges sorted by distance then cut it into as many clusters as
//! stay apart by more than the threshold, bounded by the caller's minimum and maximum.

use crate::Embedding;

/// One merge of the dendrogram: the clusters represented by `a` and `b` joined at
/// average cosine distance `distance`.
struct Merge {
    a: usize,
    b: usize,
    distance: f32,
}

/// Cluster labels `0..k` for `embeddings`, numbered in order of first appearance.
/// `k` is the number of clusters whose average similarity stays below `similarity`,
/// clamped to `[min_k, max_k]` (and to the number of embeddings).
pub fn cluster(
    embeddings: &[Embedding],
    similarity: f32,
    min_k: usize,
    max_k: usize,
) -> Vec<usize> {
    let n = embeddings.len();
    if n == 0 {
        return Vec::new();
    }
    let mut merges = dendrogram(embeddings);
    merges.sort_by(|x, y| x.distance.total_cmp(&y.distance));
    let close = merges
        .iter()
        .filter(|m| m.distance < 1.0 - similarity)
        .count();
    let k = (n - close).clamp(min_k.max(1), max_k.max(1)).min(n);
    let mut parent: Vec<usize> = (0..n).collect();
    for m in &merges[..n - k] {
        let (ra, rb) = (root(&mut parent, m.a), root(&mut parent, m.b));
        parent[rb] = ra;
    }
    let mut labels = vec![usize::MAX; n];
    let mut names: Vec<(usize, usize)> = Vec::new(); // (root, label)
    for (i, label) in labels.iter_mut().enumerate() {
        let r = root(&mut parent, i);
        *label = match names.iter().find(|(root, _)| *root == r) {
            Some(&(_, l)) => l,
            None => {
                names.push((r, names.len()));
                names.len() - 1
            }
        };
    }
    labels
}

fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// The n − 1 merges of average linkage, by the nearest-neighbour chain.
fn dendrogram(embeddings: &[Embedding]) -> Vec<Merge> {
    let n = embeddings.len();
    let mut d = vec![0.0f32; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let v = 1.0 - embeddings[i].cosine(&embeddings[j]);
            d[i * n + j] = v;
            d[j * n + i] = v;
        }
    }
    let mut size = vec![1usize; n];
    let mut active = vec![true; n];
    let mut left = n;
    let mut chain: Vec<usize> = Vec::new();
    let mut merges = Vec::with_capacity(n.saturating_sub(1));
    while left > 1 {
        if chain.is_empty() {
            chain.push(active.iter().position(|&a| a).expect("an active cluster"));
        }
        let a = *chain.last().expect("non-empty chain");
        let previous = chain.len().checked_sub(2).map(|i| chain[i]);
        // The nearest active cluster; on a tie, the one before `a` in the chain, so
        // that the chain ends in a mutual pair.
        let mut best = previous.unwrap_or(usize::MAX);
        let mut best_d = previous.map_or(f32::INFINITY, |p| d[a * n + p]);
        for k in (0..n).filter(|&k| active[k] && k != a) {
            if d[a * n + k] < best_d {
                best = k;
                best_d = d[a * n + k];
            }
        }
        if Some(best) != previous {
            chain.push(best);
            continue;
        }
        chain.truncate(chain.len() - 2);
        let b = best;
        merges.push(Merge {
            a,
            b,
            distance: best_d,
        });
        // Lance–Williams for average linkage; the merged cluster keeps index `a`.
        let (na, nb) = (size[a] as f32, size[b] as f32);
        for k in (0..n).filter(|&k| active[k] && k != a && k != b) {
            let v = (na * d[a * n + k] + nb * d[b * n + k]) / (na + nb);
            d[a * n + k] = v;
            d[k * n + a] = v;
        }
        size[a] += size[b];
        active[b] = false;
        left -= 1;
    }
    merges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Embedding {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        Embedding(v.iter().map(|x| x / n).collect())
    }

    fn three_voices() -> Vec<Embedding> {
        // Three tight groups around the axes, interleaved in time.
        let mut out = Vec::new();
        for i in 0..12 {
            let jitter = 0.05 * (i as f32 % 3.0);
            out.push(match i % 3 {
                0 => unit(&[1.0, jitter, 0.0]),
                1 => unit(&[jitter, 1.0, 0.0]),
                _ => unit(&[0.0, jitter, 1.0]),
            });
        }
        out
    }

    #[test]
    fn finds_the_number_of_voices_itself() {
        let labels = cluster(&three_voices(), 0.8, 1, 8);
        let expected: Vec<usize> = (0..12).map(|i| i % 3).collect();
        assert_eq!(labels, expected);
    }

    #[test]
    fn bounds_win_over_the_threshold() {
        let e = three_voices();
        let two = cluster(&e, 0.8, 1, 2);
        assert_eq!(two.iter().max(), Some(&1));
        let four = cluster(&e, 0.8, 4, 8);
        assert_eq!(four.iter().max(), Some(&3));
        assert_eq!(cluster(&e[..1], 0.8, 3, 8), vec![0]);
        assert!(cluster(&[], 0.8, 1, 8).is_empty());
    }
}
