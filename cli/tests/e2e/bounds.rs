//! What one request may make the registry read or serve is bounded: list
//! pages, evidence bundles, reports; and pages are rendered by the registry
//! from the JSON, never served as stored HTML.

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Db, TestPlatform};

async fn get(t: &TestPlatform, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let resp = t
        .http
        .get(format!("{}{path}", t.config.registry_http_url()))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_reads_are_bounded_and_pages_are_rendered_not_stored() {
    let t = TestPlatform::start_with(Db::Sqlite, |c| {
        c.registry.max_list_limit = 5;
        c.registry.max_evidence_entries = 3;
    })
    .await;
    t.deploy_telco().await;

    // A limit above registry.max_list_limit (or 0) is refused, naming the key.
    for path in [
        "/v1/models?limit=6",
        "/v1/datasets?limit=1000000",
        "/v1/pipeline-runs?limit=6",
        "/v1/audit?limit=6",
        "/v1/audit?limit=0",
    ] {
        let (status, _, body) = get(&t, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body.contains("limit"), "{path}: {body}");
    }
    let (_, _, body) = get(&t, "/v1/models?limit=6").await;
    assert!(body.contains("registry.max_list_limit"), "{body}");

    // Datasets page by name: 7 datasets in pages of 5, and the CLI's client
    // follows the pages.
    let spec = std::fs::read_to_string(modelbus_testkit::telco_spec()).unwrap();
    for i in 0..6 {
        let text = spec.replace("name = \"telco-churn\"", &format!("name = \"ds-{i}\""));
        let resp = t
            .http
            .post(format!("{}/v1/datasets", t.config.registry_http_url()))
            .body(text)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    let (_, _, body) = get(&t, "/v1/datasets?limit=5").await;
    let first: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first["datasets"].as_array().unwrap().len(), 5, "{first:#}");
    let next = first["next_after"].as_str().unwrap();
    assert_eq!(next, "ds-4");
    let (_, _, body) = get(&t, &format!("/v1/datasets?limit=5&after={next}")).await;
    let second: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = second["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ds-5", "telco-churn"]);
    assert_eq!(second["next_after"], "");
    let all = t.client.datasets().await.unwrap();
    assert_eq!(all["datasets"].as_array().unwrap().len(), 7);

    // An evidence bundle longer than registry.max_evidence_entries is refused
    // with a message that says so, not assembled.
    let (status, _, body) = get(&t, "/v1/models/telco-churn/versions/1/evidence").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("registry.max_evidence_entries"), "{body}");

    // The evaluation page is rendered from the report's JSON: a version record
    // pointing at stored HTML with a script (as a forged model.trained could
    // have set) changes nothing, and the page carries the CSP.
    let store =
        modelbus_core::artifact::ArtifactStore::open(&t.config.artifact_location()).unwrap();
    let evil = store
        .put(bytes::Bytes::from_static(
            b"<html><script>alert(document.cookie)</script></html>",
        ))
        .await
        .unwrap();
    let db = modelbus_registry::store::Store::connect(t.config.database_url().expose())
        .await
        .unwrap();
    sqlx::query(
        "UPDATE model_versions SET evaluation_html_sha256 = $1 WHERE model = 'telco-churn'",
    )
    .bind(evil.sha256.to_hex())
    .execute(db.pool())
    .await
    .unwrap();
    let (status, headers, page) =
        get(&t, "/v1/models/telco-churn/versions/1/evaluation.html").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("<script"), "stored HTML was served");
    let (_, _, report) = get(&t, "/v1/models/telco-churn/versions/1/evaluation").await;
    let report: modelbus_models::evaluate::EvaluationReport =
        serde_json::from_str(&report).unwrap();
    assert_eq!(page, modelbus_models::evaluation_html::render(&report));
    assert_eq!(
        headers["content-security-policy"],
        modelbus_core::ops::CSP,
        "{headers:?}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let (_, headers, _) = get(
        &t,
        &format!("/v1/batches/{}/report.html", {
            let runs = t.client.pipeline_runs(None, 5).await.unwrap();
            runs["pipeline_runs"][0]["batch_sha256"]
                .as_str()
                .unwrap()
                .to_string()
        }),
    )
    .await;
    assert_eq!(headers["content-security-policy"], modelbus_core::ops::CSP);

    // /v1/reports takes any digest, but reads no artifact larger than a report.
    let big = store
        .put(bytes::Bytes::from(vec![b' '; 33 * 1024 * 1024]))
        .await
        .unwrap();
    let (status, _, body) = get(&t, &format!("/v1/reports/{}", big.sha256.to_hex())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("not a report"), "{body}");
}
