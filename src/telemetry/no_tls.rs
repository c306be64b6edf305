//! Without the `tls` feature there is no TLS: `https://` endpoints and certificate files are
//! refused with [`InitError::NotBuiltIn`], so no value of [`ClientTls`] exists.

use std::sync::Arc;

use super::env::TlsFiles;
use super::error::InitError;

#[derive(Debug)]
pub(crate) enum ClientTls {}

pub(crate) fn load(files: &TlsFiles, https: bool) -> Result<Option<Arc<ClientTls>>, InitError> {
    let file = [&files.ca, &files.cert, &files.key]
        .into_iter()
        .flatten()
        .next();
    match file {
        Some(file) => Err(InitError::NotBuiltIn {
            setting: format!("{}={}", file.variable, file.value),
            what: "TLS",
            feature: "tls",
        }),
        None if https => Err(InitError::NotBuiltIn {
            setting: "an https:// OTLP endpoint".to_owned(),
            what: "TLS",
            feature: "tls",
        }),
        None => Ok(None),
    }
}
