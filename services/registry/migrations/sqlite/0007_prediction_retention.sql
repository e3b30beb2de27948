-- The prediction index is kept for monitor.index_retention (sqlite; keep in
-- step with ../postgres/0007_prediction_retention.sql): predictions and
-- labels older than that are pruned by time, a bounded batch at a time.
CREATE INDEX monitor_predictions_by_time ON monitor_predictions (time_ms);
CREATE INDEX prediction_labels_by_time ON prediction_labels (label_time_ms);
