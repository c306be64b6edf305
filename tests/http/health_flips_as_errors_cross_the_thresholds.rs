//! End-to-end: `/health` turns degraded, then unhealthy, as the share of failing commands
//! crosses the objectives, and healthy again once the failures stop (a 2 s window here).

use crate::http_client::get;
use crate::processes::*;
use serde_json::Value;

struct Bot {
    driver: Process,
    runs: usize,
    addr: std::net::SocketAddr,
}

impl Bot {
    fn run(&mut self, plan: &str) {
        self.driver.send(&format!("run {plan}"));
        self.runs += 1;
        self.driver.wait_for_lines("done", self.runs);
    }

    /// Runs `plan` repeatedly until `/health` says `status`; returns the last reply.
    fn until(&mut self, plan: Option<&str>, status: &str) -> (u16, Value) {
        self.until_body(plan, &format!("/health to become {status}"), |body| {
            body["status"] == status
        })
    }

    /// Runs `plan` repeatedly until the body of `/health` satisfies `done`; returns the last
    /// reply.
    fn until_body(
        &mut self,
        plan: Option<&str>,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> (u16, Value) {
        poll(what, || {
            if let Some(plan) = plan {
                self.run(plan);
            }
            let reply = get(self.addr, "/health");
            assert!(reply.status == 200 || reply.status == 503, "{}", reply.body);
            let body = reply.json();
            done(&body).then_some((reply.status, body))
        })
    }
}

fn success(h: &Value) -> (String, f64) {
    let check = &h["checks"]["success_rate"];
    (
        check["status"].as_str().unwrap().to_owned(),
        check["value"].as_f64().unwrap_or(f64::NAN),
    )
}

#[test]
fn health_goes_degraded_then_unhealthy_and_recovers_when_errors_stop() {
    let driver = driver(
        "multi-thread",
        &[
            ("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned()),
            ("SPANMETRICS_HEALTH_WINDOW", "2s".to_owned()),
            ("SPANMETRICS_HEALTH_MIN_CALLS", "10".to_owned()),
        ],
    );
    let addr = driver.prometheus_addr();
    let mut bot = Bot {
        driver,
        runs: 0,
        addr,
    };

    let (code, h) = bot.until(Some("roll:ok:50"), "healthy");
    assert_eq!(code, 200);
    assert_eq!(h["window_s"], 2);
    assert_eq!(success(&h), ("pass".to_owned(), 1.0));

    // 93% succeed: below the 95% warning, above the 90% failure threshold.
    let (code, h) = bot.until(Some("roll:ok:93,roll:Timeout:7"), "degraded");
    assert_eq!(code, 200, "degraded still serves traffic");
    let (status, rate) = success(&h);
    assert_eq!(status, "warn");
    assert!((0.90..0.95).contains(&rate), "{rate}");

    // 80% succeed: below the failure threshold.
    let (code, h) = bot.until(Some("roll:ok:80,fetch:NotFound:20"), "unhealthy");
    assert_eq!(code, 503);
    let (status, rate) = success(&h);
    assert_eq!(status, "fail");
    assert!(rate < 0.90, "{rate}");

    // The failures stop: once they slide out of the window the status recovers. (Enough new
    // successes may make it healthy sooner, with failures still in the window, as fast as the
    // machine runs them: so wait for the failures to be gone, not for the status.)
    let (code, h) = bot.until_body(
        Some("fetch:ok:30"),
        "the failures to leave the window",
        |h| h["checks"]["success_rate"]["value"] == 1.0,
    );
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(code, 200);
    assert_eq!(success(&h), ("pass".to_owned(), 1.0));

    // And with no traffic at all nothing is judged.
    let (code, _) = bot.until(None, "healthy");
    assert_eq!(code, 200);
    let h = poll("the window to empty", || {
        let h = get(bot.addr, "/health").json();
        (h["calls_in_window"] == 0).then_some(h)
    });
    assert_eq!(h["status"], "healthy");
    assert!(h["checks"]["success_rate"]["value"].is_null());
}
