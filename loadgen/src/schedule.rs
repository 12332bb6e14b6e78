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
