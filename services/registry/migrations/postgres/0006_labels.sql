-- Labels and the prediction index they join (postgres; keep in step with
-- ../sqlite/0006_labels.sql).

-- Every logged prediction of a closed window, from the window's index
-- artifact: what a label is joined to, by id or by entity and time.
CREATE TABLE monitor_predictions (
    prediction_id TEXT PRIMARY KEY,
    window_id TEXT NOT NULL,
    dataset TEXT NOT NULL,
    entity TEXT,
    time_ms BIGINT NOT NULL,
    probability DOUBLE PRECISION NOT NULL
);
CREATE INDEX monitor_predictions_by_window ON monitor_predictions (window_id);
CREATE INDEX monitor_predictions_by_entity ON monitor_predictions (dataset, entity, time_ms);

-- One label per prediction: the first one wins (the primary key refuses the rest).
CREATE TABLE prediction_labels (
    prediction_id TEXT PRIMARY KEY,
    window_id TEXT NOT NULL,
    labels_id TEXT NOT NULL,
    positive BIGINT NOT NULL,
    label_time_ms BIGINT NOT NULL
);
CREATE INDEX prediction_labels_by_window ON prediction_labels (window_id);

-- Labels whose prediction is not indexed yet (its window is still open):
-- joined when it is, dropped once older than monitor.label_window.
CREATE TABLE pending_labels (
    labels_id TEXT NOT NULL,
    row_no BIGINT NOT NULL,
    dataset TEXT NOT NULL,
    prediction_id TEXT,
    entity TEXT,
    positive BIGINT NOT NULL,
    label_time_ms BIGINT NOT NULL,
    PRIMARY KEY (labels_id, row_no)
);
CREATE INDEX pending_labels_by_dataset ON pending_labels (dataset, label_time_ms);

-- Each submission of labels and what its join found.
CREATE TABLE label_batches (
    labels_id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    labels_sha256 TEXT NOT NULL,
    rows_total BIGINT NOT NULL,
    joined BIGINT NOT NULL,
    pending BIGINT NOT NULL,
    outside_window BIGINT NOT NULL,
    duplicate BIGINT NOT NULL,
    submitted_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- A window's realised performance (the latest monitor.window.performance).
ALTER TABLE monitor_windows ADD COLUMN performance TEXT;
