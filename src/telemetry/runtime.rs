//! The tokio runtime the gRPC exporters run on: their own, untraced, so that export never
//! records itself and works whatever runtime, if any, the application uses.

#[cfg(feature = "otlp-grpc")]
mod grpc {
    use std::time::Duration;

    /// The tokio runtime of the gRPC exporters. Dropping it shuts it down in the background:
    /// dropping a `Runtime` directly would block, which panics when it happens inside the
    /// caller's own tokio runtime (e.g. when `install` returns an error in `#[tokio::main]`).
    pub(crate) struct ExportRuntime(Option<tokio::runtime::Runtime>);

    impl ExportRuntime {
        pub(crate) fn new(runtime: tokio::runtime::Runtime) -> Self {
            Self(Some(runtime))
        }

        /// Makes it the current runtime until the returned guard is dropped.
        pub(crate) fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
            self.0.as_ref().map(tokio::runtime::Runtime::enter)
        }

        /// Stops it, waiting up to `timeout` for its tasks (call only outside any runtime).
        pub(crate) fn shutdown_timeout(mut self, timeout: Duration) {
            if let Some(runtime) = self.0.take() {
                runtime.shutdown_timeout(timeout);
            }
        }
    }

    impl Drop for ExportRuntime {
        fn drop(&mut self) {
            if let Some(runtime) = self.0.take() {
                runtime.shutdown_background();
            }
        }
    }
}

#[cfg(feature = "otlp-grpc")]
pub(crate) use grpc::ExportRuntime;

/// Without gRPC export there is no runtime: no value of this type exists.
#[cfg(not(feature = "otlp-grpc"))]
pub(crate) enum ExportRuntime {}

#[cfg(not(feature = "otlp-grpc"))]
impl ExportRuntime {
    pub(crate) fn shutdown_timeout(self, _timeout: std::time::Duration) {
        match self {}
    }
}
