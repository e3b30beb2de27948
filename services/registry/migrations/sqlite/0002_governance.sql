-- Governance (sqlite): audit chain, API tokens, approver roster, signed
-- decisions, promotion decisions, serving statistics. Keep in step with
-- ../postgres/0002_governance.sql.

-- Append-only, hash-chained (see modelbus_core::audit). dedup_key makes an
-- append idempotent for redelivered events and retried requests.
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    dedup_key TEXT UNIQUE
);

-- Bearer tokens; only the SHA-256 of a token is kept.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    roles TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT NOT NULL DEFAULT '',
    revoked_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX api_tokens_principal ON api_tokens (principal);

-- People who may sign approvals, rejections and rollbacks.
CREATE TABLE approvers (
    id TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    key_id TEXT NOT NULL,
    role TEXT NOT NULL,
    added_by TEXT NOT NULL,
    added_at TEXT NOT NULL,
    revoked_at TEXT NOT NULL DEFAULT '',
    revoked_by TEXT NOT NULL DEFAULT ''
);

-- Signed approvals, rejections and rollbacks people submitted; a nonce is
-- accepted once.
CREATE TABLE signed_decisions (
    nonce TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    environment TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    signer TEXT NOT NULL,
    key_id TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    comment TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX signed_decisions_version ON signed_decisions (model, version, environment);

-- The latest promotion-policy decision per version and environment.
CREATE TABLE promotions (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    environment TEXT NOT NULL,
    allow_promotion INTEGER NOT NULL,
    reasons TEXT NOT NULL,
    policy_digest TEXT NOT NULL,
    input TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    granted_event TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (model, version, environment)
);

-- Request counts serving reports per window, for soak checks.
CREATE TABLE serving_stats (
    event_id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    p99_ms REAL NOT NULL,
    window_end TEXT NOT NULL
);
CREATE INDEX serving_stats_version ON serving_stats (environment, model, version, window_end);
