//! Without the `prometheus` feature there is no endpoint: no value of these types exists (the
//! settings that would ask for one are refused with [`InitError::NotBuiltIn`]).

use super::error::InitError;
use super::export_stats::Signals;
use crate::{Builder, SpanMetricsHandle};
use std::net::{SocketAddr, TcpListener};

pub(crate) enum Endpoint {}

pub(crate) enum Running {}

impl Endpoint {
    pub(crate) fn new(listener: TcpListener, _bounds: &[f64]) -> Result<Self, InitError> {
        drop(listener);
        Err(InitError::NotBuiltIn {
            setting: "a Prometheus listen address".to_owned(),
            what: "the Prometheus endpoint",
            feature: "prometheus",
        })
    }

    pub(crate) fn feed(&self, _layer: Builder) -> Builder {
        match *self {}
    }

    pub(crate) fn start(
        self,
        _spanmetrics: &SpanMetricsHandle,
        _token: Option<String>,
        _stats: &Signals,
    ) -> Result<Running, InitError> {
        match self {}
    }
}

impl Running {
    pub(crate) fn addr(&self) -> SocketAddr {
        match *self {}
    }

    pub(crate) fn install_global(&self) {
        match *self {}
    }

    pub(crate) fn stop(&mut self) {
        match *self {}
    }
}
