//! End-to-end: `/api/stream` sends a summary per interval as Server-Sent Events, whose
//! numbers follow new traffic, to at most 16 clients at a time.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use crate::http_client;
use crate::processes::*;

/// An open event stream.
struct Stream {
    reader: BufReader<TcpStream>,
    status: u16,
}

fn open(addr: SocketAddr, path: &str) -> Stream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    Stream { reader, status }
}

impl Stream {
    /// The next `data:` payload, as JSON.
    fn next_summary(&mut self) -> serde_json::Value {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).expect("read the stream");
            assert!(n > 0, "the stream ended");
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                return serde_json::from_str(data).expect("a JSON summary");
            }
        }
    }
}

#[test]
fn stream_summaries_follow_new_traffic() {
    let mut driver = driver(
        "multi-thread",
        &[("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned())],
    );
    let addr = driver.prometheus_addr();
    let mut stream = open(addr, "/api/stream?interval_ms=100&window=5m");
    assert_eq!(stream.status, 200);
    let first = stream.next_summary();
    assert_eq!(first["window"], "5m");
    assert_eq!(first["totals"]["calls"], 0);

    driver.send("run roll:ok:3,fetch:NotFound:2");
    driver.wait_for_lines("done", 1);
    let later = poll("a summary with the new calls", || {
        let s = stream.next_summary();
        (s["totals"]["calls"] == 5).then_some(s)
    });
    assert_eq!(later["totals"]["errors"], 2);
    assert_eq!(later["commands"].as_array().unwrap().len(), 2);
}

#[test]
fn stream_refuses_clients_beyond_the_cap_and_frees_slots_on_disconnect() {
    let driver = driver(
        "none",
        &[("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned())],
    );
    let addr = driver.prometheus_addr();
    let mut open_streams: Vec<Stream> = (0..16)
        .map(|_| open(addr, "/api/stream?interval_ms=100"))
        .collect();
    assert!(open_streams.iter().all(|s| s.status == 200));
    let refused = http_client::get(addr, "/api/stream");
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.json()["error"].is_string());

    // Other endpoints still answer.
    assert_eq!(http_client::get(addr, "/api/commands").status, 200);

    open_streams.pop();
    let mut reopened = poll("a freed stream slot", || {
        let stream = open(addr, "/api/stream?interval_ms=100");
        (stream.status == 200).then_some(stream)
    });
    assert_eq!(reopened.next_summary()["totals"]["calls"], 0);
}
