//! Change points by E-divisive means (Matteson & James, 2014), as in MongoDB's
//! signal-processing-algorithms and Apache Otava: a segment is split where the energy
//! distance between the two sides is largest, the split is kept when a permutation test
//! finds it significant, and both sides are searched again.
//!
//! For a split of `Z[lo..hi)` at τ (left `L = Z[lo..τ)`, right `R = Z[τ..hi)`, sizes m, k):
//!
//! `q(τ) = mk/(m+k) · (2/(mk)·Σ|l−r| − 1/C(m,2)·Σ|l−l'| − 1/C(k,2)·Σ|r−r'|)`
//!
//! with Euclidean distances (points may be vectors). Indexes follow the convention of the
//! fixtures: a change point is the first element of the new segment.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Search settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Significance level of the permutation test.
    pub pvalue: f64,
    /// Permutations per test.
    pub permutations: usize,
    /// Smallest segment on either side of a split.
    pub min_size: usize,
    /// Seed of the permutations (results are reproducible).
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            pvalue: 0.05,
            permutations: 100,
            min_size: 3,
            seed: 1,
        }
    }
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Best split of `points` (one segment): (index within the segment, q).
fn best_split(points: &[&[f64]], min_size: usize) -> Option<(usize, f64)> {
    let n = points.len();
    if n < 2 * min_size.max(2) {
        return None;
    }
    // Row sums of distances, grown as the split point moves right.
    let d = |i: usize, j: usize| distance(points[i], points[j]);
    let mut within_left = 0.0;
    let mut within_right: f64 = (0..n)
        .flat_map(|i| ((i + 1)..n).map(move |j| (i, j)))
        .map(|(i, j)| d(i, j))
        .sum();
    let mut cross = 0.0;
    let mut best: Option<(usize, f64)> = None;
    for tau in 1..n {
        // Move point tau−1 from the right side to the left side.
        let p = tau - 1;
        let to_left: f64 = (0..p).map(|i| d(p, i)).sum();
        let to_right: f64 = ((p + 1)..n).map(|j| d(p, j)).sum();
        within_left += to_left;
        within_right -= to_right;
        cross = cross - to_left + to_right;
        let (m, k) = (tau as f64, (n - tau) as f64);
        if tau < min_size.max(2) || n - tau < min_size.max(2) {
            continue;
        }
        let pairs = |c: f64| c * (c - 1.0) / 2.0;
        let q = m * k / (m + k)
            * (2.0 * cross / (m * k) - within_left / pairs(m) - within_right / pairs(k));
        if best.is_none_or(|(_, b)| q > b) {
            best = Some((tau, q));
        }
    }
    best
}

/// Change points of a series of vectors.
pub fn e_divisive(series: &[Vec<f64>], s: &Settings) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut found = Vec::new();
    let mut segments = vec![(0usize, series.len())];
    while let Some((lo, hi)) = segments.pop() {
        let points: Vec<&[f64]> = series[lo..hi].iter().map(Vec::as_slice).collect();
        let Some((tau, q)) = best_split(&points, s.min_size) else {
            continue;
        };
        let mut shuffled = points.clone();
        let mut at_least = 0usize;
        for _ in 0..s.permutations {
            shuffled.shuffle(&mut rng);
            if best_split(&shuffled, s.min_size).is_some_and(|(_, qp)| qp >= q) {
                at_least += 1;
            }
        }
        let p = (at_least + 1) as f64 / (s.permutations + 1) as f64;
        if p <= s.pvalue {
            found.push(lo + tau);
            segments.push((lo, lo + tau));
            segments.push((lo + tau, hi));
        }
    }
    found
}

/// Change points of a series of numbers.
pub fn e_divisive_1d(series: &[f64], s: &Settings) -> Vec<usize> {
    let v: Vec<Vec<f64>> = series.iter().map(|x| vec![*x]).collect();
    let mut found = e_divisive(&v, s);
    found.sort_unstable();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_series_has_no_change_point() {
        assert!(e_divisive_1d(&[1.0; 30], &Settings::default()).is_empty());
        assert!(e_divisive_1d(&[1.0, 2.0], &Settings::default()).is_empty());
    }
}
