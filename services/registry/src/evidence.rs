//! Assembles the evidence bundle of one model version from the registry's own
//! records (see `modelbus_core::evidence` for what it holds and how it is
//! verified).

use modelbus_core::audit::{AuditEntry, ChainHead, GENESIS};
use modelbus_core::evidence::{AuditSegment, Evidence, FORMAT, KeyRecord, SignedStatement};
use modelbus_core::signing::DsseEnvelope;

use crate::error::RegistryError;
use crate::{AUTOMATION_APPROVER, Registry};

/// Audit entries read per page while assembling.
const PAGE: u32 = 1_000;

impl Registry {
    /// Assembles the evidence bundle of `model` v`version` for `by`, keeps it
    /// in the artifact store (content-addressed, as every report is) and audits
    /// the export (`evidence.exported` with its digest): who pulled what.
    ///
    /// A bundle describes the version as of its last audit entry, so the same
    /// state exported twice by the same principal is the same bytes: the
    /// artifact store keeps one copy and the audit log one entry (keyed by
    /// digest and principal), however often it is pulled.
    pub async fn export_evidence(
        &self,
        model: &str,
        version: u32,
        by: &str,
    ) -> Result<(Evidence, String), RegistryError> {
        let evidence = self.evidence(model, version, by).await?;
        let bytes = serde_json::to_vec(&evidence)
            .map_err(|e| RegistryError::Internal(format!("evidence: {e}")))?;
        let stored =
            self.artifacts.put(bytes.into()).await.map_err(|e| {
                RegistryError::Internal(format!("storing the evidence bundle: {e}"))
            })?;
        let sha256 = stored.sha256.to_hex();
        self.store
            .append_audit(
                by,
                "evidence.exported",
                &format!("model/{model}/v{version}"),
                &serde_json::json!({
                    "sha256": sha256,
                    "audit_head": evidence.audit.head,
                }),
                Some(&format!("evidence.exported/{sha256}/{by}")),
            )
            .await?;
        Ok((evidence, sha256))
    }

    /// The evidence bundle of `model` v`version`, assembled for `by`.
    pub async fn evidence(
        &self,
        model: &str,
        version: u32,
        by: &str,
    ) -> Result<Evidence, RegistryError> {
        let mv = self.model_version(model, version).await?;
        let training_run = match self.run(&mv.run_id).await {
            Ok(run) => serde_json::to_value(run).unwrap_or_default(),
            Err(RegistryError::NotFound(_)) => serde_json::Value::Null,
            Err(e) => return Err(e),
        };
        let report = |sha: String| async move {
            if sha.is_empty() {
                return Ok(serde_json::Value::Null);
            }
            match self.report(&sha).await {
                Ok(v) => Ok(v),
                Err(RegistryError::NotFound(_)) => Ok(serde_json::Value::Null),
                Err(e) => Err(e),
            }
        };
        let validation = report(mv.lineage.report_sha256.clone()).await?;
        let evaluation = report(mv.evaluation_sha256.clone()).await?;

        let envelope = |text: &str| -> Result<DsseEnvelope, RegistryError> {
            serde_json::from_str(text)
                .map_err(|e| RegistryError::Internal(format!("stored envelope: {e}")))
        };
        let mut signed = Vec::new();
        for d in self.store.signed_decisions(model, version, "").await? {
            signed.push(SignedStatement {
                kind: d.kind.clone(),
                environment: d.environment.clone(),
                signer: d.signer.clone(),
                key_id: d.key_id.clone(),
                recorded_at: d.created_at.clone(),
                envelope: envelope(&d.envelope)?,
            });
        }
        let mut automation = Vec::new();
        for a in self.store.automation_approvals(model, version).await? {
            let text = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            automation.push(SignedStatement {
                kind: "approve".into(),
                environment: text("environment"),
                signer: text("approver"),
                key_id: text("key_id"),
                recorded_at: text("created_at"),
                envelope: serde_json::from_value(a["envelope"].clone())
                    .map_err(|e| RegistryError::Internal(format!("stored envelope: {e}")))?,
            });
        }
        let mut keys: Vec<KeyRecord> = Vec::new();
        for s in signed.iter().chain(automation.iter()) {
            if keys.iter().any(|k| k.key_id == s.key_id) {
                continue;
            }
            if s.signer == AUTOMATION_APPROVER {
                let public = self.automation.public();
                keys.push(KeyRecord {
                    id: AUTOMATION_APPROVER.into(),
                    role: "approver".into(),
                    key_id: public.id().to_string(),
                    public_key: public.to_pem(),
                    added_at: String::new(),
                    revoked_at: String::new(),
                });
            } else if let Some(a) = self.store.approver(&s.signer).await? {
                keys.push(KeyRecord {
                    id: a.id,
                    role: a.role.as_str().to_string(),
                    key_id: a.key_id,
                    public_key: a.public_key,
                    added_at: a.added_at,
                    revoked_at: a.revoked_at,
                });
            }
        }
        let promotion = self
            .store
            .promotion(model, version, "production")
            .await?
            .map(|p| serde_json::to_value(p).unwrap_or_default())
            .unwrap_or_default();
        let deployments = self.store.deployment_events(model).await?;

        let subject = format!("model/{model}/v{version}");
        let model_prefix = format!("model/{model}/");
        let signers: Vec<String> = signed
            .iter()
            .map(|s| format!("approver/{}", s.signer))
            .collect();
        let relevant: Vec<u64> = self
            .store
            .audit_about_version(model, version)
            .await?
            .into_iter()
            .filter(|e| {
                (e.subject == subject && e.action != "evidence.exported")
                    || (e.action == "deployment.rolled_back"
                        && e.subject.starts_with(&model_prefix)
                        && e.detail["to_version"] == version)
                    || (e.action == "spec.applied"
                        && e.detail["digest"] == mv.lineage.spec_digest.as_str())
                    || (e.action.starts_with("roster.") && signers.contains(&e.subject))
            })
            .map(|e| e.seq)
            .collect();
        // The segment runs from the first entry about the version to the last
        // one, every entry between included so the chain links.
        let (first, last) = match (relevant.first(), relevant.last()) {
            (Some(f), Some(l)) => (*f, *l),
            _ => (1, 0),
        };
        let span = last.saturating_add(1).saturating_sub(first);
        let max = self.max_evidence_entries();
        if span > u64::from(max) {
            return Err(RegistryError::FailedPrecondition(format!(
                "the audit history of {model} v{version} spans {span} entries ({first} to {last}), \
                 more than registry.max_evidence_entries ({max}) allows in one bundle"
            )));
        }
        let mut entries: Vec<AuditEntry> = Vec::new();
        let mut after = first.saturating_sub(1);
        while span > 0 && after < last {
            let page = self.store.audit_entries(after, PAGE).await?;
            let done = page.len() < PAGE as usize;
            entries.extend(page.into_iter().take_while(|e| e.seq <= last));
            match entries.last() {
                Some(e) if !done && e.seq > after => after = e.seq,
                _ => break,
            }
        }
        let head = ChainHead {
            entries: entries.last().map_or(0, |e| e.seq),
            hash: entries
                .last()
                .map_or_else(|| GENESIS.to_string(), |e| e.hash.clone()),
        };
        let prev_hash = entries
            .first()
            .map_or_else(|| GENESIS.to_string(), |e| e.prev_hash.clone());
        // As of its last entry: the same state gives the same bundle.
        let as_of = entries
            .last()
            .map_or_else(|| mv.created_at.clone(), |e| e.at.clone());
        Ok(Evidence {
            format: FORMAT.into(),
            generated_at: as_of,
            generated_by: by.to_string(),
            model: mv.model.clone(),
            version: mv.version,
            model_sha256: mv.model_sha256.clone(),
            version_record: serde_json::to_value(&mv).unwrap_or_default(),
            training_run,
            validation,
            evaluation,
            signed,
            automation,
            promotion,
            keys,
            deployments,
            audit: AuditSegment {
                prev_hash,
                entries,
                relevant,
                head,
            },
        })
    }
}
