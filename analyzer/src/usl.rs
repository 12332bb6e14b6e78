//! The Universal Scalability Law (Gunther): throughput at concurrency N of a closed system
//! with zero think time,
//!
//! `X(N) = λN / (1 + σ(N − 1) + κN(N − 1))`,
//!
//! with σ the contention (serial fraction), κ the coherency (crosstalk) cost and λ the
//! throughput of one worker. Fitted by Levenberg–Marquardt on unweighted throughput
//! residuals with σ and κ bounded to [0, 1] and λ ≥ 0; standard errors from the Jacobian at
//! the optimum, intervals from Student's t with n − 3 degrees of freedom.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Model parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Usl {
    /// Contention σ.
    pub sigma: f64,
    /// Coherency κ.
    pub kappa: f64,
    /// Single-worker throughput λ.
    pub lambda: f64,
}

impl Usl {
    fn denominator(&self, n: f64) -> f64 {
        1.0 + self.sigma * (n - 1.0) + self.kappa * n * (n - 1.0)
    }

    /// Throughput at concurrency `n`.
    pub fn throughput(&self, n: f64) -> f64 {
        self.lambda * n / self.denominator(n)
    }

    /// Response time at concurrency `n` (Little's law, zero think time): `N / X(N)`.
    pub fn latency(&self, n: f64) -> f64 {
        self.denominator(n) / self.lambda
    }

    /// Concurrency of peak throughput, `sqrt((1 − σ)/κ)`; `None` when κ = 0 (no peak).
    pub fn peak_concurrency(&self) -> Option<f64> {
        (self.kappa > 0.0).then(|| ((1.0 - self.sigma) / self.kappa).sqrt())
    }

    /// Peak throughput, `X(N*)`; without coherency cost the limit `λ/σ`.
    pub fn peak_throughput(&self) -> Option<f64> {
        match self.peak_concurrency() {
            Some(n) => Some(self.throughput(n)),
            None => (self.sigma > 0.0).then(|| self.lambda / self.sigma),
        }
    }

    /// Throughput reached when the response time is `r` (the positive root of
    /// `κN² + (σ − κ)N + (1 − σ) − λr = 0`, then X = N/r).
    pub fn throughput_at_latency(&self, r: f64) -> Option<f64> {
        let (a, b, c) = (
            self.kappa,
            self.sigma - self.kappa,
            1.0 - self.sigma - self.lambda * r,
        );
        let n = if a == 0.0 {
            (b != 0.0).then(|| -c / b)?
        } else {
            let disc = b * b - 4.0 * a * c;
            (disc >= 0.0).then(|| (-b + disc.sqrt()) / (2.0 * a))?
        };
        (n > 0.0 && r > 0.0).then(|| n / r)
    }

    /// Response time at throughput `x`, on the rising side of the curve; `None` when `x`
    /// exceeds the peak (no concurrency reaches it) or lies below X(1) = λ (the rising side
    /// would need fewer than one worker). Coherency is taken into account.
    pub fn latency_at_throughput(&self, x: f64) -> Option<f64> {
        // X(1 + σ(N−1) + κN(N−1)) = λN  ⇒  κX·N² + (σX − κX − λ)N + X(1 − σ) = 0
        let (a, b, c) = (
            self.kappa * x,
            self.sigma * x - self.kappa * x - self.lambda,
            x * (1.0 - self.sigma),
        );
        let n = if a == 0.0 {
            (b != 0.0).then(|| -c / b)?
        } else {
            let disc = b * b - 4.0 * a * c;
            (disc >= 0.0).then(|| (-b - disc.sqrt()) / (2.0 * a))?
        };
        (n >= 1.0 - 1e-12 && x > 0.0).then(|| n / x)
    }
}

/// A fit and its quality.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fit {
    /// Best parameters.
    pub model: Usl,
    /// Standard errors of σ, κ, λ (`None` with fewer than 4 points).
    pub se: Option<Usl>,
    /// 95 % confidence intervals of σ, κ, λ: (low, high).
    pub ci95: Option<[(f64, f64); 3]>,
    /// Covariance of (σ, κ, λ).
    pub covariance: Option<[[f64; 3]; 3]>,
    /// Student t quantile (97.5 %) for the fit's degrees of freedom.
    pub t975: Option<f64>,
    /// Residual standard error.
    pub residual_se: f64,
    /// Coefficient of determination.
    pub r_squared: f64,
    /// Concurrency of peak throughput.
    pub peak_concurrency: Option<f64>,
    /// Peak throughput.
    pub peak_throughput: Option<f64>,
    /// A parameter sits on a bound (σ or κ at 0 or 1).
    pub at_bound: bool,
    /// R² ≥ 0.95 and the fit converged.
    pub good: bool,
}

fn jacobian_row(m: &Usl, n: f64) -> [f64; 3] {
    let d = m.denominator(n);
    [
        -m.lambda * n * (n - 1.0) / (d * d),
        -m.lambda * n * n * (n - 1.0) / (d * d),
        n / d,
    ]
}

fn sse(m: &Usl, n: &[f64], x: &[f64]) -> f64 {
    n.iter()
        .zip(x)
        .map(|(&ni, &xi)| (xi - m.throughput(ni)).powi(2))
        .sum()
}

fn clamp(m: Usl) -> Usl {
    Usl {
        sigma: m.sigma.clamp(0.0, 1.0),
        kappa: m.kappa.clamp(0.0, 1.0),
        lambda: m.lambda.max(0.0),
    }
}

/// Solves a 3×3 system by Gaussian elimination with partial pivoting.
// Matrix algorithms read best with explicit row and column indices.
#[allow(clippy::needless_range_loop)]
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for k in 0..3 {
        let p = (k..3).max_by(|&i, &j| a[i][k].abs().total_cmp(&a[j][k].abs()))?;
        if a[p][k].abs() < 1e-300 {
            return None;
        }
        a.swap(k, p);
        b.swap(k, p);
        for i in (k + 1)..3 {
            let f = a[i][k] / a[k][k];
            for j in k..3 {
                a[i][j] -= f * a[k][j];
            }
            b[i] -= f * b[k];
        }
    }
    let mut x = [0.0; 3];
    for k in (0..3).rev() {
        x[k] = (b[k] - ((k + 1)..3).map(|j| a[k][j] * x[j]).sum::<f64>()) / a[k][k];
    }
    Some(x)
}

fn inverse3(a: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let mut inv = [[0.0; 3]; 3];
    for c in 0..3 {
        let mut e = [0.0; 3];
        e[c] = 1.0;
        let col = solve3(a, e)?;
        for r in 0..3 {
            inv[r][c] = col[r];
        }
    }
    Some(inv)
}

impl Fit {
    /// 95 % confidence band of the fitted throughput at `n` (delta method: the gradient of
    /// X(N) against the parameters' covariance).
    pub fn band(&self, n: f64) -> Option<(f64, f64)> {
        let (cov, t) = (self.covariance?, self.t975?);
        let g = jacobian_row(&self.model, n);
        let var: f64 = (0..3)
            .flat_map(|a| (0..3).map(move |b| (a, b)))
            .map(|(a, b)| g[a] * cov[a][b] * g[b])
            .sum();
        let x = self.model.throughput(n);
        (var >= 0.0 && t.is_finite()).then(|| (x - t * var.sqrt(), x + t * var.sqrt()))
    }
}

/// Fits the USL to (N, X) points. Needs at least 3 points with N ≥ 1 and X > 0.
pub fn fit(n: &[f64], x: &[f64]) -> Result<Fit, String> {
    if n.len() != x.len() || n.len() < 3 {
        return Err(format!(
            "need at least 3 (N, X) points, got {}",
            n.len().min(x.len())
        ));
    }
    if n.iter().any(|v| !(v.is_finite() && *v >= 1.0))
        || x.iter().any(|v| !(v.is_finite() && *v > 0.0))
    {
        return Err("every N must be ≥ 1 and every X > 0".into());
    }
    let lambda0 = n.iter().zip(x).map(|(a, b)| b / a).fold(0.0, f64::max);
    let mut m = Usl {
        sigma: 0.01,
        kappa: 0.0001,
        lambda: lambda0,
    };
    let mut cost = sse(&m, n, x);
    let mut mu = 1e-3;
    let mut converged = false;
    for _ in 0..2000 {
        let mut jtj = [[0.0; 3]; 3];
        let mut jtr = [0.0; 3];
        for (&ni, &xi) in n.iter().zip(x) {
            let j = jacobian_row(&m, ni);
            let r = xi - m.throughput(ni);
            for a in 0..3 {
                jtr[a] += j[a] * r;
                for b in 0..3 {
                    jtj[a][b] += j[a] * j[b];
                }
            }
        }
        let mut improved = false;
        while mu < 1e20 {
            let mut lhs = jtj;
            for (a, row) in lhs.iter_mut().enumerate() {
                row[a] += mu * jtj[a][a].max(1e-300);
            }
            let Some(step) = solve3(lhs, jtr) else {
                mu *= 10.0;
                continue;
            };
            let trial = clamp(Usl {
                sigma: m.sigma + step[0],
                kappa: m.kappa + step[1],
                lambda: m.lambda + step[2],
            });
            let c = sse(&trial, n, x);
            if c < cost {
                let rel = (cost - c) / cost.max(1e-300);
                m = trial;
                cost = c;
                mu = (mu / 10.0).max(1e-12);
                improved = true;
                if rel < 1e-14 {
                    converged = true;
                }
                break;
            }
            mu *= 10.0;
        }
        if !improved || converged {
            converged = true;
            break;
        }
    }
    let k = n.len();
    let mean = x.iter().sum::<f64>() / k as f64;
    let sst: f64 = x.iter().map(|v| (v - mean).powi(2)).sum();
    let r_squared = if sst > 0.0 { 1.0 - cost / sst } else { 1.0 };
    let dof = k.saturating_sub(3);
    let residual_se = if dof > 0 {
        (cost / dof as f64).sqrt()
    } else {
        0.0
    };
    let mut covariance = None;
    let mut t975 = None;
    let (se, ci95) = if dof > 0 {
        let mut jtj = [[0.0; 3]; 3];
        for &ni in n {
            let j = jacobian_row(&m, ni);
            for a in 0..3 {
                for b in 0..3 {
                    jtj[a][b] += j[a] * j[b];
                }
            }
        }
        match inverse3(jtj) {
            Some(inv) => {
                let s2 = cost / dof as f64;
                covariance = Some(inv.map(|row| row.map(|v| v * s2)));
                let se = Usl {
                    sigma: (inv[0][0] * s2).sqrt(),
                    kappa: (inv[1][1] * s2).sqrt(),
                    lambda: (inv[2][2] * s2).sqrt(),
                };
                let t = StudentsT::new(0.0, 1.0, dof as f64)
                    .map(|d| d.inverse_cdf(0.975))
                    .unwrap_or(f64::NAN);
                t975 = Some(t);
                let ci = [
                    (m.sigma - t * se.sigma, m.sigma + t * se.sigma),
                    (m.kappa - t * se.kappa, m.kappa + t * se.kappa),
                    (m.lambda - t * se.lambda, m.lambda + t * se.lambda),
                ];
                (Some(se), Some(ci))
            }
            None => (None, None),
        }
    } else {
        (None, None)
    };
    let at_bound = [m.sigma, m.kappa].iter().any(|v| *v <= 0.0 || *v >= 1.0);
    Ok(Fit {
        model: m,
        se,
        ci95,
        covariance,
        t975,
        residual_se,
        r_squared,
        peak_concurrency: m.peak_concurrency(),
        peak_throughput: m.peak_throughput(),
        at_bound,
        good: converged && r_squared >= 0.95,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn littles_law_holds_for_the_closed_forms() {
        // N = X·R at every N for any parameters (zero think time).
        for &(sigma, kappa, lambda) in &[
            (0.0, 0.0, 1.0),
            (0.05, 0.001, 100.0),
            (0.3, 0.02, 7.5),
            (0.9, 0.5, 0.1),
        ] {
            let m = Usl {
                sigma,
                kappa,
                lambda,
            };
            for n in [1.0, 2.0, 3.5, 10.0, 100.0] {
                assert!((m.throughput(n) * m.latency(n) - n).abs() < 1e-9 * n);
            }
            // throughput_at_latency inverts latency on the whole curve (without contention
            // or coherency the latency is the same at every N, and there is nothing to invert).
            if sigma + kappa == 0.0 {
                assert_eq!(m.throughput_at_latency(m.latency(5.0)), None);
                continue;
            }
            for n in [1.0, 4.0, 40.0] {
                let x = m.throughput_at_latency(m.latency(n)).unwrap();
                assert!(
                    (x - m.throughput(n)).abs() < 1e-6 * x.max(1.0),
                    "{m:?} n={n}"
                );
            }
        }
    }

    #[test]
    fn closed_forms_hold_for_random_models() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for _ in 0..2000 {
            let m = Usl {
                sigma: rng.random_range(0.0..0.5),
                kappa: rng.random_range(0.0..0.05),
                lambda: rng.random_range(0.1..1000.0),
            };
            let n = rng.random_range(1.0..500.0);
            let (x, r) = (m.throughput(n), m.latency(n));
            // Little's law with zero think time: N = X·R.
            assert!((x * r - n).abs() <= 1e-9 * n, "{m:?} n={n}");
            // The peak is a maximum: no sampled N does better.
            if let (Some(np), Some(xp)) = (m.peak_concurrency(), m.peak_throughput()) {
                assert!(
                    x <= xp * (1.0 + 1e-12),
                    "{m:?}: X({n}) = {x} > X({np}) = {xp}"
                );
            }
            // Latency at a reachable throughput maps back to it, on the rising side.
            if m.sigma + m.kappa > 0.0
                && let Some(r2) = m.latency_at_throughput(x)
            {
                assert!(
                    (m.throughput_at_latency(r2).unwrap() - x).abs() <= 1e-6 * x.max(1.0),
                    "{m:?} n={n}"
                );
            }
        }
    }

    #[test]
    fn latency_at_throughput_respects_coherency() {
        let m = Usl {
            sigma: 0.06,
            kappa: 0.06,
            lambda: 40.0,
        };
        let peak = m.peak_throughput().unwrap();
        assert!(peak < 90.0);
        // Beyond the peak no concurrency gives that throughput.
        for x in [400.0, 500.0, 600.0] {
            assert_eq!(m.latency_at_throughput(x), None);
        }
        // Below it, the answer lies on the rising side and round-trips.
        let r = m.latency_at_throughput(60.0).unwrap();
        assert!((m.throughput_at_latency(r).unwrap() - 60.0).abs() < 1e-6);
        assert!(r * 60.0 < m.peak_concurrency().unwrap());
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(fit(&[1.0, 2.0], &[1.0, 2.0]).is_err());
        assert!(fit(&[0.0, 1.0, 2.0], &[1.0, 2.0, 3.0]).is_err());
        assert!(fit(&[1.0, 2.0, 3.0], &[1.0, f64::NAN, 3.0]).is_err());
    }
}
