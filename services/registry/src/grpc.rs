//! The gRPC API (`modelbus.registry.v1.RegistryService`) with server reflection.

use modelbus_proto::registry::v1 as pb;
use modelbus_proto::{RegistryService, RegistryServiceServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use modelbus_core::auth::{Permission, Principal};

use crate::{Registry, RegistryError};

type R<T> = Result<Response<T>, Status>;

/// The cursor of the next page: the last name of a full page, else empty.
pub(crate) fn next_after<T>(page: &[T], limit: u32, name: impl Fn(&T) -> &String) -> String {
    if page.len() as u64 >= u64::from(limit) {
        page.last().map(|x| name(x).clone()).unwrap_or_default()
    } else {
        String::new()
    }
}

impl Registry {
    /// Authenticates a gRPC call from its `authorization` metadata and checks `p`.
    async fn grpc_auth<T>(&self, req: &Request<T>, p: Permission) -> Result<Principal, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        Ok(self.authorize(header, p).await?)
    }
}

#[tonic::async_trait]
impl RegistryService for Registry {
    #[tracing::instrument(skip_all, fields(source = %req.get_ref().source_name))]
    async fn apply_spec(&self, req: Request<pb::ApplySpecRequest>) -> R<pb::ApplySpecResponse> {
        let principal = self.grpc_auth(&req, Permission::ApplySpec).await?;
        let r = req.into_inner();
        let (spec, created) = self
            .apply_spec(&r.toml, &r.source_name, &principal.name)
            .await?;
        Ok(Response::new(pb::ApplySpecResponse {
            spec: Some(spec.into()),
            created,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_spec(&self, req: Request<pb::GetSpecRequest>) -> R<pb::SpecVersion> {
        self.grpc_auth(&req, Permission::ReadSpecs).await?;
        let r = req.into_inner();
        Ok(Response::new(
            self.get_spec(&r.dataset, &r.digest).await?.into(),
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_datasets(
        &self,
        _req: Request<pb::ListDatasetsRequest>,
    ) -> R<pb::ListDatasetsResponse> {
        self.grpc_auth(&_req, Permission::ReadSpecs).await?;
        let r = _req.into_inner();
        let limit = self.list_limit((r.limit != 0).then_some(r.limit), 100)?;
        let datasets = self.store.list_datasets(&r.after, limit).await?;
        let next_after = next_after(&datasets, limit, |d| &d.name);
        Ok(Response::new(pb::ListDatasetsResponse {
            datasets: datasets.into_iter().map(Into::into).collect(),
            next_after,
        }))
    }

    #[tracing::instrument(skip_all, fields(dataset = %req.get_ref().dataset, batch = %req.get_ref().batch_sha256))]
    async fn create_pipeline_run(
        &self,
        req: Request<pb::CreatePipelineRunRequest>,
    ) -> R<pb::CreatePipelineRunResponse> {
        self.grpc_auth(&req, Permission::WriteRuns).await?;
        let r = req.into_inner();
        let (run, created) = self
            .create_pipeline_run(
                &r.dataset,
                &r.spec_digest,
                &r.batch_sha256,
                r.size_bytes,
                &r.submitted_by,
            )
            .await?;
        Ok(Response::new(pb::CreatePipelineRunResponse {
            run: Some(run.into()),
            created,
        }))
    }

    #[tracing::instrument(skip_all, fields(pipelinerun = %req.get_ref().id))]
    async fn get_pipeline_run(
        &self,
        req: Request<pb::GetPipelineRunRequest>,
    ) -> R<pb::PipelineRun> {
        self.grpc_auth(&req, Permission::Read).await?;
        Ok(Response::new(
            self.pipeline_run(&req.into_inner().id).await?.into(),
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_pipeline_runs(
        &self,
        req: Request<pb::ListPipelineRunsRequest>,
    ) -> R<pb::ListPipelineRunsResponse> {
        self.grpc_auth(&req, Permission::Read).await?;
        let r = req.into_inner();
        let dataset = (!r.dataset.is_empty()).then_some(r.dataset.as_str());
        let limit = self.list_limit((r.limit != 0).then_some(r.limit), 50)?;
        let runs = self.store.list_pipeline_runs(dataset, limit).await?;
        Ok(Response::new(pb::ListPipelineRunsResponse {
            runs: runs.into_iter().map(Into::into).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(model = %req.get_ref().model, sha256 = %req.get_ref().model_sha256))]
    async fn register_model_version(
        &self,
        req: Request<pb::RegisterModelVersionRequest>,
    ) -> R<pb::RegisterModelVersionResponse> {
        let principal = self.grpc_auth(&req, Permission::RegisterModels).await?;
        let (v, created) = self
            .register_model_version(req.into_inner().into(), &principal.name)
            .await?;
        Ok(Response::new(pb::RegisterModelVersionResponse {
            version: Some(v.into()),
            created,
        }))
    }

    #[tracing::instrument(skip_all, fields(model = %req.get_ref().name))]
    async fn get_model(&self, req: Request<pb::GetModelRequest>) -> R<pb::RegisteredModel> {
        self.grpc_auth(&req, Permission::Read).await?;
        Ok(Response::new(
            self.model(&req.into_inner().name).await?.into(),
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_models(&self, _req: Request<pb::ListModelsRequest>) -> R<pb::ListModelsResponse> {
        self.grpc_auth(&_req, Permission::Read).await?;
        let r = _req.into_inner();
        let limit = self.list_limit((r.limit != 0).then_some(r.limit), 100)?;
        let models = self.store.list_models(&r.after, limit).await?;
        let next_after = next_after(&models, limit, |m| &m.name);
        Ok(Response::new(pb::ListModelsResponse {
            models: models.into_iter().map(Into::into).collect(),
            next_after,
        }))
    }

    #[tracing::instrument(skip_all, fields(model = %req.get_ref().model, version = req.get_ref().version))]
    async fn get_model_version(
        &self,
        req: Request<pb::GetModelVersionRequest>,
    ) -> R<pb::ModelVersion> {
        self.grpc_auth(&req, Permission::Read).await?;
        let r = req.into_inner();
        Ok(Response::new(
            self.model_version(&r.model, r.version).await?.into(),
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn authenticate(&self, req: Request<pb::AuthenticateRequest>) -> R<pb::Principal> {
        self.grpc_auth(&req, Permission::Introspect).await?;
        let token = req.into_inner().token;
        let p = self.authenticate(Some(&format!("Bearer {token}"))).await?;
        Ok(Response::new(pb::Principal {
            name: p.name,
            roles: p.roles.iter().map(|r| r.as_str().to_string()).collect(),
            token_id: p.token_id,
        }))
    }

    #[tracing::instrument(skip_all, fields(model = %req.get_ref().model))]
    async fn list_labelled_windows(
        &self,
        req: Request<pb::ListLabelledWindowsRequest>,
    ) -> R<pb::ListLabelledWindowsResponse> {
        self.grpc_auth(&req, Permission::Read).await?;
        let r = req.into_inner();
        let limit = if r.limit == 0 {
            1_000
        } else {
            r.limit.min(10_000)
        };
        Ok(Response::new(pb::ListLabelledWindowsResponse {
            window_ids: self.store.labelled_windows(&r.model, limit).await?,
        }))
    }

    #[tracing::instrument(skip_all, fields(window = %req.get_ref().window_id))]
    async fn get_window_labels(
        &self,
        req: Request<pb::GetWindowLabelsRequest>,
    ) -> R<pb::WindowLabels> {
        self.grpc_auth(&req, Permission::Read).await?;
        let id = req.into_inner().window_id;
        let Some(w) = self.store.window(&id).await? else {
            return Err(RegistryError::NotFound(format!("no window {id:?}")).into());
        };
        let labels = self.store.window_labels(&id).await?;
        Ok(Response::new(pb::WindowLabels {
            window_id: w.window_id,
            environment: w.environment.to_string(),
            model: w.model.to_string(),
            version: w.version,
            rows: w.rows,
            indexed: labels.indexed,
            probabilities: labels.probabilities,
            positive: labels.positive,
            prediction_ids: labels.ids,
            records_sha256: w.records_sha256.map(|d| d.to_hex()).unwrap_or_default(),
            estimated_json: w
                .estimated
                .as_ref()
                .and_then(|e| serde_json::to_string(e).ok())
                .unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn submit_signed_statement(
        &self,
        req: Request<pb::SubmitSignedStatementRequest>,
    ) -> R<pb::SubmitSignedStatementResponse> {
        // Who may submit which kind is decided by `submit_signed` (approver,
        // operator), once the statement's kind is known.
        let principal = self.grpc_auth(&req, Permission::Read).await?;
        let envelope: modelbus_core::signing::DsseEnvelope =
            serde_json::from_str(&req.into_inner().envelope_json).map_err(|e| {
                Status::invalid_argument(format!("envelope_json is not a DSSE envelope: {e}"))
            })?;
        use modelbus_core::signing::StatementKind;
        let out = self
            .submit_signed(
                &principal,
                &envelope,
                &[
                    StatementKind::Approve,
                    StatementKind::Reject,
                    StatementKind::Rollback,
                ],
            )
            .await?;
        let d = out.decision;
        Ok(Response::new(pb::SubmitSignedStatementResponse {
            kind: d.kind,
            model: d.model,
            version: d.version,
            environment: d.environment,
            nonce: d.nonce,
            audit_seq: out.audit_seq,
            promotion_decided: out.promotion.is_some(),
            promotion_allowed: out.promotion.as_ref().is_some_and(|p| p.allow),
            promotion_reasons: out.promotion.map(|p| p.reasons).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(run = %req.get_ref().id))]
    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> R<pb::Run> {
        self.grpc_auth(&req, Permission::Read).await?;
        Ok(Response::new(self.run(&req.into_inner().id).await?.into()))
    }
}

/// How long one gRPC call may take before it is answered `DEADLINE_EXCEEDED`.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves the gRPC API with reflection on a bound listener until `shutdown`.
///
/// Bounded as the HTTP servers are (`http.*`): at most `max_connections`
/// connections at once, at most 128 concurrent streams and 64 KiB of headers
/// per connection, one minute per call, dead peers found by HTTP/2 pings.
pub async fn serve(
    registry: Registry,
    listener: TcpListener,
    shutdown: CancellationToken,
    limits: &modelbus_core::config::HttpConfig,
) -> Result<(), RegistryError> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RegistryError::Internal(format!("reflection: {e}")))?;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let incoming = futures::stream::unfold((listener, slots), |(listener, slots)| async move {
        loop {
            let permit = slots.clone().acquire_owned().await.ok()?;
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = Limited {
                        inner: stream,
                        _permit: permit,
                    };
                    return Some((Ok::<_, std::io::Error>(conn), (listener, slots)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    });
    tonic::transport::Server::builder()
        .timeout(CALL_TIMEOUT)
        .max_concurrent_streams(128)
        .http2_max_header_list_size(64 * 1024)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(limits.header_read_timeout))
        .trace_fn(|req| {
            let traceparent = req.headers().get("traceparent");
            modelbus_core::telemetry::grpc_server_span(
                req.uri().path(),
                traceparent.and_then(|v| v.to_str().ok()),
            )
        })
        .add_service(reflection)
        .add_service(RegistryServiceServer::new(registry))
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await
        .map_err(|e| RegistryError::Internal(format!("gRPC server: {e}")))
}

/// An accepted connection holding one of the listener's connection slots
/// until it closes.
struct Limited {
    inner: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Limited {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl tokio::io::AsyncRead for Limited {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Limited {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
