-- Registry schema (PostgreSQL). Keep in step with ../sqlite/0001_initial.sql.
CREATE TABLE datasets (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE spec_versions (
    digest TEXT PRIMARY KEY,
    dataset TEXT NOT NULL REFERENCES datasets (name),
    version BIGINT NOT NULL,
    toml TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (dataset, version)
);

CREATE TABLE pipeline_runs (
    id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    spec_digest TEXT NOT NULL REFERENCES spec_versions (digest),
    batch_sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    submitted_by TEXT NOT NULL,
    state TEXT NOT NULL,
    reasons TEXT NOT NULL DEFAULT '[]',
    report_sha256 TEXT NOT NULL DEFAULT '',
    rows_count BIGINT NOT NULL DEFAULT 0,
    model TEXT NOT NULL DEFAULT '',
    model_version BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (spec_digest, batch_sha256)
);
CREATE INDEX pipeline_runs_dataset ON pipeline_runs (dataset, created_at);

CREATE TABLE pipeline_stages (
    run_id TEXT NOT NULL REFERENCES pipeline_runs (id),
    stage TEXT NOT NULL,
    position BIGINT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, stage)
);

CREATE TABLE training_runs (
    id TEXT PRIMARY KEY,
    pipeline_run TEXT NOT NULL,
    dataset TEXT NOT NULL,
    params TEXT NOT NULL,
    metrics TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE registered_models (
    name TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE model_versions (
    model TEXT NOT NULL REFERENCES registered_models (name),
    version BIGINT NOT NULL,
    model_sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    metrics TEXT NOT NULL,
    lineage TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES training_runs (id),
    author TEXT NOT NULL,
    gate_checks TEXT NOT NULL DEFAULT '[]',
    -- {allow, reasons, policy_digest} of the promotion policy, once decided.
    decision TEXT NOT NULL DEFAULT '{}',
    evaluation_sha256 TEXT NOT NULL DEFAULT '',
    evaluation_html_sha256 TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (model, version),
    UNIQUE (model, model_sha256)
);

CREATE TABLE aliases (
    model TEXT NOT NULL REFERENCES registered_models (name),
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (model, alias)
);

CREATE TABLE approvals (
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    environment TEXT NOT NULL,
    approver TEXT NOT NULL,
    -- What asked for the approval: the pipeline run for automation approvals.
    request TEXT NOT NULL,
    key_id TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (model, version, environment, approver, request)
);

CREATE TABLE deployment_events (
    event_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    environment TEXT NOT NULL,
    model TEXT NOT NULL,
    version BIGINT NOT NULL,
    detail TEXT NOT NULL,
    at TEXT NOT NULL
);

CREATE TABLE processed_events (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
