//! End-to-end: the dashboard page, loaded in a real headless Chromium, renders a row per
//! command with the right counts and no console errors, follows new traffic live, and is
//! saved as a screenshot under `test-artifacts/`.

use serde_json::{json, Value};

use crate::chromium::{self, Browser};
use crate::processes::*;

const TOKEN: &str = "dashboard-token-1";

/// (command, calls shown) of every row of the commands table.
const ROWS: &str = "Array.from(document.querySelectorAll('#commands tbody tr')).map(r => [r.getAttribute('data-command'), r.querySelector('td.calls').textContent])";

#[test]
fn dashboard_shows_a_row_per_command_and_follows_new_traffic() {
    let Some(chromium) = tool("CHROMIUM") else {
        return;
    };
    let mut driver = driver(
        "multi-thread",
        &[
            ("SPANMETRICS_PROMETHEUS_LISTEN", "127.0.0.1:0".to_owned()),
            ("SPANMETRICS_HTTP_TOKEN", TOKEN.to_owned()),
            ("SPANMETRICS_STREAM_INTERVAL_MS", "200".to_owned()),
        ],
    );
    let addr = driver.prometheus_addr();
    // The browser first: the rows show the calls of the last minute, so the time Chromium
    // takes to start (long on a loaded machine) must not pass between the calls and the checks.
    let browser = Browser::launch(&chromium);
    let mut page = browser.page();
    page.call("Runtime.enable", json!({}));
    page.call("Log.enable", json!({}));
    page.call("Page.enable", json!({}));

    // 25 of 26 succeed: healthy (above the 95% objective).
    driver.send("run roll:ok:20,fetch:ok:5,fetch:NotFound:1");
    driver.wait_for_lines("done", 1);
    page.call(
        "Page.navigate",
        json!({ "url": format!("http://{addr}/?token={TOKEN}") }),
    );

    let rows = poll("a row per command", || {
        let rows = page.eval(ROWS);
        (rows.as_array().is_some_and(|r| r.len() == 2)).then_some(rows)
    });
    assert_eq!(rows, json!([["fetch", "6"], ["roll", "20"]]));
    let banner = poll("the health banner", || {
        let class = page.eval("document.getElementById('banner').className");
        (class != "banner unknown").then_some(class)
    });
    assert_eq!(banner, "banner healthy");
    let failures: Value = poll("the recent failure", || {
        let rows = page.eval("Array.from(document.querySelectorAll('#failures tbody tr')).map(r => Array.from(r.cells).map(c => c.textContent))");
        (rows.as_array().is_some_and(|r| !r.is_empty())).then_some(rows)
    });
    let failure = &failures[0];
    assert_eq!(failure[1], "fetch");
    assert_eq!(failure[2], "NotFound");
    assert_eq!(failure[4], "not sampled");
    assert_eq!(
        page.eval("document.getElementById('card-total').textContent"),
        "26"
    );

    // New traffic reaches the open page through the event stream.
    driver.send("run roll:ok:7,fetch:ok:2");
    driver.wait_for_lines("done", 2);
    poll("the page to show the new calls", || {
        let rows = page.eval(ROWS);
        (rows == json!([["fetch", "8"], ["roll", "27"]])).then_some(())
    });
    assert_eq!(
        page.eval("document.getElementById('card-total').textContent"),
        "35"
    );

    let shot = page.call("Page.captureScreenshot", json!({ "format": "png" }));
    let png = chromium::base64_decode(shot["data"].as_str().expect("screenshot data"));
    assert!(png.starts_with(b"\x89PNG"), "a PNG image");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard.png"), &png).unwrap();

    // A last round trip collects any late events before checking for errors.
    page.eval("1");
    let errors = page.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    browser.close(&mut page);
}
