//! One clock for a whole run: wall-clock timestamps with monotonic precision.
//!
//! Request timestamps and metric scrapes must share a clock so that the analyzer can align
//! them. [`RunClock`] takes one wall-clock reading at start and adds monotonic elapsed time
//! to it, so timestamps never jump backwards when NTP adjusts the system clock mid-run.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock nanoseconds since the Unix epoch, advanced by a monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    origin: Instant,
    origin_unix_ns: i64,
}

impl RunClock {
    /// Starts the clock now.
    pub fn start() -> Self {
        let origin = Instant::now();
        let origin_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        Self {
            origin,
            origin_unix_ns,
        }
    }

    /// Unix nanoseconds of `at`.
    pub fn unix_ns(&self, at: Instant) -> i64 {
        match at.checked_duration_since(self.origin) {
            Some(d) => self.origin_unix_ns + d.as_nanos() as i64,
            None => self.origin_unix_ns - self.origin.duration_since(at).as_nanos() as i64,
        }
    }

    /// Unix nanoseconds now.
    pub fn now_ns(&self) -> i64 {
        self.unix_ns(Instant::now())
    }
}

/// The system's wall clock now, in Unix nanoseconds (for one-off timestamps outside a
/// run's [`RunClock`]).
pub fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Formats Unix nanoseconds as RFC 3339 UTC with millisecond precision.
pub fn rfc3339(unix_ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(unix_ns)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn monotonic_offsets() {
        let c = RunClock::start();
        let a = Instant::now();
        let b = a + Duration::from_millis(5);
        assert_eq!(c.unix_ns(b) - c.unix_ns(a), 5_000_000);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}
