//! Process metrics (resident memory, CPU time, open file descriptors, threads, uptime), read
//! from `/proc` on Linux when they are collected. Elsewhere nothing is reported.

use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{Key, Label, Recorder};
use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;

use super::metric_names as names;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on every Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of the process's resources.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub(crate) resident_bytes: u64,
    pub(crate) cpu_user_seconds: f64,
    pub(crate) cpu_system_seconds: f64,
    pub(crate) open_fds: u64,
    pub(crate) threads: u64,
    pub(crate) start_time_unix: f64,
    pub(crate) uptime_seconds: f64,
}

/// Reads `/proc/self`; `None` when it is not available.
pub(crate) fn sample() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let utime = field(14)?;
    let stime = field(15)?;
    let threads = field(20)? as u64;
    let start_ticks = field(22)?;

    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;

    let boot_time: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())?;
    let start_time_unix = boot_time + start_ticks / TICKS_PER_SECOND;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());

    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    Some(Sample {
        resident_bytes: rss_kib * 1024,
        cpu_user_seconds: utime / TICKS_PER_SECOND,
        cpu_system_seconds: stime / TICKS_PER_SECOND,
        open_fds,
        threads,
        start_time_unix,
        uptime_seconds: (now - start_time_unix).max(0.0),
    })
}

/// Registers observable instruments (OTel semantic-convention names) read at each collection.
pub(crate) fn register_otel(meter: &Meter) {
    meter
        .i64_observable_up_down_counter(names::OTEL_PROCESS_MEMORY)
        .with_unit("By")
        .with_description("The amount of physical memory in use (resident set size).")
        .with_callback(|o| {
            if let Some(s) = sample() {
                o.observe(s.resident_bytes as i64, &[]);
            }
        })
        .build();
    meter
        .f64_observable_counter(names::OTEL_PROCESS_CPU)
        .with_unit("s")
        .with_description("Total CPU seconds broken down by mode.")
        .with_callback(|o| {
            if let Some(s) = sample() {
                o.observe(s.cpu_user_seconds, &[KeyValue::new("cpu.mode", "user")]);
                o.observe(s.cpu_system_seconds, &[KeyValue::new("cpu.mode", "system")]);
            }
        })
        .build();
    meter
        .i64_observable_up_down_counter(names::OTEL_PROCESS_FDS)
        .with_unit("{file_descriptor}")
        .with_description("Number of open file descriptors.")
        .with_callback(|o| {
            if let Some(s) = sample() {
                o.observe(s.open_fds as i64, &[]);
            }
        })
        .build();
    meter
        .i64_observable_up_down_counter(names::OTEL_PROCESS_THREADS)
        .with_unit("{thread}")
        .with_description("Process threads count.")
        .with_callback(|o| {
            if let Some(s) = sample() {
                o.observe(s.threads as i64, &[]);
            }
        })
        .build();
    meter
        .f64_observable_gauge(names::OTEL_PROCESS_UPTIME)
        .with_unit("s")
        .with_description("The time the process has been running.")
        .with_callback(|o| {
            if let Some(s) = sample() {
                o.observe(s.uptime_seconds, &[]);
            }
        })
        .build();
}

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Describes the Prometheus process metrics on `recorder`.
pub(crate) fn describe_prometheus(recorder: &dyn Recorder) {
    use metrics::Unit;
    let gauges = [
        (
            names::PROM_PROCESS_MEMORY,
            Unit::Bytes,
            "Resident memory size in bytes.",
        ),
        (
            names::PROM_PROCESS_FDS,
            Unit::Count,
            "Number of open file descriptors.",
        ),
        (
            names::PROM_PROCESS_THREADS,
            Unit::Count,
            "Number of OS threads in the process.",
        ),
        (
            names::PROM_PROCESS_UPTIME,
            Unit::Seconds,
            "Time since the process started, in seconds.",
        ),
        (
            names::PROM_PROCESS_START,
            Unit::Seconds,
            "Start time of the process since unix epoch in seconds.",
        ),
    ];
    for (name, unit, text) in gauges {
        recorder.describe_gauge(name.into(), Some(unit), text.into());
    }
    recorder.describe_counter(
        names::PROM_PROCESS_CPU.into(),
        Some(Unit::Seconds),
        "Total user and system CPU time spent in seconds (whole seconds).".into(),
    );
}

/// Sets the Prometheus process metrics from a fresh sample (called before each scrape).
pub(crate) fn update_prometheus(recorder: &dyn Recorder) {
    let Some(s) = sample() else { return };
    let gauge = |name: &'static str, value: f64| {
        recorder
            .register_gauge(&Key::from_parts(name, Vec::<Label>::new()), &METADATA)
            .set(value);
    };
    gauge(names::PROM_PROCESS_MEMORY, s.resident_bytes as f64);
    gauge(names::PROM_PROCESS_FDS, s.open_fds as f64);
    gauge(names::PROM_PROCESS_THREADS, s.threads as f64);
    gauge(names::PROM_PROCESS_UPTIME, s.uptime_seconds);
    gauge(names::PROM_PROCESS_START, s.start_time_unix);
    // `metrics` counters are integers: whole CPU seconds.
    recorder
        .register_counter(
            &Key::from_parts(names::PROM_PROCESS_CPU, Vec::<Label>::new()),
            &METADATA,
        )
        .absolute((s.cpu_user_seconds + s.cpu_system_seconds) as u64);
}

#[cfg(test)]
mod tests {
    #[test]
    fn sample_reads_this_process() {
        let s = super::sample().expect("/proc is readable on Linux");
        assert!(s.resident_bytes > 0);
        assert!(s.threads >= 1);
        assert!(s.open_fds >= 3, "stdin, stdout and stderr are open");
        assert!(s.start_time_unix > 1.0e9);
    }
}
