//! The collector interface: each collector fills metric families for one scrape and says
//! whether it succeeded. A failing collector costs only its own series.

pub mod cgroup;
pub mod gpu;
pub mod job;
pub mod node;
pub mod probe;
pub mod process;

/// Prometheus metric type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter; the family name has no `_total`, the sample gets it.
    Counter,
    /// Gauge.
    Gauge,
    /// Identity series with value 1; the family name has no `_info`, the sample gets it.
    Info,
}

/// One metric family and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Name without the `_total` or `_info` suffix.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Type.
    pub kind: Kind,
    /// Samples: labels and value.
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    /// An empty family.
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }
    /// Adds a sample.
    pub fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64) -> &mut Self {
        self.samples.push((labels, value));
        self
    }
    /// A family with a single unlabelled sample.
    pub fn single(name: &'static str, help: &'static str, kind: Kind, value: f64) -> Self {
        let mut f = Self::new(name, help, kind);
        f.push(vec![], value);
        f
    }
}

/// A source of metrics, run once per scrape.
pub trait Collector: Send {
    /// Name used in flags (`--collector.NAME`) and in `aifb_scrape_collector_success`.
    fn name(&self) -> &'static str;
    /// True when a call may block for long (network, driver): such a collector runs on a
    /// thread of its own so that the scrape deadline can leave it behind. Collectors that
    /// only read local files share one thread.
    fn may_block(&self) -> bool {
        false
    }

    /// Appends this scrape's families. An error marks the collector failed for this scrape;
    /// families pushed before the error are still exposed.
    fn collect(&mut self, out: &mut Vec<Family>) -> Result<(), String>;
}
