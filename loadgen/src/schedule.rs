//! The open loop's intended-send timeline, computed ahead for a whole stage, and the
//! closed loop's think times. Pure functions of the seed: the same recipe gives the same
//! timeline on every run and every machine.

use std::time::Duration;

use aifb_core::recipe::{Arrival, ThinkDistribution};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp, Gamma};

/// Arrival offsets from the stage start, strictly inside `length`, for `rate` requests/s.
/// `burstiness` is the coefficient of variation of the gaps (gamma only; 1 = Poisson).
pub fn arrivals(
    arrival: Arrival,
    rate: f64,
    burstiness: f64,
    seed: u64,
    stage: u32,
    length: Duration,
) -> Vec<Duration> {
    if !(rate.is_finite() && rate > 0.0) {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(stage) << 32));
    let mean = 1.0 / rate;
    let gap: Box<dyn FnMut(&mut StdRng) -> f64> = match arrival {
        // A trace's timeline is the trace itself (see the sweep); evenly spaced here.
        Arrival::Constant | Arrival::Trace => Box::new(move |_| mean),
        Arrival::Poisson => match Exp::new(rate) {
            Ok(e) => Box::new(move |r| e.sample(r)),
            Err(_) => Box::new(move |_| mean),
        },
        Arrival::Gamma => {
            // Shape k = 1/cv², scale θ = mean/k: mean gap 1/rate, CV = burstiness.
            let cv = if burstiness.is_finite() && burstiness > 0.0 {
                burstiness
            } else {
                1.0
            };
            let k = 1.0 / (cv * cv);
            match Gamma::new(k, mean / k) {
                Ok(g) => Box::new(move |r| g.sample(r)),
                Err(_) => Box::new(move |_| mean),
            }
        }
    };
    let mut gap = gap;
    let end = length.as_secs_f64();
    let expected = (rate * end).min(50_000_000.0) as usize;
    let mut out = Vec::with_capacity(expected + expected / 10 + 16);
    let mut t = 0.0;
    loop {
        t += gap(&mut rng);
        // Compared as durations: a float just below the end can round up to it.
        match Duration::try_from_secs_f64(t) {
            Ok(d) if t < end && d < length => out.push(d),
            _ => break,
        }
    }
    out
}

/// A rate that rises (or falls) linearly from `from` to `to` requests/s over `ramp`, then
/// holds `to`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ramp {
    /// Rate at the stage start.
    pub from: f64,
    /// Rate from `ramp` on.
    pub to: f64,
    /// Length of the ramp.
    pub ramp: Duration,
}

impl Ramp {
    /// Expected arrivals by time `t` seconds (the integral of the rate).
    fn expected(&self, t: f64) -> f64 {
        let big_t = self.ramp.as_secs_f64();
        if t < big_t {
            self.from * t + (self.to - self.from) * t * t / (2.0 * big_t)
        } else {
            (self.from + self.to) * big_t / 2.0 + self.to * (t - big_t)
        }
    }

    /// The time by which `n` arrivals are expected: the inverse of [`Ramp::expected`].
    fn time_of(&self, n: f64) -> f64 {
        let big_t = self.ramp.as_secs_f64();
        let at_end = self.expected(big_t);
        if n >= at_end || big_t == 0.0 {
            return big_t + (n - at_end) / self.to;
        }
        let a = (self.to - self.from) / (2.0 * big_t);
        let b = self.from;
        if a.abs() < 1e-12 {
            return n / b;
        }
        (-b + (b * b + 4.0 * a * n).max(0.0).sqrt()) / (2.0 * a)
    }
}

/// The arrivals of `arrival`'s process under a ramping rate: the process is drawn at one
/// request per second and its times mapped through the ramp (time rescaling), so Poisson
/// stays Poisson, gamma keeps its burstiness and constant stays evenly spread in expected
/// count.
pub fn ramped_arrivals(
    arrival: Arrival,
    ramp: Ramp,
    burstiness: f64,
    seed: u64,
    stage: u32,
    length: Duration,
) -> Vec<Duration> {
    if !(ramp.to.is_finite() && ramp.to > 0.0 && ramp.from.is_finite() && ramp.from >= 0.0) {
        return Vec::new();
    }
    let total = ramp.expected(length.as_secs_f64());
    let Ok(units) = Duration::try_from_secs_f64(total) else {
        return Vec::new();
    };
    arrivals(arrival, 1.0, burstiness, seed, stage, units)
        .into_iter()
        .filter_map(|u| Duration::try_from_secs_f64(ramp.time_of(u.as_secs_f64())).ok())
        .filter(|d| *d < length)
        .collect()
}

/// A user's think time: `mean`, or exponential around it.
pub fn think(distribution: ThinkDistribution, mean: Duration, seed: u64, seq: u64) -> Duration {
    match distribution {
        ThinkDistribution::Fixed => mean,
        ThinkDistribution::Exponential if !mean.is_zero() => {
            let mut rng = crate::driver::rng_for(seed ^ 0x7468_696e_6b00, seq);
            Exp::new(1.0 / mean.as_secs_f64())
                .map(|e| Duration::from_secs_f64(e.sample(&mut rng)))
                .unwrap_or(mean)
        }
        ThinkDistribution::Exponential => mean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(v: &[Duration]) -> Vec<f64> {
        v.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect()
    }

    fn mean_cv(x: &[f64]) -> (f64, f64) {
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0);
        (m, var.sqrt() / m)
    }

    #[test]
    fn each_process_keeps_its_rate_and_shape() {
        let len = Duration::from_secs(200);
        for (arrival, cv, want_cv) in [
            (Arrival::Poisson, 1.0, 1.0),
            (Arrival::Gamma, 2.0, 2.0),
            (Arrival::Gamma, 0.5, 0.5),
            (Arrival::Constant, 1.0, 0.0),
        ] {
            let a = arrivals(arrival, 100.0, cv, 7, 0, len);
            let n = a.len() as f64;
            // 20,000 arrivals expected; bursty processes vary more.
            assert!(
                (n - 20_000.0).abs() < 20_000.0 * 0.03 * cv.max(1.0),
                "{arrival:?}: {n}"
            );
            let (m, got_cv) = mean_cv(&gaps(&a));
            assert!(
                (m - 0.01).abs() < 0.0004 * cv.max(1.0),
                "{arrival:?}: mean {m}"
            );
            assert!(
                (got_cv - want_cv).abs() < 0.05 * want_cv.max(0.1),
                "{arrival:?}: cv {got_cv}"
            );
            assert!(a.windows(2).all(|w| w[0] <= w[1]) && a.last().is_some_and(|t| *t < len));
        }
    }

    #[test]
    fn timelines_are_reproducible_per_stage() {
        let len = Duration::from_secs(5);
        let a = arrivals(Arrival::Poisson, 50.0, 1.0, 3, 1, len);
        assert_eq!(a, arrivals(Arrival::Poisson, 50.0, 1.0, 3, 1, len));
        assert_ne!(a, arrivals(Arrival::Poisson, 50.0, 1.0, 3, 2, len));
        assert!(arrivals(Arrival::Poisson, 0.0, 1.0, 3, 1, len).is_empty());
        // A rate too low for one arrival in the stage gives none.
        assert!(arrivals(Arrival::Constant, 0.1, 1.0, 3, 1, len).is_empty());
    }

    #[test]
    fn a_ramp_spreads_arrivals_as_its_rate_rises() {
        let ramp = Ramp {
            from: 0.0,
            to: 100.0,
            ramp: Duration::from_secs(10),
        };
        // Constant: exactly one arrival per expected unit.
        let a = ramped_arrivals(Arrival::Constant, ramp, 1.0, 1, 0, Duration::from_secs(20));
        assert_eq!(
            a.len(),
            1499,
            "500 during the ramp, 1000 after, the last at 20 s excluded"
        );
        let by = |t: f64| a.iter().filter(|d| d.as_secs_f64() < t).count();
        // 100 t² / 20 arrivals by t during the ramp.
        assert_eq!(by(5.0), 124);
        assert_eq!(by(10.0), 499);
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        // The inverse is exact on both sides of the ramp's end, falling ramps included.
        for r in [
            ramp,
            Ramp {
                from: 100.0,
                to: 20.0,
                ramp: Duration::from_secs(4),
            },
        ] {
            for t in [0.5, 3.9, 4.0, 12.5] {
                assert!((r.time_of(r.expected(t)) - t).abs() < 1e-9, "{r:?} at {t}");
            }
        }
        // Poisson under the ramp: the right count, reproducibly.
        let p = ramped_arrivals(Arrival::Poisson, ramp, 1.0, 3, 0, Duration::from_secs(20));
        assert!((p.len() as f64 - 1500.0).abs() < 150.0, "{}", p.len());
        assert_eq!(
            p,
            ramped_arrivals(Arrival::Poisson, ramp, 1.0, 3, 0, Duration::from_secs(20))
        );
    }

    #[test]
    fn exponential_think_times_average_the_mean() {
        let mean = Duration::from_millis(100);
        let t: Vec<f64> = (0..20_000)
            .map(|i| think(ThinkDistribution::Exponential, mean, 1, i).as_secs_f64())
            .collect();
        let (m, cv) = mean_cv(&t);
        assert!((m - 0.1).abs() < 0.003, "{m}");
        assert!((cv - 1.0).abs() < 0.05, "{cv}");
        assert_eq!(think(ThinkDistribution::Fixed, mean, 1, 5), mean);
    }
}
