//! Shared helpers of the end-to-end tests: real servers on free ports, the example program
//! that runs commands, and a parser for the collector's debug output.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any awaited condition may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The path of a test tool named by an environment variable set by `scripts/test.sh`.
/// Missing: the test fails when the tools are required (`scripts/test.sh` sets
/// `SPANMETRICS_REQUIRE_TOOLS=1`; any `CI` value but empty, `0` or `false` does too), and is
/// skipped (with a message) otherwise, for a bare `cargo test`.
pub fn tool(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(path) if path.exists() => Some(path),
        _ => {
            let message = format!(
                "{var} is not set to an existing file; run scripts/test.sh (it installs the test servers)"
            );
            let set = |name: &str| {
                std::env::var(name).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
            };
            if set("SPANMETRICS_REQUIRE_TOOLS") || set("CI") {
                panic!("{message}");
            }
            eprintln!("skipping: {message}");
            None
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `f` until it returns `Some`, or the deadline passes.
pub fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process whose output is collected in the background; killed by PID on drop.
pub struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The threads reading stdout and stderr; they end when the process closes them.
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    stream: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            into.lock().unwrap().push_str(&line);
            line.clear();
        }
    })
}

impl Process {
    /// The Prometheus endpoint address the driver printed (`prometheus <addr>`).
    pub fn prometheus_addr(&self) -> SocketAddr {
        poll("the driver's Prometheus address", || {
            self.stdout()
                .lines()
                .find_map(|l| l.strip_prefix("prometheus ")?.parse().ok())
        })
    }

    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let readers = vec![
            collect(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Self {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// The process id, e.g. to read its `/proc` entries.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to child");
        stdin.flush().expect("flush child stdin");
    }

    /// Waits until stdout has `count` lines equal to `line`.
    pub fn wait_for_lines(&self, line: &str, count: usize) {
        poll(&format!("{count} `{line}` lines"), || {
            (self.stdout().lines().filter(|l| l.trim() == line).count() >= count).then_some(())
        });
    }

    /// Waits for the process to exit, and for everything it printed to be read.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.stdin.take();
        let status = poll("the process to exit", || {
            self.child.try_wait().ok().flatten()
        });
        // Its pipes are closed now, so the readers reach the end of what it wrote, unless a
        // process it started (a browser's helper) still holds them: then go on after the
        // deadline with what was read. (A short grace period could end before a reader on a
        // loaded machine got to the last lines.)
        let grace = Instant::now() + DEADLINE;
        while !self.readers.iter().all(|r| r.is_finished()) && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(10));
        }
        status
    }

    /// Sends a signal by name (`STOP`, `CONT`) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Resident memory from `/proc/<pid>/status`, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the process is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Whether the process has exited (reaps it).
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The rotel collector printing everything it receives.
/// A rotel collector listening on free 127.0.0.1 ports; a [`Process`] otherwise.
pub struct Rotel {
    process: Process,
    agent: PathBuf,
    pub grpc: u16,
    pub http: u16,
}

/// Starts rotel (`ROTEL_AGENT`, see [`tool`]) on free ports; `None` when the tool is missing
/// and the test is to be skipped.
pub fn rotel() -> Option<Rotel> {
    let agent = tool("ROTEL_AGENT")?;
    let (grpc, http) = (free_port(), free_port());
    Some(Rotel {
        process: start_rotel(&agent, grpc, http),
        agent,
        grpc,
        http,
    })
}

impl Rotel {
    /// Stops the collector (if still running) and starts a fresh one on the same ports.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = start_rotel(&self.agent, self.grpc, self.http);
    }
}

impl std::ops::Deref for Rotel {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Rotel {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

fn start_rotel(agent: &PathBuf, grpc: u16, http: u16) -> Process {
    let mut command = Command::new(agent);
    command.args([
        "start",
        "--otlp-grpc-endpoint",
        &format!("127.0.0.1:{grpc}"),
        "--otlp-http-endpoint",
        &format!("127.0.0.1:{http}"),
        "--exporter",
        "blackhole",
        "--debug-log",
        "traces",
        "--debug-log",
        "metrics",
        "--debug-log-verbosity",
        "detailed",
    ]);
    for (key, _) in std::env::vars() {
        if key.starts_with("ROTEL_") {
            command.env_remove(key);
        }
    }
    let rotel = Process::spawn(command);
    poll("rotel to listen", || {
        let up = |port| TcpStream::connect(("127.0.0.1", port)).is_ok();
        (up(grpc) && up(http)).then_some(())
    });
    rotel
}

/// The example program that runs commands (built by `cargo test` with the examples).
pub fn driver(mode: &str, env: &[(&str, String)]) -> Process {
    let exe = std::env::current_exe().expect("test executable");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("command_driver"))
        .expect("target dir");
    assert!(
        path.exists(),
        "{} is missing; run `cargo test` (it builds the examples)",
        path.display()
    );
    let mut command = Command::new(path);
    command.arg(mode);
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") || key.starts_with("SPANMETRICS_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "info").env("NO_COLOR", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    Process::spawn(command)
}

/// Asks the driver whether a global `metrics` recorder is installed: `true` when taken.
pub fn global_recorder_taken(driver: &mut Process) -> bool {
    driver.send("global-recorder");
    poll("the driver to report the global recorder", || {
        driver.stdout().lines().find_map(|l| match l.trim() {
            "global recorder taken" => Some(true),
            "global recorder free" => Some(false),
            _ => None,
        })
    })
}

/// A span as printed by rotel.
#[derive(Debug, Default, Clone)]
pub struct Span {
    pub name: String,
    pub trace_id: String,
    pub status: String,
    pub status_message: String,
    pub attributes: BTreeMap<String, String>,
}

/// What rotel printed, parsed.
#[derive(Debug, Default)]
pub struct Received {
    pub spans: Vec<Span>,
    /// Resource attributes of every resource block seen.
    pub resources: Vec<BTreeMap<String, String>>,
    /// The last value of `Count:` of each histogram data point, by metric and attributes.
    pub histogram_counts: BTreeMap<(String, BTreeMap<String, String>), u64>,
    /// Metric names seen.
    pub metric_names: Vec<String>,
}

/// `     -> key: Str(value)` → (key, value).
fn attribute(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix("-> ")?;
    let (key, value) = rest.split_once(": ")?;
    let value = value
        .find('(')
        .filter(|_| value.ends_with(')'))
        .map_or(value, |i| &value[i + 1..value.len() - 1]);
    Some((key.to_owned(), value.to_owned()))
}

/// Parses rotel's `--debug-log-verbosity detailed` output.
pub fn parse_rotel(output: &str) -> Received {
    #[derive(PartialEq)]
    enum Section {
        None,
        Resource,
        Span,
        SpanAttributes,
        Other,
        Descriptor,
        Point,
    }
    let mut received = Received::default();
    let mut section = Section::None;
    let mut metric = String::new();
    let mut point: BTreeMap<String, String> = BTreeMap::new();
    for line in output.lines() {
        let trimmed = line.trim();
        if trimmed == "Resource attributes:" {
            received.resources.push(BTreeMap::new());
            section = Section::Resource;
        } else if trimmed.starts_with("Span #") {
            received.spans.push(Span::default());
            section = Section::Span;
        } else if trimmed == "Attributes:" && section == Section::Span {
            section = Section::SpanAttributes;
        } else if trimmed == "Events:"
            || trimmed.starts_with("ScopeSpans")
            || trimmed.starts_with("ScopeMetrics")
        {
            section = Section::Other;
        } else if trimmed == "Descriptor:" {
            section = Section::Descriptor;
        } else if trimmed == "Data point attributes:" {
            point = BTreeMap::new();
            section = Section::Point;
        } else if let Some(count) = trimmed.strip_prefix("Count: ") {
            if let Ok(count) = count.parse() {
                received
                    .histogram_counts
                    .insert((metric.clone(), point.clone()), count);
            }
        } else if let Some((key, value)) = attribute(line) {
            match section {
                Section::Resource => {
                    received.resources.last_mut().unwrap().insert(key, value);
                }
                Section::SpanAttributes => {
                    received
                        .spans
                        .last_mut()
                        .unwrap()
                        .attributes
                        .insert(key, value);
                }
                Section::Descriptor if key == "Name" => {
                    received.metric_names.push(value.clone());
                    metric = value;
                }
                Section::Point => {
                    point.insert(key, value);
                }
                _ => {}
            }
        } else if section == Section::Span {
            let span = received.spans.last_mut().unwrap();
            let field = |prefix: &str| {
                trimmed
                    .strip_prefix(prefix)
                    .map(|r| r.trim_start().trim_start_matches(':').trim().to_owned())
            };
            if let Some(v) = field("Name") {
                span.name = v;
            } else if let Some(v) = field("Trace ID") {
                span.trace_id = v;
            } else if let Some(v) = field("Status code") {
                span.status = v;
            } else if let Some(v) = field("Status message") {
                span.status_message = v;
            }
        }
    }
    received
}

impl Received {
    /// Final `command.duration` counts by (command, outcome, error.type or "").
    pub fn duration_counts(&self) -> BTreeMap<(String, String, String), u64> {
        self.histogram_counts
            .iter()
            .filter(|((metric, _), _)| metric == "command.duration")
            .map(|((_, attrs), count)| {
                let get = |k: &str| attrs.get(k).cloned().unwrap_or_default();
                ((get("command"), get("outcome"), get("error.type")), *count)
            })
            .collect()
    }
}

/// A plan as the driver takes it, and the counts it should produce.
pub fn expected(plan: &str) -> BTreeMap<(String, String, String), u64> {
    let mut out = BTreeMap::new();
    for item in plan.split(',') {
        let parts: Vec<&str> = item.split(':').collect();
        let (outcome, error_type) = if parts[1] == "ok" {
            ("ok", "")
        } else {
            ("error", parts[1])
        };
        *out.entry((
            parts[0].to_owned(),
            outcome.to_owned(),
            error_type.to_owned(),
        ))
        .or_insert(0) += parts[2].parse::<u64>().unwrap();
    }
    out
}

/// Adds the counts of `b` to `a`.
pub fn sum(
    a: &BTreeMap<(String, String, String), u64>,
    b: &BTreeMap<(String, String, String), u64>,
) -> BTreeMap<(String, String, String), u64> {
    let mut out = a.clone();
    for (k, v) in b {
        *out.entry(k.clone()).or_insert(0) += v;
    }
    out
}

/// A plain HTTP/1.1 GET; returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some(dechunk(body));
    }
    Some(body.to_owned())
}

/// The body of a `Transfer-Encoding: chunked` answer, unchunked.
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the sample `series` (name and labels exactly as rendered) on a Prometheus page.
pub fn prometheus_value(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// `promtool check metrics` on `text`: whether it passed, and everything it printed.
pub fn promtool_check_metrics(promtool: &std::path::Path, text: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("promtool reads the page");
    let out = child.wait_with_output().expect("promtool finishes");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}
