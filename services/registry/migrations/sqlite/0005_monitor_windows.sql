-- Windows of live traffic the monitor closed (sqlite; keep in step with
-- ../postgres/0005_monitor_windows.sql): the monitor.window.closed event as
-- received, with the columns it is looked up by.
CREATE TABLE monitor_windows (
    window_id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    closed TEXT NOT NULL,
    report_sha256 TEXT NOT NULL,
    html_sha256 TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX monitor_windows_by_model ON monitor_windows (model, environment, closed);
CREATE INDEX monitor_windows_by_html ON monitor_windows (html_sha256);
