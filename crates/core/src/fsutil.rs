//! File-system helpers shared by the services: directories that hold state
//! (registry database, artifacts, NATS store, keys, tokens) are created readable
//! by their owner only.

use std::path::Path;

/// Creates `dir` and every missing parent with mode 0700 (owner only), so the
/// state the directory holds is not readable by other users of the machine. A
/// directory that already exists keeps its mode: it may be a mounted volume
/// whose permissions belong to the operator (a warning is logged when others
/// can read it).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.is_dir()
        {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o007 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{mode:o}"),
                    "state directory is accessible to other users; consider chmod 700"
                );
            }
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn created_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b/state");
        create_private_dir(&dir).unwrap();
        for d in [base.path().join("a"), base.path().join("a/b"), dir.clone()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        // Idempotent on an existing directory.
        create_private_dir(&dir).unwrap();
    }
}
