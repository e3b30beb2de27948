//! Generated gRPC types, client and server for the registry API
//! (`proto/modelbus/registry/v1/registry.proto`), and the descriptor set that
//! server reflection serves. Only this crate knows the protobuf wire format.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `modelbus.registry.v1`.
pub mod registry {
    /// Version 1 of the registry API.
    pub mod v1 {
        tonic::include_proto!("modelbus.registry.v1");

        /// Encoded `FileDescriptorSet` for gRPC server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/registry_descriptor.bin"));
    }
}

pub use registry::v1::registry_service_client::RegistryServiceClient;
pub use registry::v1::registry_service_server::{RegistryService, RegistryServiceServer};

/// Where a client's bearer token comes from, asked on every call: a service may
/// start before the registry has written its token.
pub type TokenFn = std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The W3C `traceparent` of the caller's current span, asked on every call
/// (this crate knows no tracing: the caller's telemetry answers).
pub type TraceFn = fn() -> Option<String>;

/// Adds `authorization: Bearer <token>` to every request, and the caller's
/// `traceparent` when it has one, so the registry's spans of the call join the
/// caller's trace.
#[derive(Clone)]
pub struct BearerAuth(TokenFn, TraceFn);

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = (self.0)() {
            let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
                tonic::Status::unauthenticated("the configured token is not a valid header value")
            })?;
            req.metadata_mut().insert("authorization", value);
        }
        if let Some(value) = (self.1)().and_then(|tp| tp.parse().ok()) {
            req.metadata_mut().insert("traceparent", value);
        }
        Ok(req)
    }
}

/// A registry client that authenticates its calls.
pub type Client = RegistryServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerAuth>,
>;

/// Connects a registry client to `url` (e.g. `http://127.0.0.1:7071`), lazily:
/// the connection is made on first use and re-made after failures, so services can
/// start before the registry. Every call carries the token `token` returns.
pub fn connect_lazy(url: &str, token: TokenFn) -> Result<Client, tonic::transport::Error> {
    connect_lazy_traced(url, token, || None)
}

/// [`connect_lazy`], and every call also carries the `traceparent` that
/// `trace` returns (the calling span's, asked at each call).
pub fn connect_lazy_traced(
    url: &str,
    token: TokenFn,
    trace: TraceFn,
) -> Result<Client, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(60));
    Ok(RegistryServiceClient::with_interceptor(
        endpoint.connect_lazy(),
        BearerAuth(token, trace),
    ))
}
