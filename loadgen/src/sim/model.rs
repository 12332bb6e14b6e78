//! The simulator's scheduling model, free of I/O and clocks so it can be tested exactly.
//!
//! It follows vLLM's continuous batching: waiting requests are admitted in arrival order
//! while fewer than `max_num_seqs` run and their prompt + output tokens fit the KV budget;
//! each step decodes one token for every running sequence. A step lasts
//! `decode_step_base + running·decode_step_per_seq + waiting·scheduler_per_waiting +
//! admitted_prompt_tokens·prefill_per_token`.

use std::collections::VecDeque;
use std::time::Duration;

use aifb_core::recipe::SimulatorSettings;

/// A request inside the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// Caller's id.
    pub id: u64,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Tokens to generate.
    pub max_tokens: u32,
    /// Tokens generated so far.
    pub generated: u32,
}

impl Sequence {
    fn kv_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.max_tokens)
    }
}

/// What one step produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// How long the step takes.
    pub duration: Duration,
    /// Ids of sequences that got one more token, with the token's 0-based index.
    pub tokens: Vec<(u64, u32)>,
    /// Ids of sequences that finished in this step.
    pub finished: Vec<u64>,
}

/// The batching scheduler.
#[derive(Debug)]
pub struct Batcher {
    settings: SimulatorSettings,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    kv_used: u64,
    /// Log-normal step factor (mean 1) and its generator, with `step_jitter` > 0.
    jitter: Option<(rand_distr::LogNormal<f64>, rand::rngs::StdRng)>,
}

impl Batcher {
    /// An idle scheduler.
    pub fn new(settings: SimulatorSettings) -> Self {
        use rand::SeedableRng;
        let jitter = (settings.step_jitter > 0.0)
            .then(|| rand_distr::LogNormal::from_mean_cv(1.0, settings.step_jitter).ok())
            .flatten()
            .map(|d| (d, rand::rngs::StdRng::seed_from_u64(settings.seed)));
        Self {
            settings,
            waiting: VecDeque::new(),
            running: Vec::new(),
            kv_used: 0,
            jitter,
        }
    }

    /// Queues a request. Requests larger than the whole KV budget are refused.
    pub fn submit(&mut self, seq: Sequence) -> Result<(), Sequence> {
        if seq.kv_tokens() > self.settings.kv_cache_tokens {
            return Err(seq);
        }
        self.waiting.push_back(seq);
        Ok(())
    }

    /// Drops a request wherever it is (client went away); frees its KV reservation.
    pub fn cancel(&mut self, id: u64) {
        self.waiting.retain(|s| s.id != id);
        if let Some(pos) = self.running.iter().position(|s| s.id == id) {
            let s = self.running.swap_remove(pos);
            self.kv_used -= s.kv_tokens();
        }
    }

    /// Running sequences.
    pub fn running(&self) -> usize {
        self.running.len()
    }
    /// Waiting requests.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
    /// Fraction of the KV budget reserved.
    pub fn kv_usage(&self) -> f64 {
        self.kv_used as f64 / self.settings.kv_cache_tokens.max(1) as f64
    }
    /// True when nothing runs or waits.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Admits what fits, then runs one decode step.
    pub fn step(&mut self) -> Step {
        let mut prefill_tokens = 0u64;
        while self.running.len() < self.settings.max_num_seqs as usize {
            let Some(front) = self.waiting.front() else {
                break;
            };
            if self.kv_used + front.kv_tokens() > self.settings.kv_cache_tokens {
                break;
            }
            let Some(seq) = self.waiting.pop_front() else {
                break;
            };
            self.kv_used += seq.kv_tokens();
            prefill_tokens += u64::from(seq.prompt_tokens);
            self.running.push(seq);
        }
        if self.running.is_empty() {
            return Step::default();
        }
        let s = &self.settings;
        let duration = s.decode_step_base.get()
            + s.decode_step_per_seq.get() * self.running.len() as u32
            + s.scheduler_per_waiting.get() * self.waiting.len() as u32
            + s.prefill_per_token.get() * u32::try_from(prefill_tokens).unwrap_or(u32::MAX);
        let duration = match &mut self.jitter {
            Some((d, rng)) => duration.mul_f64(rand_distr::Distribution::sample(d, rng)),
            None => duration,
        };
        let mut step = Step {
            duration,
            ..Step::default()
        };
        for seq in &mut self.running {
            step.tokens.push((seq.id, seq.generated));
            seq.generated += 1;
            if seq.generated >= seq.max_tokens {
                step.finished.push(seq.id);
            }
        }
        let kv_used = &mut self.kv_used;
        self.running.retain(|seq| {
            let done = seq.generated >= seq.max_tokens;
            if done {
                *kv_used -= seq.kv_tokens();
            }
            !done
        });
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aifb_core::duration::HumanDuration;

    fn settings() -> SimulatorSettings {
        SimulatorSettings {
            max_num_seqs: 2,
            kv_cache_tokens: 100,
            prefill_per_token: HumanDuration(Duration::from_micros(10)),
            decode_step_base: HumanDuration::millis(5),
            decode_step_per_seq: HumanDuration::millis(1),
            scheduler_per_waiting: HumanDuration(Duration::from_micros(100)),
            burn_cpu: false,
            step_jitter: 0.0,
            seed: 0,
        }
    }

    fn seq(id: u64, p: u32, m: u32) -> Sequence {
        Sequence {
            id,
            prompt_tokens: p,
            max_tokens: m,
            generated: 0,
        }
    }

    #[test]
    fn jitter_spreads_step_times_around_the_model() {
        let run = |jitter: f64| -> Vec<f64> {
            let mut b = Batcher::new(SimulatorSettings {
                step_jitter: jitter,
                seed: 7,
                kv_cache_tokens: 10_000,
                ..settings()
            });
            b.submit(seq(1, 0, 4000)).unwrap();
            (0..4000).map(|_| b.step().duration.as_secs_f64()).collect()
        };
        let exact = run(0.0);
        assert!(exact.windows(2).all(|w| w[0] == w[1]));
        let spread = run(0.5);
        let mean = spread.iter().sum::<f64>() / spread.len() as f64;
        let sd =
            (spread.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / spread.len() as f64).sqrt();
        // Mean 1 and coefficient of variation 0.5 around the exact step time.
        assert!((mean / exact[0] - 1.0).abs() < 0.05, "{mean}");
        assert!((sd / mean - 0.5).abs() < 0.05, "{}", sd / mean);
        // Seeded: the same run again gives the same times.
        assert_eq!(spread, run(0.5));
    }

    #[test]
    fn batches_up_to_max_num_seqs_and_times_steps() {
        let mut b = Batcher::new(settings());
        for id in 0..3 {
            b.submit(seq(id, 10, 2)).unwrap();
        }
        let s1 = b.step();
        // 2 running, 1 waiting, 20 prompt tokens admitted.
        assert_eq!(s1.duration, Duration::from_micros(5000 + 2000 + 100 + 200));
        assert_eq!(s1.tokens, vec![(0, 0), (1, 0)]);
        assert!(s1.finished.is_empty());
        assert_eq!((b.running(), b.waiting()), (2, 1));
        let s2 = b.step();
        assert_eq!(s2.finished, vec![0, 1]);
        let s3 = b.step();
        assert_eq!(s3.tokens, vec![(2, 0)]);
        assert_eq!(s3.duration, Duration::from_micros(5000 + 1000 + 100));
        b.step();
        assert!(b.is_idle());
        assert_eq!(b.kv_usage(), 0.0);
    }

    #[test]
    fn kv_budget_limits_admission_and_refuses_oversize() {
        let mut b = Batcher::new(settings());
        b.submit(seq(1, 40, 20)).unwrap();
        b.submit(seq(2, 40, 20)).unwrap();
        b.step();
        assert_eq!((b.running(), b.waiting()), (1, 1));
        assert!((b.kv_usage() - 0.6).abs() < 1e-12);
        assert!(b.submit(seq(3, 90, 20)).is_err());
        b.cancel(1);
        assert_eq!(b.kv_usage(), 0.0);
        b.step();
        assert_eq!(b.running(), 1);
    }
}
