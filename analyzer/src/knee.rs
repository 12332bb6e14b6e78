//! Kneedle (Satopää et al., 2011) for concave, increasing curves such as throughput versus
//! load, following kneed 0.9.0 with `interp_method="interp1d"` and `online=False`:
//! normalise x and y to [0, 1], take the difference curve `y − x`, find its local maxima
//! and minima (non-strict, as `argrelextrema` with `>=`/`<=`), and declare the knee at the
//! first maximum after which the difference curve falls below
//! `max − S·mean(Δx_normalised)`.

/// The knee: its x, y and normalised x.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knee {
    /// Index of the knee point.
    pub index: usize,
    /// x at the knee.
    pub x: f64,
    /// y at the knee.
    pub y: f64,
}

fn normalize(v: &[f64]) -> Option<Vec<f64>> {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let span = hi - lo;
    (span > 0.0 && span.is_finite()).then(|| v.iter().map(|a| (a - lo) / span).collect())
}

/// Indices i where `cmp(d[i], d[i-1]) && cmp(d[i], d[i+1])`, endpoints excluded (scipy's
/// default `mode='clip'` compares an endpoint with itself, which `>=` always passes; kneed
/// relies on that, so endpoints are included as scipy does).
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

/// Finds the knee of a concave, increasing curve. `x` must be increasing. Returns `None`
/// when the curve has no knee (a straight line, fewer than 3 points, constant data).
pub fn concave_increasing(x: &[f64], y: &[f64], sensitivity: f64) -> Option<Knee> {
    let n = x.len();
    if n < 3 || y.len() != n {
        return None;
    }
    let xn = normalize(x)?;
    let yn = normalize(y)?;
    let diff: Vec<f64> = yn.iter().zip(&xn).map(|(a, b)| a - b).collect();
    let maxima = extrema(&diff, |a, b| a >= b);
    let minima = extrema(&diff, |a, b| a <= b);
    let first = *maxima.first()?;
    let mean_step = xn.windows(2).map(|w| w[1] - w[0]).sum::<f64>() / (n - 1) as f64;
    let thresholds: Vec<f64> = maxima
        .iter()
        .map(|&i| diff[i] - sensitivity * mean_step.abs())
        .collect();
    let mut threshold = 0.0;
    let mut threshold_index = 0usize;
    let mut maxima_seen = 0usize;
    for i in first..n {
        if i == n - 1 {
            break;
        }
        if maxima.contains(&i) {
            threshold = thresholds[maxima_seen];
            threshold_index = i;
            maxima_seen += 1;
        }
        if minima.contains(&i) {
            threshold = 0.0;
        }
        if diff[i + 1] < threshold {
            return Some(Knee {
                index: threshold_index,
                x: x[threshold_index],
                y: y[threshold_index],
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturating_throughput_has_its_knee_at_saturation() {
        let x = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
        let y = [1.0, 2.0, 4.0, 8.0, 15.0, 15.5, 15.2];
        let k = concave_increasing(&x, &y, 1.0).unwrap();
        assert_eq!(k.x, 16.0);
    }

    #[test]
    fn straight_line_has_no_knee() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(concave_increasing(&x, &x, 1.0), None);
        assert_eq!(concave_increasing(&[1.0, 2.0], &[1.0, 2.0], 1.0), None);
        assert_eq!(concave_increasing(&x, &[2.0; 4], 1.0), None);
    }
}
