//! Kneedle (Satopää et al., 2011), following kneed 0.9.0: every curve shape and direction,
//! `interp1d` or polynomial smoothing, offline (first knee) or online (last knee), and the
//! 0.9.0 handling of uneven x spacing when the curve is mirrored.
//!
//! Steps: smooth y (identity, or a least-squares polynomial); normalise x and y to [0, 1];
//! turn the curve into a concave increasing one (mirroring y, and for mirrored curves the
//! x axis too); take the difference curve `y − x`; find its local maxima and minima
//! (non-strict, with endpoints compared to themselves, as scipy's `argrelextrema`); walk
//! the curve and declare a knee where the difference falls below the last maximum's
//! threshold `max − S·mean(Δx)`.

/// Shape of the curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// Bends down (a knee), e.g. throughput versus load.
    Concave,
    /// Bends up (an elbow), e.g. latency versus load.
    Convex,
}

/// Direction of the curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// y grows with x.
    Increasing,
    /// y falls with x.
    Decreasing,
}

/// Smoothing before the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Smoothing {
    /// The data as given (kneed's `interp1d` at the data points).
    Interp1d,
    /// A least-squares polynomial of this degree.
    Polynomial(usize),
}

/// Kneedle parameters (kneed's defaults: S = 1, concave, increasing, interp1d, offline).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Sensitivity S.
    pub sensitivity: f64,
    /// Shape.
    pub curve: Curve,
    /// Direction.
    pub direction: Direction,
    /// Smoothing.
    pub smoothing: Smoothing,
    /// Keep scanning after the first knee and return the last one.
    pub online: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            sensitivity: 1.0,
            curve: Curve::Concave,
            direction: Direction::Increasing,
            smoothing: Smoothing::Interp1d,
            online: false,
        }
    }
}

/// The knee: its index, x and y.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knee {
    /// Index of the knee point in the input.
    pub index: usize,
    /// x at the knee.
    pub x: f64,
    /// y at the knee (raw data).
    pub y: f64,
    /// x at the knee, normalised to [0, 1] (on the mirrored axis for mirrored curves, as
    /// kneed reports it).
    pub norm_x: f64,
}

/// The result: the knee (`None` when there is none) and every knee found on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The knee.
    pub knee: Option<Knee>,
    /// x of every knee found, in detection order, without repeats.
    pub all: Vec<f64>,
}

fn normalize(v: &[f64]) -> Option<Vec<f64>> {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let span = hi - lo;
    (span > 0.0 && span.is_finite()).then(|| v.iter().map(|a| (a - lo) / span).collect())
}

/// Indices where `cmp(d[i], d[i-1]) && cmp(d[i], d[i+1])`, endpoints compared with
/// themselves (scipy's `mode='clip'`).
fn extrema(d: &[f64], cmp: impl Fn(f64, f64) -> bool) -> Vec<usize> {
    let n = d.len();
    (0..n)
        .filter(|&i| {
            let prev = d[i.saturating_sub(1)];
            let next = d[(i + 1).min(n - 1)];
            cmp(d[i], prev) && cmp(d[i], next)
        })
        .collect()
}

/// Least-squares polynomial of `degree` through (x, y), evaluated at x. Columns of the
/// Vandermonde matrix are scaled to unit norm and the system is solved by Householder QR,
/// as numpy's `polyfit` scales before its least-squares solve.
// Matrix algorithms read best with explicit row and column indices.
#[allow(clippy::needless_range_loop)]
pub fn polyfit_eval(x: &[f64], y: &[f64], degree: usize) -> Option<Vec<f64>> {
    let (n, m) = (x.len(), degree + 1);
    if n <= m {
        // As many coefficients as points or more: the least-squares (minimum-norm)
        // polynomial passes through every point.
        return Some(y.to_vec());
    }

    let mut a: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..m).map(|j| x[i].powi((degree - j) as i32)).collect())
        .collect();
    let scale: Vec<f64> = (0..m)
        .map(|j| (0..n).map(|i| a[i][j] * a[i][j]).sum::<f64>().sqrt())
        .collect();
    for row in a.iter_mut() {
        for j in 0..m {
            if scale[j] > 0.0 {
                row[j] /= scale[j];
            }
        }
    }
    let mut b = y.to_vec();
    // Householder QR, applied to b as we go.
    for k in 0..m {
        let norm = (k..n).map(|i| a[i][k] * a[i][k]).sum::<f64>().sqrt();
        if norm == 0.0 {
            return None;
        }
        let alpha = if a[k][k] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = (k..n).map(|i| a[i][k]).collect();
        v[0] -= alpha;
        let vnorm2: f64 = v.iter().map(|t| t * t).sum();
        if vnorm2 == 0.0 {
            continue;
        }
        for j in k..m {
            let dot: f64 = (k..n).map(|i| v[i - k] * a[i][j]).sum();
            let f = 2.0 * dot / vnorm2;
            for i in k..n {
                a[i][j] -= f * v[i - k];
            }
        }
        let dot: f64 = (k..n).map(|i| v[i - k] * b[i]).sum();
        let f = 2.0 * dot / vnorm2;
        for i in k..n {
            b[i] -= f * v[i - k];
        }
    }
    let mut coef = vec![0.0; m];
    for k in (0..m).rev() {
        let s: f64 = ((k + 1)..m).map(|j| a[k][j] * coef[j]).sum();
        if a[k][k] == 0.0 {
            return None;
        }
        coef[k] = (b[k] - s) / a[k][k];
    }
    for j in 0..m {
        if scale[j] > 0.0 {
            coef[j] /= scale[j];
        }
    }
    Some(
        x.iter()
            .map(|&xi| coef.iter().fold(0.0, |acc, c| acc * xi + c))
            .collect(),
    )
}

/// Finds the knee of (x, y); `x` must be increasing.
pub fn find(x: &[f64], y: &[f64], p: &Params) -> Found {
    let none = Found {
        knee: None,
        all: Vec::new(),
    };
    let n = x.len();
    if n < 2 || y.len() != n {
        return none;
    }
    let smooth = match p.smoothing {
        Smoothing::Interp1d => y.to_vec(),
        Smoothing::Polynomial(d) => match polyfit_eval(x, y, d) {
            Some(s) => s,
            None => return none,
        },
    };
    let (Some(xn0), Some(yn0)) = (normalize(x), normalize(&smooth)) else {
        return none;
    };
    let rev = |v: &[f64]| v.iter().rev().cloned().collect::<Vec<f64>>();
    let (yn, mirrored) = match (p.curve, p.direction) {
        (Curve::Concave, Direction::Increasing) => (yn0, false),
        (Curve::Concave, Direction::Decreasing) => (rev(&yn0), true),
        (Curve::Convex, Direction::Decreasing) => (yn0.iter().map(|v| 1.0 - v).collect(), false),
        (Curve::Convex, Direction::Increasing) => {
            (rev(&yn0.iter().map(|v| 1.0 - v).collect::<Vec<_>>()), true)
        }
    };
    // A mirrored curve runs along a mirrored x axis: with uneven spacing the distances
    // from the far end are what matter.
    let xn: Vec<f64> = if mirrored {
        rev(&xn0).iter().map(|v| 1.0 - v).collect()
    } else {
        xn0.clone()
    };
    let diff: Vec<f64> = yn.iter().zip(&xn).map(|(a, b)| a - b).collect();
    let maxima = extrema(&diff, |a, b| a >= b);
    let minima = extrema(&diff, |a, b| a <= b);
    let Some(&first) = maxima.first() else {
        return none;
    };
    let mean_step = xn0.windows(2).map(|w| w[1] - w[0]).sum::<f64>() / (n - 1) as f64;
    let thresholds: Vec<f64> = maxima
        .iter()
        .map(|&i| diff[i] - p.sensitivity * mean_step.abs())
        .collect();
    let (mut threshold, mut threshold_index, mut seen) = (0.0, 0usize, 0usize);
    let mut found = Found {
        knee: None,
        all: Vec::new(),
    };
    for i in first..n {
        if xn[i] == 1.0 {
            break;
        }
        if maxima.contains(&i) {
            threshold = thresholds[seen];
            threshold_index = i;
            seen += 1;
        }
        if minima.contains(&i) {
            threshold = 0.0;
        }
        if i + 1 < n && diff[i + 1] < threshold {
            let index = if mirrored {
                n - 1 - threshold_index
            } else {
                threshold_index
            };
            let knee = Knee {
                index,
                x: x[index],
                y: y[index],
                norm_x: xn[threshold_index],
            };
            if !found.all.contains(&knee.x) {
                found.all.push(knee.x);
            }
            found.knee = Some(knee);
            if !p.online {
                return found;
            }
        }
    }
    found
}

/// The knee of a concave, increasing curve (throughput versus load) with kneed's defaults.
pub fn concave_increasing(x: &[f64], y: &[f64], sensitivity: f64) -> Option<Knee> {
    find(
        x,
        y,
        &Params {
            sensitivity,
            ..Params::default()
        },
    )
    .knee
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturating_throughput_has_its_knee_at_saturation() {
        let x = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
        let y = [1.0, 2.0, 4.0, 8.0, 15.0, 15.5, 15.2];
        assert_eq!(concave_increasing(&x, &y, 1.0).unwrap().x, 16.0);
    }

    #[test]
    fn straight_line_has_no_knee() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(concave_increasing(&x, &x, 1.0), None);
        assert_eq!(concave_increasing(&[1.0, 2.0], &[1.0, 2.0], 1.0), None);
        assert_eq!(concave_increasing(&x, &[2.0; 4], 1.0), None);
    }

    #[test]
    fn polynomial_fit_recovers_a_cubic() {
        let x: Vec<f64> = (0..20).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| 2.0 * v * v * v - v + 3.0).collect();
        let fit = polyfit_eval(&x, &y, 3).unwrap();
        for (a, b) in fit.iter().zip(&y) {
            assert!((a - b).abs() < 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}

/// The point of maximum curvature `|y''| / (1 + y'²)^{3/2}` of the normalised curve, with
/// finite differences that allow uneven x spacing. An interior point; `None` with fewer
/// than 3 points or a flat curve.
pub fn max_curvature(x: &[f64], y: &[f64]) -> Option<usize> {
    let n = x.len();
    if n < 3 || y.len() != n {
        return None;
    }
    let (xn, yn) = (normalize(x)?, normalize(y)?);
    (1..n - 1)
        .filter_map(|i| {
            let (h1, h2) = (xn[i] - xn[i - 1], xn[i + 1] - xn[i]);
            if h1 <= 0.0 || h2 <= 0.0 {
                return None;
            }
            let d1 = (yn[i + 1] - yn[i - 1]) / (h1 + h2);
            let d2 = 2.0 * ((yn[i + 1] - yn[i]) / h2 - (yn[i] - yn[i - 1]) / h1) / (h1 + h2);
            Some((i, d2.abs() / (1.0 + d1 * d1).powf(1.5)))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// Why a knee of a sweep may say more about the sweep than about the service: `None`
/// when it does not.
pub fn sweep_artefact(y: &[f64], knee_index: Option<usize>) -> Option<String> {
    let n = y.len();
    if n < 3 {
        return Some("fewer than 3 levels: no knee can be trusted".into());
    }
    let (last, before) = (y[n - 1], y[n - 2]);
    if before > 0.0 && last > before * 1.10 {
        return Some(format!(
            "throughput still rises {:.0} % at the last level: the sweep stops before saturation, extend it",
            (last / before - 1.0) * 100.0
        ));
    }
    match knee_index {
        Some(i) if i + 1 >= n - 1 => {
            Some("the knee sits at the end of the sweep: extend the sweep to confirm it".into())
        }
        Some(0) => {
            Some("the knee sits at the first level: start the sweep lower to confirm it".into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod curvature_tests {
    use super::*;

    #[test]
    fn curvature_peaks_at_the_bend() {
        let x = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
        let y = [1.0, 2.0, 4.0, 8.0, 15.0, 15.5, 15.2];
        assert_eq!(max_curvature(&x, &y).map(|i| x[i]), Some(16.0));
        assert_eq!(max_curvature(&[1.0, 2.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn artefacts_of_the_sweep() {
        assert!(
            sweep_artefact(&[1.0, 2.0, 4.0, 8.0], Some(2))
                .unwrap()
                .contains("still rises")
        );
        assert!(
            sweep_artefact(&[1.0, 5.0, 6.0, 6.1], Some(2))
                .unwrap()
                .contains("end of the sweep")
        );
        assert_eq!(sweep_artefact(&[1.0, 5.0, 6.0, 6.1, 6.0], Some(1)), None);
    }
}
