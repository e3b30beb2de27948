//! The registry's event consumers: it follows every event to keep each pipeline
//! run's state and stage timeline, applies gates to newly trained versions, signs
//! staging promotions with its automation key, and sets aliases once a deployment
//! completed. Dead letters mark their run failed.

use modelbus_core::Context;
use modelbus_core::bus::{Delivery, HandlerError};
use modelbus_core::events::*;
use modelbus_core::ids::Environment;
use modelbus_core::signing::{ApprovalPredicate, DsseEnvelope, Statement, new_nonce};
use modelbus_dataset::spec::DatasetSpec;

use crate::{AUTOMATION_APPROVER, Registry, RegistryError};

/// Source attribute of events the registry publishes.
pub const SOURCE: &str = "/modelbus/registry";
/// Durable consumer name.
pub const CONSUMER: &str = "registry";
/// How long an automation approval stays valid.
pub const AUTOMATION_APPROVAL_TTL: time::Duration = time::Duration::hours(24);

fn retry(e: RegistryError) -> HandlerError {
    match e {
        RegistryError::InvalidArgument(m) | RegistryError::NotFound(m) => HandlerError::Reject(m),
        other => HandlerError::Retry(other.to_string()),
    }
}

impl Registry {
    /// Appends an audit entry for an event, once per event id.
    async fn audit_event<T>(
        &self,
        e: &Envelope<T>,
        actor: &str,
        action: &str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Result<(), HandlerError> {
        let mut detail = detail;
        if let Some(obj) = detail.as_object_mut() {
            obj.insert("event_id".into(), serde_json::json!(e.id));
            if let Some(run) = &e.pipelinerun {
                obj.insert("pipeline_run".into(), serde_json::json!(run.as_str()));
            }
        }
        self.store
            .append_audit(
                actor,
                action,
                subject,
                &detail,
                // Keyed on type and id: an event of another type that copies
                // this id (anyone can write any id) never suppresses this entry.
                Some(&format!("event/{}/{}", e.event_type, e.id)),
            )
            .await
            .map(|_| ())
            .map_err(retry)
    }

    /// The promotion policy's input for a version: the spec's gates, the version's
    /// evaluation report (with the champion comparison) and the validation summary
    /// of the batch it was trained on.
    async fn policy_input(
        &self,
        spec: &DatasetSpec,
        version: &crate::types::ModelVersion,
    ) -> Result<serde_json::Value, HandlerError> {
        let mut evaluation = serde_json::json!(version.metrics);
        let mut comparison = serde_json::Value::Null;
        if !version.evaluation_sha256.is_empty() {
            let report = self
                .report(&version.evaluation_sha256)
                .await
                .map_err(retry)?;
            evaluation = report["evaluation"].clone();
            comparison = report["comparison"].clone();
        }
        let validation = if version.lineage.report_sha256.is_empty() {
            serde_json::Value::Null
        } else {
            let r = self
                .report(&version.lineage.report_sha256)
                .await
                .map_err(retry)?;
            let warnings: Vec<serde_json::Value> = r["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["success"] == false && x["severity"] == "warning")
                .map(|x| x["expectation"].clone())
                .collect();
            serde_json::json!({ "success": r["success"], "rows": r["rows"], "warnings": warnings })
        };
        Ok(serde_json::json!({
            "model": version.model,
            "version": version.version,
            "gates": spec.gates,
            "evaluation": evaluation,
            "comparison": comparison,
            "validation": validation,
        }))
    }

    /// Handles one event from the bus.
    pub async fn handle(&self, ctx: &Context, d: &Delivery) -> Result<(), HandlerError> {
        // The subject decides the handler (NATS permissions say who may publish
        // on it); an event whose `type` is not its subject's is audited and
        // refused, whichever service it was aimed at: the registry sees them all.
        if let Err(misrouted) = d.check_route() {
            self.store
                .append_audit(
                    "bus",
                    "event.misrouted",
                    &d.subject,
                    &serde_json::json!({
                        "subject": d.subject,
                        "stream_sequence": d.stream_sequence,
                        "error": misrouted.to_string(),
                    }),
                    Some(&format!("misrouted/{}", d.stream_sequence)),
                )
                .await
                .map_err(retry)?;
            return Err(HandlerError::from(misrouted));
        }
        let name = d.event_name().unwrap_or("");
        match name {
            BatchSubmitted::NAME => {
                let e = d.decode::<BatchSubmitted>()?;
                // Ingest's upload created the run first (with the authenticated
                // uploader); a batch dropped on the bus names its submitter
                // itself, which nobody checked.
                let claimed = modelbus_core::auth::claimed_submitter(&e.data.submitted_by);
                let (run, _) = self
                    .create_pipeline_run(
                        e.data.dataset.as_str(),
                        &e.data.spec_digest.to_hex(),
                        &e.data.batch_sha256.to_hex(),
                        e.data.size_bytes,
                        &claimed,
                    )
                    .await
                    .map_err(retry)?;
                self.store
                    .set_stage(&run.id, "validation", "running", "")
                    .await
                    .map_err(retry)?;
            }
            BatchValidated::NAME => {
                let e = d.decode::<BatchValidated>()?;
                let Some(run) = e.pipelinerun.as_ref() else {
                    return Ok(());
                };
                let detail = format!(
                    "{} rows valid; {} warning(s)",
                    e.data.rows,
                    e.data.warnings.len()
                );
                self.store
                    .set_run_report(run.as_str(), &e.data.report_sha256.to_hex(), e.data.rows)
                    .await
                    .map_err(retry)?;
                self.store
                    .set_stage(run.as_str(), "validation", "succeeded", &detail)
                    .await
                    .map_err(retry)?;
                self.store
                    .set_stage(run.as_str(), "features", "running", "")
                    .await
                    .map_err(retry)?;
                self.store
                    .set_run_state(run.as_str(), "validated", None)
                    .await
                    .map_err(retry)?;
            }
            BatchRejected::NAME => {
                let e = d.decode::<BatchRejected>()?;
                self.audit_event(
                    &e,
                    "ingest",
                    "batch.rejected",
                    &format!("dataset/{}", e.data.dataset),
                    serde_json::json!({
                        "batch_sha256": e.data.batch_sha256.to_hex(),
                        "report_sha256": e.data.report_sha256.to_hex(),
                        "reasons": e.data.reasons,
                    }),
                )
                .await?;
                let Some(run) = e.pipelinerun.as_ref() else {
                    return Ok(());
                };
                self.store
                    .set_run_report(run.as_str(), &e.data.report_sha256.to_hex(), 0)
                    .await
                    .map_err(retry)?;
                self.store
                    .set_stage(
                        run.as_str(),
                        "validation",
                        "failed",
                        &e.data.reasons.join("; "),
                    )
                    .await
                    .map_err(retry)?;
                self.store
                    .set_run_state(run.as_str(), "rejected", Some(&e.data.reasons))
                    .await
                    .map_err(retry)?;
            }
            FeaturesReady::NAME => {
                let e = d.decode::<FeaturesReady>()?;
                let Some(run) = e.pipelinerun.as_ref() else {
                    return Ok(());
                };
                let detail = format!(
                    "{} features; {} training rows, {} holdout rows",
                    e.data.num_features, e.data.train_rows, e.data.holdout_rows
                );
                self.store
                    .set_stage(run.as_str(), "features", "succeeded", &detail)
                    .await
                    .map_err(retry)?;
                self.store
                    .set_stage(run.as_str(), "training", "running", "")
                    .await
                    .map_err(retry)?;
                self.store
                    .set_run_state(run.as_str(), "features_ready", None)
                    .await
                    .map_err(retry)?;
            }
            ModelTrained::NAME => {
                let e = d.decode::<ModelTrained>()?;
                self.on_model_trained(ctx, &e).await?;
            }
            ApprovalRefused::NAME => {
                let e = d.decode::<ApprovalRefused>()?;
                self.audit_event(
                    &e,
                    "deployer",
                    "approval.refused",
                    &format!("model/{}/v{}", e.data.model, e.data.version),
                    serde_json::json!({ "environment": e.data.environment, "reason": e.data.reason }),
                )
                .await?;
                // A production grant the deployer refused is decided again
                // (after a backoff) rather than left stuck.
                if e.data.environment == Environment::Production
                    && e.source == "/modelbus/deployer"
                    && let Some(grant) = &e.causationid
                    && self
                        .store
                        .reopen_promotion(
                            e.data.model.as_str(),
                            e.data.version,
                            "production",
                            grant,
                        )
                        .await
                        .map_err(retry)?
                {
                    tracing::warn!(model = %e.data.model, version = e.data.version, reason = %e.data.reason,
                        "the deployer refused the production grant; it will be decided again");
                }
                let reason = format!("deployer refused the approval: {}", e.data.reason);
                self.store
                    .record_deployment_event(
                        &e.id,
                        "refused",
                        e.data.environment.as_str(),
                        e.data.model.as_str(),
                        e.data.version,
                        &e.data.reason,
                    )
                    .await
                    .map_err(retry)?;
                if let Some(run) = e.pipelinerun.as_ref() {
                    self.store
                        .set_stage(run.as_str(), "deployment", "failed", &reason)
                        .await
                        .map_err(retry)?;
                    self.store
                        .set_run_state(run.as_str(), "failed", Some(&[reason]))
                        .await
                        .map_err(retry)?;
                }
            }
            DeploymentStarted::NAME => {
                let e = d.decode::<DeploymentStarted>()?;
                self.audit_event(
                    &e,
                    "deployer",
                    "deployment.started",
                    &format!("model/{}/v{}", e.data.model, e.data.version),
                    serde_json::json!({
                        "environment": e.data.environment,
                        "model_sha256": e.data.model_sha256.to_hex(),
                        "revision": e.data.revision,
                        "traffic_percent": e.data.traffic_percent,
                    }),
                )
                .await?;
                self.store
                    .record_deployment_event(
                        &e.id,
                        "started",
                        e.data.environment.as_str(),
                        e.data.model.as_str(),
                        e.data.version,
                        &if e.data.traffic_percent < 100 {
                            format!(
                                "desired state revision {}, canary at {}% of traffic",
                                e.data.revision, e.data.traffic_percent
                            )
                        } else {
                            format!("desired state revision {}", e.data.revision)
                        },
                    )
                    .await
                    .map_err(retry)?;
            }
            DeploymentCompleted::NAME => {
                let e = d.decode::<DeploymentCompleted>()?;
                let env = e.data.environment.as_str();
                self.audit_event(
                    &e,
                    "deployer",
                    "deployment.completed",
                    &format!("model/{}/v{}", e.data.model, e.data.version),
                    serde_json::json!({
                        "environment": env,
                        "model_sha256": e.data.model_sha256.to_hex(),
                        "traffic_percent": e.data.traffic_percent,
                    }),
                )
                .await?;
                self.store
                    .set_alias(e.data.model.as_str(), env, e.data.version)
                    .await
                    .map_err(retry)?;
                self.store
                    .record_deployment_event(
                        &e.id,
                        "completed",
                        env,
                        e.data.model.as_str(),
                        e.data.version,
                        &if e.data.traffic_percent < 100 {
                            format!("serving {}% of traffic", e.data.traffic_percent)
                        } else {
                            "serving".to_string()
                        },
                    )
                    .await
                    .map_err(retry)?;
                if let Some(run) = e.pipelinerun.as_ref() {
                    let detail = format!("{} v{} serving in {env}", e.data.model, e.data.version);
                    self.store
                        .set_stage(run.as_str(), "deployment", "succeeded", &detail)
                        .await
                        .map_err(retry)?;
                    self.store
                        .set_run_state(run.as_str(), "deployed", None)
                        .await
                        .map_err(retry)?;
                }
            }
            DeploymentRolledBack::NAME => {
                let e = d.decode::<DeploymentRolledBack>()?;
                let env = e.data.environment.as_str();
                let actor = if e.data.automatic {
                    "deployer".to_string()
                } else {
                    e.data.operator.clone()
                };
                self.audit_event(
                    &e,
                    &actor,
                    "deployment.rolled_back",
                    &format!("model/{}/v{}", e.data.model, e.data.from_version),
                    serde_json::json!({
                        "environment": env,
                        "to_version": e.data.to_version,
                        "reason": e.data.reason,
                        "automatic": e.data.automatic,
                    }),
                )
                .await?;
                self.store
                    .record_deployment_event(
                        &e.id,
                        "rolled_back",
                        env,
                        e.data.model.as_str(),
                        e.data.from_version,
                        &format!(
                            "back to v{}{}: {}",
                            e.data.to_version,
                            if e.data.automatic { " (automatic)" } else { "" },
                            e.data.reason
                        ),
                    )
                    .await
                    .map_err(retry)?;
                if e.data.to_version > 0 {
                    self.store
                        .set_alias(e.data.model.as_str(), env, e.data.to_version)
                        .await
                        .map_err(retry)?;
                }
            }
            ServingStats::NAME => {
                let e = d.decode::<ServingStats>()?;
                let s = &e.data;
                if s.errors > s.requests || !(s.p99_ms.is_finite() && s.p99_ms >= 0.0) {
                    return Err(HandlerError::Reject(format!(
                        "serving.stats: {} errors in {} requests, p99 {} ms: not a statistics window",
                        s.errors, s.requests, s.p99_ms
                    )));
                }
                self.store
                    .record_serving_stats(
                        &e.identity(),
                        s.environment.as_str(),
                        s.model.as_str(),
                        s.version,
                        s.requests,
                        s.errors,
                        s.p99_ms,
                        &s.window_end,
                    )
                    .await
                    .map_err(retry)?;
            }
            MonitorWindowClosed::NAME => {
                let e = d.decode::<MonitorWindowClosed>()?;
                self.on_window_closed(&e.data).await?;
            }
            LabelsObserved::NAME => {
                let e = d.decode::<LabelsObserved>()?;
                self.on_labels_observed(&e).await?;
            }
            WindowPerformance::NAME => {
                let e = d.decode::<WindowPerformance>()?;
                self.on_window_performance(&e).await?;
            }
            // Published by the registry itself or of no concern to it.
            _ => {}
        }
        Ok(())
    }

    /// Keeps a closed window and audits each decision the monitoring policy
    /// took on it (under the version's subject, so it is in its evidence).
    async fn on_window_closed(&self, w: &MonitorWindowClosed) -> Result<(), HandlerError> {
        let bad = |why: String| HandlerError::Reject(format!("monitor.window.closed: {why}"));
        if w.window_id.is_empty() || w.window_id.len() > 512 {
            return Err(bad(format!(
                "window_id of {} bytes (expected 1 to 512)",
                w.window_id.len()
            )));
        }
        if !(w.drift_share.is_finite() && (0.0..=1.0).contains(&w.drift_share)) {
            return Err(bad(format!(
                "drift_share {} is not in [0, 1]",
                w.drift_share
            )));
        }
        if w.scores.len() > 10_000 || w.drifted_columns.len() > 10_000 || w.decisions.len() > 100 {
            return Err(bad(format!(
                "{} scores, {} drifted columns, {} decisions: more than a window has",
                w.scores.len(),
                w.drifted_columns.len(),
                w.decisions.len()
            )));
        }
        if let Some((c, v)) = w.scores.iter().find(|(_, v)| !v.is_finite()) {
            return Err(bad(format!("score of {c:?} is {v}, not a number")));
        }
        for dec in &w.decisions {
            if !matches!(dec.kind.as_str(), "drift.detected" | "performance.degraded")
                || dec.reason.len() > 4096
            {
                return Err(bad(format!(
                    "decision {:?} is not drift.detected or performance.degraded with a reason of at most 4096 bytes",
                    dec.kind.chars().take(64).collect::<String>()
                )));
            }
        }
        self.store.record_window(w).await.map_err(retry)?;
        self.index_window(w).await?;
        for (i, dec) in w.decisions.iter().enumerate() {
            self.store
                .append_audit(
                    crate::MONITOR_PRINCIPAL,
                    &format!("monitoring.{}", dec.kind.replace('.', "_")),
                    &format!("model/{}/v{}", w.model, w.version),
                    &serde_json::json!({
                        "window_id": w.window_id,
                        "environment": w.environment,
                        "reason": dec.reason,
                        "rows": w.rows,
                        "drifted_columns": w.drifted_columns,
                        "report_sha256": w.report_sha256,
                        "policy_digest": w.policy_digest,
                    }),
                    Some(&format!("window/{}/{i}", w.window_id)),
                )
                .await
                .map_err(retry)?;
        }
        Ok(())
    }

    async fn on_model_trained(
        &self,
        ctx: &Context,
        e: &Envelope<ModelTrained>,
    ) -> Result<(), HandlerError> {
        let m = &e.data;
        let version = self
            .store
            .model_version(m.model.as_str(), m.version)
            .await
            .map_err(retry)?
            .ok_or_else(|| {
                HandlerError::Reject(format!(
                    "model.trained names {} v{}, which is not registered",
                    m.model, m.version
                ))
            })?;
        if let (Some(json), Some(html)) = (&m.evaluation_sha256, &m.evaluation_html_sha256)
            && version.evaluation_sha256.is_empty()
        {
            self.store
                .set_evaluation(m.model.as_str(), m.version, &json.to_hex(), &html.to_hex())
                .await
                .map_err(retry)?;
        }
        let version = self
            .model_version(m.model.as_str(), m.version)
            .await
            .map_err(retry)?;
        if version.model_sha256 != m.model_sha256.to_hex() {
            return Err(HandlerError::Reject(format!(
                "model.trained says {} v{} is {}, the registry has {}",
                m.model, m.version, m.model_sha256, version.model_sha256
            )));
        }
        let run = e.pipelinerun.as_ref().map(|r| r.as_str().to_string());
        if let Some(run) = &run {
            let detail = format!(
                "{} v{} ({}), roc_auc {:.4}",
                m.model,
                m.version,
                m.algorithm,
                m.metrics.get("roc_auc").copied().unwrap_or(f64::NAN)
            );
            self.store
                .set_run_model(run, m.model.as_str(), m.version)
                .await
                .map_err(retry)?;
            self.store
                .set_stage(run, "training", "succeeded", &detail)
                .await
                .map_err(retry)?;
            self.store
                .set_run_state(run, "trained", None)
                .await
                .map_err(retry)?;
        }
        // Gates come from the spec the version was trained under.
        let spec_version = self
            .get_spec("", &version.lineage.spec_digest)
            .await
            .map_err(retry)?;
        let spec = DatasetSpec::parse(&spec_version.toml, "registered spec")
            .map_err(|err| HandlerError::Reject(err.to_string()))?
            .spec;
        let checks = if version.status == "pending" {
            let input = self.policy_input(&spec, &version).await?;
            let decision = self
                .policies
                .evaluate(&input)
                .map_err(|e| HandlerError::Reject(e.to_string()))?;
            let status = if decision.allow {
                "candidate"
            } else {
                "rejected"
            };
            let record = crate::types::PolicyDecision {
                allow: decision.allow,
                reasons: decision.reasons.clone(),
                policy_digest: decision.policy_digest.clone(),
            };
            self.store
                .set_gate_decision(
                    m.model.as_str(),
                    m.version,
                    status,
                    &decision.checks,
                    Some(&record),
                )
                .await
                .map_err(retry)?;
            self.audit_event(
                e,
                "registry",
                "gates.decided",
                &format!("model/{}/v{}", m.model, m.version),
                serde_json::json!({
                    "allow": decision.allow,
                    "reasons": decision.reasons,
                    "policy_digest": decision.policy_digest,
                }),
            )
            .await?;
            decision.checks
        } else {
            version.gate_checks.clone()
        };
        // Re-read: a redelivery keeps the first decision.
        let decided = self
            .model_version(m.model.as_str(), m.version)
            .await
            .map_err(retry)?;
        let event_checks: Vec<modelbus_core::events::GateCheck> = checks
            .iter()
            .map(|c| modelbus_core::events::GateCheck {
                gate: c.gate.clone(),
                passed: c.passed,
                detail: c.detail.clone(),
            })
            .collect();
        // Keyed by run too: a second run that lands on an existing version (same
        // model digest from other bytes) must still get its own events.
        let key = format!("{}/{}/{}", m.model, m.version, run.as_deref().unwrap_or(""));
        if decided.status == "rejected" {
            let reasons: Vec<String> = decided
                .decision
                .as_ref()
                .map(|d| d.reasons.clone())
                .unwrap_or_else(|| {
                    checks
                        .iter()
                        .filter(|c| !c.passed)
                        .map(|c| format!("gate {} failed: {}", c.gate, c.detail))
                        .collect()
                });
            if let Some(run) = &run {
                self.store
                    .set_stage(run, "gates", "failed", &reasons.join("; "))
                    .await
                    .map_err(retry)?;
                self.store
                    .set_run_state(run, "rejected", Some(&reasons))
                    .await
                    .map_err(retry)?;
            }
            let out = Envelope::new(
                SOURCE,
                &key,
                ModelRejected {
                    model: m.model.clone(),
                    version: m.version,
                    model_sha256: m.model_sha256,
                    checks: event_checks,
                    reasons,
                },
            )
            .with_subject(m.model.as_str());
            ctx.bus.publish_caused(out, e).await?;
            return Ok(());
        }
        if let Some(run) = &run {
            let detail = if checks.is_empty() {
                "no gates configured".to_string()
            } else {
                format!("{} gate(s) passed", checks.len())
            };
            self.store
                .set_stage(run, "gates", "succeeded", &detail)
                .await
                .map_err(retry)?;
            self.store
                .set_run_state(run, "candidate", None)
                .await
                .map_err(retry)?;
        }
        let candidate = Envelope::new(
            SOURCE,
            &key,
            ModelCandidate {
                model: m.model.clone(),
                version: m.version,
                model_sha256: m.model_sha256,
                checks: event_checks,
            },
        )
        .with_subject(m.model.as_str());
        ctx.bus.publish_caused(candidate, e).await?;

        // Staging promotion, signed by the automation key. The envelope is stored
        // first so a redelivery republishes the very same approval.
        let now = time::OffsetDateTime::now_utc();
        let statement = Statement::approval(
            &m.model_sha256,
            ApprovalPredicate {
                model: m.model.clone(),
                version: m.version,
                environment: Environment::Staging,
                approver: AUTOMATION_APPROVER.to_string(),
                issued_at: now,
                expires_at: now + AUTOMATION_APPROVAL_TTL,
                nonce: new_nonce(),
                comment: "gates passed".into(),
            },
        );
        let fresh = self.automation.sign_statement(&statement);
        let stored = self
            .store
            .save_approval(
                m.model.as_str(),
                m.version,
                "staging",
                AUTOMATION_APPROVER,
                run.as_deref().unwrap_or(""),
                self.automation.id(),
                &serde_json::to_string(&fresh).unwrap_or_default(),
            )
            .await
            .map_err(retry)?;
        let envelope: DsseEnvelope = serde_json::from_str(&stored).map_err(HandlerError::reject)?;
        if let Some(run) = &run {
            self.store
                .set_stage(
                    run,
                    "deployment",
                    "running",
                    "approved for staging by registry automation",
                )
                .await
                .map_err(retry)?;
            self.store
                .set_run_state(run, "deploying", None)
                .await
                .map_err(retry)?;
        }
        let approval = Envelope::new(
            SOURCE,
            &format!("{key}/staging"),
            ApprovalGranted {
                model: m.model.clone(),
                version: m.version,
                model_sha256: m.model_sha256,
                environment: Environment::Staging,
                approvals: vec![envelope],
                author: version.author.clone(),
                signed_decision: None,
                decision: None,
            },
        )
        .with_subject(m.model.as_str())
        .caused_by(e);
        self.audit_event(
            &approval,
            AUTOMATION_APPROVER,
            "approval.granted",
            &format!("model/{}/v{}", m.model, m.version),
            serde_json::json!({ "environment": "staging", "key_id": self.automation.id() }),
        )
        .await?;
        ctx.bus
            .publish(&approval)
            .await
            .map_err(HandlerError::retry)?;
        Ok(())
    }

    /// Marks the run of a dead letter failed.
    pub async fn on_dead_letter(&self, letter: DeadLetter) {
        let Some(run) = letter.pipelinerun else {
            return;
        };
        let reason = format!(
            "{} gave up on {}: {}",
            letter.consumer, letter.subject, letter.error
        );
        if let Err(e) = self
            .store
            .set_run_state(run.as_str(), "failed", Some(&[reason]))
            .await
        {
            tracing::error!(error = %e, pipelinerun = %run, "cannot mark run failed");
        }
    }
}

/// Runs the registry's consumers until shutdown.
pub async fn run_consumers(
    registry: Registry,
    ctx: Context,
    on_ready: impl FnOnce(),
) -> Result<(), RegistryError> {
    let dlq = {
        let registry = registry.clone();
        let bus = ctx.bus.clone();
        let shutdown = ctx.shutdown.clone();
        tokio::spawn(async move {
            let r = bus
                .consume_dead_letters("registry-dlq", shutdown, |letter| {
                    let registry = registry.clone();
                    async move { registry.on_dead_letter(letter).await }
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "dead-letter consumer stopped");
            }
        })
    };
    let result = ctx
        .bus
        .consume(
            CONSUMER,
            &["modelbus.>"],
            ctx.shutdown.clone(),
            on_ready,
            |d| {
                let registry = registry.clone();
                let ctx = ctx.clone();
                async move { registry.handle(&ctx, &d).await }
            },
        )
        .await
        .map_err(|e| RegistryError::Internal(e.to_string()));
    dlq.abort();
    result
}
