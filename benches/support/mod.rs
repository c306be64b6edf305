//! Shared by the benches: splitting calls over threads, and reading the estimates criterion
//! saved to print ratios at the end.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use tracing::dispatcher::{self, Dispatch};

/// Where criterion saved its estimates: `$CRITERION_HOME`, else `target/criterion` under
/// `$CARGO_TARGET_DIR` or the package root (cargo runs benches from there).
pub fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("criterion")
}

/// Typical ns per call of one benchmark in its latest saved run: criterion's slope when it
/// fitted one, else the mean.
pub fn estimate(group: &str, function: &str) -> Option<f64> {
    let path = criterion_home()
        .join(group)
        .join(function.replace('/', "_"))
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let typical = match json.get("slope") {
        Some(slope) if !slope.is_null() => slope,
        _ => json.get("mean")?,
    };
    typical.get("point_estimate")?.as_f64()
}

/// Runs `iters` calls of `work` (given the call's index) split evenly over one fresh thread per
/// dispatcher in `dispatchers`, each thread under its own, and returns the wall time from the
/// common start to the last thread's end.
pub fn split_over_threads<R>(
    dispatchers: &[Dispatch],
    iters: u64,
    work: impl Fn(u64) -> R + Copy + Send,
) -> Duration {
    let threads = dispatchers.len() as u64;
    let barrier = Barrier::new(dispatchers.len() + 1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .zip(dispatchers)
            .map(|(t, dispatch)| {
                let share = iters / threads + u64::from(t < iters % threads);
                let barrier = &barrier;
                scope.spawn(move || {
                    dispatcher::with_default(dispatch, || {
                        barrier.wait();
                        for i in 0..share {
                            black_box(work(black_box(i)));
                        }
                    })
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for worker in workers {
            worker.join().expect("a benchmark thread panicked");
        }
        start.elapsed()
    })
}

/// Whether this is a real benchmark run (`cargo bench`), whose fresh estimates are worth
/// comparing; not `--test`, `--list` or `--profile-time`.
pub fn is_measuring_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"))
}
