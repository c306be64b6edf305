//! Plain settings of a layer: which spans are commands, which of their fields become labels,
//! the caps, and the pacing of the background side. Data only; [`crate::Builder`] fills it in.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tracing_core::Metadata;

use crate::names;

/// Most allow-listed labels a layer may have.
pub(crate) const MAX_LABELS: usize = 8;

type Predicate = Arc<dyn Fn(&Metadata<'_>) -> bool + Send + Sync>;

/// Which spans are commands and which of their fields matter.
#[derive(Clone)]
pub(crate) struct Selection {
    pub(crate) command_field: String,
    pub(crate) span_names: Vec<String>,
    pub(crate) target_prefixes: Vec<String>,
    pub(crate) predicate: Option<Predicate>,
    pub(crate) labels: Vec<String>,
}

impl Selection {
    pub(crate) fn selects(&self, meta: &Metadata<'_>) -> bool {
        meta.fields().field(self.command_field.as_str()).is_some()
            || self.span_names.iter().any(|n| n == meta.name())
            || self
                .target_prefixes
                .iter()
                .any(|p| in_module(meta.target(), p))
            || self.predicate.as_ref().is_some_and(|p| p(meta))
    }
}

/// Whether `target` is module `module` or below it (`a::b` is in `a`, `ab` is not).
pub(crate) fn in_module(target: &str, module: &str) -> bool {
    target
        .strip_prefix(module)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

impl fmt::Debug for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selection")
            .field("command_field", &self.command_field)
            .field("span_names", &self.span_names)
            .field("target_prefixes", &self.target_prefixes)
            .field("predicate", &self.predicate.as_ref().map(|_| ".."))
            .field("labels", &self.labels)
            .finish()
    }
}

/// Everything a layer is built from.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) selection: Selection,
    pub(crate) max_series: usize,
    pub(crate) max_error_types: usize,
    pub(crate) max_marks: usize,
    pub(crate) busy_time: bool,
    pub(crate) flush_interval: Duration,
    pub(crate) buffer_capacity: usize,
    pub(crate) overload_wait: Duration,
    pub(crate) overload_memory: usize,
    pub(crate) buckets: Vec<f64>,
    /// The declared objectives (their latency thresholds join the histogram bounds).
    pub(crate) objectives: Vec<crate::objectives::Objective>,
}

impl Config {
    /// The histogram bounds both sinks use: the buckets, with every objective's latency
    /// threshold added.
    pub(crate) fn histogram_bounds(&self) -> Vec<f64> {
        crate::objectives::bounds_with_thresholds(&self.buckets, &self.objectives)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            selection: Selection {
                command_field: "command".to_owned(),
                span_names: Vec::new(),
                target_prefixes: Vec::new(),
                predicate: None,
                labels: Vec::new(),
            },
            max_series: 2000,
            max_error_types: 32,
            max_marks: 32,
            busy_time: true,
            flush_interval: Duration::from_millis(200),
            buffer_capacity: 4096,
            overload_wait: Duration::from_millis(20),
            overload_memory: 64 << 20,
            buckets: names::DEFAULT_BUCKETS.to_vec(),
            objectives: Vec::new(),
        }
    }
}
