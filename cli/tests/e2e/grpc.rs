//! The registry's gRPC API: the same operations as HTTP, the same error
//! vocabulary, and server reflection.

use futures::StreamExt;
use modelbus_proto::registry::v1 as pb;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::harness::{Db, TestPlatform};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_api_answers_with_the_shared_error_vocabulary_and_reflection() {
    let t = TestPlatform::start(Db::Sqlite).await;
    t.deploy_telco().await;
    let url = t.config.registry_grpc_url();
    let token = t.admin_token.clone();
    let mut c =
        modelbus_proto::connect_lazy(&url, std::sync::Arc::new(move || Some(token.clone())))
            .unwrap();

    let m = c
        .get_model(pb::GetModelRequest {
            name: "telco-churn".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.versions.len(), 1);
    assert_eq!(m.aliases.get("staging"), Some(&1));
    let v = &m.versions[0];
    assert!(v.metrics["roc_auc"] > 0.8);
    assert_eq!(v.lineage.as_ref().unwrap().seed, 42);

    let runs = c
        .list_pipeline_runs(pb::ListPipelineRunsRequest {
            dataset: "telco-churn".into(),
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(runs.runs.len(), 1);
    assert_eq!(runs.runs[0].state, "deployed");
    assert_eq!(runs.runs[0].stages.len(), 5);

    // Errors: NotFound and InvalidArgument, with the message saying what is wrong.
    let e = c
        .get_model(pb::GetModelRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("nope"));
    let e = c
        .apply_spec(pb::ApplySpecRequest {
            toml: "name = \"x\"\nentity_colum = \"id\"\n".into(),
            source_name: "bad.toml".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("bad.toml:2") && e.message().contains("entity_colum"),
        "{}",
        e.message()
    );
    let e = c
        .create_pipeline_run(pb::CreatePipelineRunRequest {
            dataset: "telco-churn".into(),
            spec_digest: "not-a-digest".into(),
            batch_sha256: "0".repeat(64),
            size_bytes: 1,
            submitted_by: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // Reflection lists the registry service.
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut r = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = r
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let first = resp.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("unexpected reflection answer: {first:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"modelbus.registry.v1.RegistryService".to_string()),
        "{names:?}"
    );
}
