//! End-to-end, against the example program's endpoint on loopback: oversized and malformed
//! requests get 4xx answers, slowloris-style and flooding clients hold a bounded number of
//! descriptors for a bounded time, stream clients are capped and released, no thread is
//! added per client, and the program's commands are counted exactly throughout.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::http_client::{get, request};
use crate::processes::*;

/// Connections the endpoint serves at a time (see `MAX_CONNECTIONS` in the crate).
const MAX_CONNECTIONS: usize = 128;
/// Descriptors the program may open besides the clients' (log files, a collector, ...).
const SLACK: usize = 16;
/// Stream clients served at a time.
const MAX_STREAM_CLIENTS: usize = 16;

fn start() -> (Process, SocketAddr) {
    let driver = driver(
        "multi-thread",
        &[("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned())],
    );
    let addr = driver.prometheus_addr();
    (driver, addr)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Runs `count` successful `roll` commands and waits for the driver to finish them.
fn run(driver: &mut Process, count: usize, runs_so_far: usize) {
    driver.send(&format!("run roll:ok:{count}"));
    driver.wait_for_lines("done", runs_so_far + 1);
}

/// The `roll`/`ok` count on the Prometheus page.
fn roll_count(addr: SocketAddr) -> Option<u64> {
    let reply = get(addr, "/metrics");
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body.lines().find_map(|l| {
        l.strip_prefix("command_duration_seconds_count{command=\"roll\",outcome=\"ok\"} ")?
            .parse()
            .ok()
    })
}

fn wait_for_roll_count(driver: &mut Process, addr: SocketAddr, expected: u64) {
    driver.send("flush");
    poll(&format!("{expected} roll commands on /metrics"), || {
        (roll_count(addr) == Some(expected)).then_some(())
    });
}

/// Whether the server has closed this connection (EOF or reset), without blocking long.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // A response (e.g. 503): keep reading to its end.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// The status of a raw request, whose head is `head` (sent as is) and, optionally, a body
/// of `body_bytes` sent after it (write errors ignored: the server may stop reading).
fn raw_status(addr: SocketAddr, head: &[u8], body_bytes: usize) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = stream.write_all(head);
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < body_bytes {
        if stream.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&raw).into_owned();
    line.split(' ')
        .nth(1)
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {line:?}"))
}

#[test]
fn oversized_and_malformed_requests_get_4xx_and_commands_still_count() {
    let (mut driver, addr) = start();
    run(&mut driver, 5, 0);
    let big_header = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let many_headers = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..500)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let long_uri = format!(
        "GET /api/commands?window={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "1".repeat(8 * 1024)
    );
    let body = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n";
    let cases: [(&str, &[u8], usize); 6] = [
        ("64 KB header", big_header.as_bytes(), 0),
        ("500 headers", many_headers.as_bytes(), 0),
        ("8 KB URI", long_uri.as_bytes(), 0),
        ("100 MB body to /metrics", body.as_bytes(), 1 << 20),
        ("garbage request line", b"\x00\x01\x02 nonsense\r\n\r\n", 0),
        (
            "unknown path with a null byte",
            b"GET /%00/../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
            0,
        ),
    ];
    for (what, head, body_bytes) in cases {
        let status = raw_status(addr, head, body_bytes);
        eprintln!("{what}: {status}");
        assert!((400..500).contains(&status), "{what}: status {status}");
    }
    let reply = request(addr, "DELETE", "/metrics", &[]);
    assert_eq!(reply.status, 405, "{reply:?}");
    run(&mut driver, 7, 1);
    wait_for_roll_count(&mut driver, addr, 12);
}

#[test]
fn slowloris_and_connection_floods_hold_bounded_descriptors_for_a_bounded_time() {
    const CLIENTS: usize = 400;
    let (mut driver, addr) = start();
    let pid = driver.pid();
    run(&mut driver, 3, 0);
    wait_for_roll_count(&mut driver, addr, 3);
    let (fds_before, threads_before) = (open_fds(pid), threads(pid));

    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    eprintln!("{} connected, driver fds {}", clients.len(), open_fds(pid));
    // Each sends a request head one byte at a time and never finishes it.
    let head = b"GET /metrics HTTP/1.1\r\nHost: slow\r\nX-Slow: ";
    let started = Instant::now();
    let mut driver_runs = 1;
    let (mut max_fds, mut max_threads) = (0, 0);
    let mut sent = 0;
    loop {
        let byte = head.get(sent).copied().unwrap_or(b'a');
        sent += 1;
        clients.retain_mut(|c| c.write_all(&[byte]).is_ok() && !closed_by_server(c));
        max_fds = max_fds.max(open_fds(pid));
        max_threads = max_threads.max(threads(pid));
        if sent % 10 == 0 {
            // The application keeps working meanwhile.
            run(&mut driver, 10, driver_runs);
            driver_runs += 1;
        }
        if clients.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{} slow clients still connected after {DEADLINE:?}",
            clients.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let held_for = started.elapsed();
    assert!(
        max_fds <= fds_before + MAX_CONNECTIONS + SLACK,
        "{max_fds} descriptors open with {CLIENTS} slow clients (before: {fds_before})"
    );
    assert!(
        max_threads <= threads_before + 2,
        "{max_threads} threads with {CLIENTS} slow clients (before: {threads_before})"
    );
    let fds_after = poll("descriptors to be released", || {
        let now = open_fds(pid);
        (now <= fds_before + 2).then_some(now)
    });
    let commands = 3 + 10 * (driver_runs as u64 - 1);
    wait_for_roll_count(&mut driver, addr, commands);
    eprintln!(
        "slowloris: {CLIENTS} clients; descriptors {fds_before} before, {max_fds} at most, \
         {fds_after} after; threads {threads_before} before, {max_threads} at most; \
         all disconnected after {held_for:?}; {commands} commands counted"
    );
}

#[test]
fn many_stream_clients_are_capped_and_their_slots_come_back() {
    const CLIENTS: usize = 100;
    let (mut driver, addr) = start();
    let pid = driver.pid();
    run(&mut driver, 2, 0);
    wait_for_roll_count(&mut driver, addr, 2);
    let fds_before = open_fds(pid);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..CLIENTS {
        let mut stream = TcpStream::connect(addr).expect("connect");
        write!(
            stream,
            "GET /api/stream?interval_ms=100 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).expect("a status line");
        match &buf[9..12] {
            b"200" => accepted.push(stream),
            b"429" => refused += 1,
            other => panic!("status {}", String::from_utf8_lossy(other)),
        }
    }
    assert_eq!(accepted.len(), MAX_STREAM_CLIENTS);
    assert_eq!(refused, CLIENTS - MAX_STREAM_CLIENTS);
    run(&mut driver, 4, 1);
    let during = open_fds(pid);
    assert!(
        during <= fds_before + MAX_STREAM_CLIENTS + SLACK,
        "{during} descriptors"
    );
    drop(accepted);
    poll("stream descriptors to be released", || {
        (open_fds(pid) <= fds_before + 2).then_some(())
    });
    // The slots are free again.
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET /api/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 12];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[9..12], b"200");
    wait_for_roll_count(&mut driver, addr, 6);
}
