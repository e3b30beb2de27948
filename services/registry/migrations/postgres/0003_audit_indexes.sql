-- Evidence bundles read the audit entries of one version by subject and
-- action instead of the whole log (postgres; keep in step with the other backend).
CREATE INDEX audit_log_subject ON audit_log (subject);
CREATE INDEX audit_log_action ON audit_log (action);
