//! The gRPC API (`modelbus.registry.v1.RegistryService`) with server reflection.

use modelbus_proto::registry::v1 as pb;
use modelbus_proto::{RegistryService, RegistryServiceServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use modelbus_core::auth::{Permission, Principal};

use crate::{Registry, RegistryError};

type R<T> = Result<Response<T>, Status>;

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
        let datasets = self.store.list_datasets().await?;
        Ok(Response::new(pb::ListDatasetsResponse {
            datasets: datasets.into_iter().map(Into::into).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(dataset = %req.get_ref().dataset, batch = %req.get_ref().batch_sha256))]
    async fn create_pipeline_run(
        &self,
        req: Request<pb::CreatePipelineRunRequest>,
    ) -> R<pb::CreatePipelineRunResponse> {
        self.grpc_auth(&req, Permission::Internal).await?;
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
        let limit = if r.limit == 0 { 50 } else { r.limit };
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
        let principal = self.grpc_auth(&req, Permission::Internal).await?;
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
        let models = self.store.list_models().await?;
        Ok(Response::new(pb::ListModelsResponse {
            models: models.into_iter().map(Into::into).collect(),
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

/// Serves the gRPC API with reflection on a bound listener until `shutdown`.
pub async fn serve(
    registry: Registry,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RegistryError> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RegistryError::Internal(format!("reflection: {e}")))?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(reflection)
        .add_service(RegistryServiceServer::new(registry))
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await
        .map_err(|e| RegistryError::Internal(format!("gRPC server: {e}")))
}
