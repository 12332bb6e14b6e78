//! Over-saturation of an open-loop stage: arrivals come faster than the service answers,
//! so the backlog (requests in flight plus arrivals waiting in the client queue) grows
//! without bound and every later measurement only says "the queue got longer". Stopping
//! such a stage early saves the rest of its time and of the sweep.
//!
//! The backlog is sampled once a second during the measured window. A stable service
//! keeps it around rate × latency (Little's law), with random ups and downs; a saturated
//! one adds to it every second. The stage is declared over-saturated when the backlog grew
//! at every one of the last `WINDOW` samples and by at least `max(10, rate / 2)` requests
//! over them: half a second of arrivals left unserved in four seconds, which random
//! fluctuation of a stable backlog (its spread is about the square root of its size) does
//! not reach.

use std::collections::VecDeque;

/// Samples in a row that must show growth.
pub const WINDOW: usize = 5;

/// The backlog detector of one stage.
#[derive(Debug, Clone)]
pub struct Backlog {
    samples: VecDeque<u64>,
    min_growth: f64,
}

impl Backlog {
    /// A detector for a stage offering `rate` requests per second.
    pub fn new(rate: f64) -> Self {
        Self {
            samples: VecDeque::with_capacity(WINDOW),
            min_growth: (rate / 2.0).max(10.0),
        }
    }

    /// Adds one sample of the backlog; true once the stage is over-saturated.
    pub fn observe(&mut self, backlog: u64) -> bool {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(backlog);
        if self.samples.len() < WINDOW {
            return false;
        }
        let rising = self
            .samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .all(|(a, b)| b > a);
        let growth = self.samples[WINDOW - 1] as f64 - self.samples[0] as f64;
        rising && growth >= self.min_growth
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_backlog_is_over_saturation() {
        let mut b = Backlog::new(100.0);
        // 100/s offered, 60/s served: 40 more every second.
        let fired: Vec<bool> = (0..6).map(|s| b.observe(20 + 40 * s)).collect();
        assert_eq!(fired, [false, false, false, false, true, true]);
    }

    #[test]
    fn a_stable_backlog_with_noise_is_not() {
        let mut b = Backlog::new(100.0);
        for x in [50, 55, 48, 52, 60, 51, 49, 53, 58, 61, 47] {
            assert!(!b.observe(x));
        }
        // Rising five times in a row, but by less than half a second of arrivals.
        let mut b = Backlog::new(100.0);
        for x in [50, 52, 55, 57, 60] {
            assert!(!b.observe(x));
        }
    }

    #[test]
    fn one_dip_restarts_the_count() {
        let mut b = Backlog::new(10.0);
        for x in [0, 20, 40, 60] {
            assert!(!b.observe(x));
        }
        assert!(!b.observe(55));
        for x in [80, 100, 120] {
            assert!(!b.observe(x));
        }
        assert!(b.observe(140));
    }
}
