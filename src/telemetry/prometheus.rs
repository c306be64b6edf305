//! The Prometheus side: the `metrics` recorder of metrics-exporter-prometheus and an HTTP
//! server for `/metrics`, run by hyper on a dedicated thread with its own current-thread
//! tokio runtime (so it works whatever runtime, if any, the application uses). Further
//! endpoints can be added to [`route`] and share the listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::{Method, Request, Response, StatusCode};
use metrics::{Key, Label, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::names;
use super::otlp::ExportStats;
use crate::live::api::{self, Api, Body};
use crate::SpanMetricsHandle;

/// How often histogram samples are drained into their buckets (the recorder's upkeep).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How long a client may take to send its request headers before it is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed `accept` (e.g. out of file descriptors), instead of retrying at once.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Largest request head read, in bytes.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Connections served at a time. Each holds a file descriptor (of the application's process)
/// for at most [`HEADER_READ_TIMEOUT`] while idle; further clients get a `503` at once and are
/// disconnected, so a flood of clients cannot use up the application's descriptors.
const MAX_CONNECTIONS: usize = 128;
/// The answer to a client beyond [`MAX_CONNECTIONS`].
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nconnection: close\r\n\
retry-after: 1\r\n\r\ntoo many connections\n";

/// Builds the recorder: every histogram gets the default buckets (100 µs … 60 s).
pub(crate) fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets(crate::names::DEFAULT_BUCKETS)
        .unwrap_or_else(|_| PrometheusBuilder::new())
        .build_recorder()
}

/// Starts the thread that runs the recorder's upkeep every [`UPKEEP_INTERVAL`].
///
/// The recorder keeps every histogram sample until upkeep (or a scrape) folds it into the
/// buckets. It lives as long as something holds it — the spanmetrics layer inside the global
/// subscriber and the global `metrics` recorder, i.e. usually until the process exits, long
/// after the guard has stopped the endpoint — so the upkeep runs on its own thread, which
/// ends once the recorder is gone.
pub(crate) fn spawn_upkeep(recorder: &Arc<PrometheusRecorder>) -> std::io::Result<()> {
    let recorder = Arc::downgrade(recorder);
    std::thread::Builder::new()
        .name("spanmetrics-upkeep".into())
        .spawn(move || {
            let _untraced =
                tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                let Some(recorder) = recorder.upgrade() else {
                    break;
                };
                recorder.handle().run_upkeep();
            }
        })?;
    Ok(())
}

/// What a scrape reads.
pub(crate) struct Scrape {
    /// The health, API and dashboard endpoints.
    pub(crate) api: Option<Arc<Api>>,
    pub(crate) handle: PrometheusHandle,
    pub(crate) recorder: Arc<PrometheusRecorder>,
    pub(crate) spanmetrics: SpanMetricsHandle,
    pub(crate) traces: Arc<ExportStats>,
    pub(crate) metrics: Arc<ExportStats>,
}

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Scrape {
    /// Describes the metrics this module sets itself.
    pub(crate) fn describe(&self) {
        let r: &dyn Recorder = &*self.recorder;
        r.describe_counter(
            names::PROM_EXPORT_FAILURES.into(),
            Some(metrics::Unit::Count),
            "Failed OTLP export calls, by signal.".into(),
        );
        r.describe_counter(
            names::PROM_DROPPED_SPANS.into(),
            Some(metrics::Unit::Count),
            "Spans lost: their OTLP export failed, or the export queue was full.".into(),
        );
        super::process::describe_prometheus(r);
    }

    /// The exposition text, with everything recorded so far.
    pub(crate) fn render(&self) -> String {
        self.spanmetrics.flush();
        let r: &dyn Recorder = &*self.recorder;
        super::process::update_prometheus(r);
        for (signal, stats) in [("traces", &self.traces), ("metrics", &self.metrics)] {
            let key = Key::from_parts(
                names::PROM_EXPORT_FAILURES,
                vec![Label::new("signal", signal)],
            );
            r.register_counter(&key, &METADATA)
                .absolute(stats.failures.load(Ordering::Relaxed));
        }
        r.register_counter(
            &Key::from_parts(names::PROM_DROPPED_SPANS, Vec::<Label>::new()),
            &METADATA,
        )
        .absolute(self.traces.dropped_spans.load(Ordering::Relaxed));
        self.handle.render()
    }
}

/// The running HTTP server.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts serving on an already bound listener.
    pub(crate) fn start(
        listener: std::net::TcpListener,
        scrape: Arc<Scrape>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("spanmetrics-http".into())
            .spawn(move || {
                // Nothing the server does may be traced by the layers it serves.
                tracing::subscriber::with_default(
                    tracing::subscriber::NoSubscriber::default(),
                    || {
                        runtime.block_on(serve(listener, scrape, stopped));
                    },
                );
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops accepting and waits for the thread.
    pub(crate) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    scrape: Arc<Scrape>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("spanmetrics: the Prometheus endpoint cannot serve: {error}");
            return;
        }
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    // Slow or silent clients are disconnected instead of holding a descriptor forever.
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // Requests are small: a larger head gets a 431 from hyper.
        .max_buf_size(MAX_REQUEST_HEAD);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // E.g. out of file descriptors: retrying at once would spin.
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    // Never waits: a client that does not read its answer loses it.
                    let _ = stream.try_write(TOO_MANY_CONNECTIONS);
                    continue;
                };
                let scrape = Arc::clone(&scrape);
                let connection = http.serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper::service::service_fn(move |request| {
                        let scrape = Arc::clone(&scrape);
                        async move {
                            let response = match route(&scrape, &request) {
                                Routed::Done(response) => response,
                                // Rendering takes milliseconds per thousand series: off this
                                // thread, so probes and streams are not queued behind it.
                                Routed::Render => {
                                    let rendered = tokio::task::spawn_blocking(move || scrape.render()).await;
                                    match rendered {
                                        Ok(page) => text(StatusCode::OK, EXPOSITION, page),
                                        Err(_) => api::error(
                                            StatusCode::SERVICE_UNAVAILABLE,
                                            "the metrics page could not be rendered; try again",
                                        ),
                                    }
                                }
                            };
                            Ok::<_, Infallible>(response)
                        }
                    }),
                );
                tokio::spawn(async move {
                    let _ = connection.await;
                    drop(slot);
                });
            }
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    api::respond(status, content_type, body)
}

/// The content type of the Prometheus text exposition.
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What [`route`] decided.
enum Routed {
    Done(Response<Body>),
    /// `GET /metrics`, authorised: render the page (blocking work).
    Render,
}

impl From<Response<Body>> for Routed {
    fn from(response: Response<Body>) -> Self {
        Routed::Done(response)
    }
}

/// The endpoints: `/metrics`, and those of [`Api`] (health probes without a token).
fn route<B>(scrape: &Scrape, request: &Request<B>) -> Routed {
    let (method, uri) = (request.method(), request.uri());
    if let Some(response) = Api::precheck(uri) {
        return response.into();
    }
    if let Some(api) = &scrape.api {
        if let Some(response) = api.probe(method, uri) {
            return response.into();
        }
        if !api.authorised(uri, request.headers()) {
            let mut response = api::error(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (Authorization: Bearer <token>)",
            );
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            return response.into();
        }
    }
    match (method, uri.path()) {
        (&Method::GET, "/metrics") => Routed::Render,
        (_, "/metrics") => api::method_not_allowed().into(),
        _ => scrape
            .api
            .as_ref()
            .and_then(|api| api.route(method, uri))
            .unwrap_or_else(|| {
                api::error(
                    StatusCode::NOT_FOUND,
                    "not found; try /metrics, /health, /api/commands or /",
                )
            })
            .into(),
    }
}
