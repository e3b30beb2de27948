//! The one way to build an HTTP client in modelbus.
//!
//! reqwest is built with rustls but without a crypto provider of its own
//! (`rustls-no-provider`: ring, which async-nats already builds, instead of
//! aws-lc-rs and its long C build). A reqwest client built before a process
//! has a default provider panics, so every client comes from
//! [`client_builder`], which installs ring first; `clippy.toml` forbids
//! `reqwest::Client::new` and `reqwest::Client::builder` elsewhere.

use std::sync::Once;

/// Makes ring the process's default rustls provider (once; a provider some
/// other code installed first is kept).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a default is already installed: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A reqwest client builder whose TLS works (the system's roots, ring).
#[allow(clippy::disallowed_methods)]
pub fn client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// A client with reqwest's defaults, as `reqwest::Client::new()` would be
/// (an error instead of a panic if TLS cannot be set up).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    client_builder().build()
}
