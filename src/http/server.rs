//! The HTTP server: hyper on a dedicated thread with its own current-thread tokio runtime (so
//! it works whatever runtime, if any, the application uses), untraced, with a cap on
//! connections and on slow clients. What it answers is [`super::router`]'s.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::response::{error, respond};
use super::router::{route, Routed, Routes, EXPOSITION};

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
        routes: Arc<Routes>,
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
                        runtime.block_on(serve(listener, routes, stopped));
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
    routes: Arc<Routes>,
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
                let routes = Arc::clone(&routes);
                let connection = http.serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper::service::service_fn(move |request| {
                        let routes = Arc::clone(&routes);
                        async move {
                            let response = match route(&routes, &request) {
                                Routed::Done(response) => response,
                                // Rendering takes milliseconds per thousand series: off this
                                // thread, so probes and streams are not queued behind it.
                                Routed::Render => {
                                    let rendered = tokio::task::spawn_blocking(move || routes.scrape.render()).await;
                                    match rendered {
                                        Ok(page) => respond(hyper::StatusCode::OK, EXPOSITION, page),
                                        Err(_) => error(
                                            hyper::StatusCode::SERVICE_UNAVAILABLE,
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
