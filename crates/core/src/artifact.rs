//! The content-addressed artifact store: raw batches, validation reports, feature
//! sets, models. An artifact's SHA-256 is its identity and its key
//! (`sha256/<first two hex>/<digest>`), so writing the same bytes twice is a no-op
//! and a reader can always check it got what it asked for.
//!
//! Backed by the `object_store` crate: a local directory by default.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};

use crate::ids::Sha256Digest;

/// Errors from the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// No artifact with that digest.
    #[error("artifact {0} not found")]
    NotFound(Sha256Digest),
    /// The bytes read back do not hash to the digest asked for.
    #[error("artifact {expected} is corrupt: its bytes hash to {actual}")]
    Corrupt {
        /// Digest asked for.
        expected: Sha256Digest,
        /// Digest of what was read.
        actual: Sha256Digest,
    },
    /// An upload exceeded the configured limit; nothing was stored.
    #[error("upload exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The upload stream itself failed (client went away, read error).
    #[error("reading the upload failed: {0}")]
    Source(String),
    /// The store URL is not understood.
    #[error("invalid artifact store location {0:?}: {1}")]
    Location(String, String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] object_store::Error),
}

/// Reference to a stored artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactRef {
    /// Content digest.
    pub sha256: Sha256Digest,
    /// Size in bytes.
    pub size: u64,
}

/// Handle to the artifact store; cheap to clone.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
    /// Set for a local store: lets CPU-bound readers open files directly.
    local_root: Option<std::path::PathBuf>,
}

fn key(d: &Sha256Digest) -> Path {
    let h = d.to_hex();
    Path::from(format!("sha256/{}/{}", &h[..2], h))
}

impl ArtifactStore {
    /// A store in a local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self, ArtifactError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ArtifactError::Location(dir.display().to_string(), e.to_string()))?;
        let root = dir
            .canonicalize()
            .map_err(|e| ArtifactError::Location(dir.display().to_string(), e.to_string()))?;
        let fs = LocalFileSystem::new_with_prefix(&root)?;
        Ok(Self {
            inner: Arc::new(fs),
            local_root: Some(root),
        })
    }

    /// Opens a store from a location: a directory path or a `file://` URL.
    pub fn open(location: &str) -> Result<Self, ArtifactError> {
        match location.split_once("://") {
            None => Self::local(std::path::Path::new(location)),
            Some(("file", path)) => Self::local(std::path::Path::new(path)),
            Some((scheme, _)) => Err(ArtifactError::Location(
                location.to_string(),
                format!("unsupported scheme {scheme:?} (supported: file:// or a path)"),
            )),
        }
    }

    /// Stores bytes; returns their reference.
    pub async fn put(&self, bytes: Bytes) -> Result<ArtifactRef, ArtifactError> {
        let sha256 = Sha256Digest::of(&bytes);
        let size = bytes.len() as u64;
        let k = key(&sha256);
        if self.inner.head(&k).await.is_err() {
            self.inner.put(&k, PutPayload::from(bytes)).await?;
        }
        Ok(ArtifactRef { sha256, size })
    }

    /// Stores a stream of chunks without holding it in memory: written to a
    /// temporary object while hashed, then moved under its digest. Refuses (and
    /// removes the partial upload) once `max_bytes` is exceeded.
    pub async fn put_stream<S, E>(
        &self,
        mut stream: S,
        max_bytes: Option<u64>,
    ) -> Result<ArtifactRef, ArtifactError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp = Path::from(format!("tmp/{}", uuid::Uuid::new_v4()));
        let upload = self.inner.put_multipart(&tmp).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 * 1024 * 1024);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let outcome: Result<(), ArtifactError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| ArtifactError::Source(e.to_string()))?;
                size += chunk.len() as u64;
                if let Some(limit) = max_bytes
                    && size > limit
                {
                    return Err(ArtifactError::TooLarge { limit });
                }
                hasher.update(&chunk);
                writer.wait_for_capacity(4).await?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            let _ = writer.abort().await;
            let _ = self.inner.delete(&tmp).await;
            return Err(e);
        }
        writer.finish().await?;
        let sha256 = Sha256Digest::from_hasher(hasher);
        let k = key(&sha256);
        match self.inner.rename_if_not_exists(&tmp, &k).await {
            Ok(()) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.inner.delete(&tmp).await?;
            }
            Err(e) => {
                let _ = self.inner.delete(&tmp).await;
                return Err(e.into());
            }
        }
        Ok(ArtifactRef { sha256, size })
    }

    /// Whether an artifact exists.
    pub async fn exists(&self, d: &Sha256Digest) -> Result<bool, ArtifactError> {
        match self.inner.head(&key(d)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Size of an artifact.
    pub async fn size(&self, d: &Sha256Digest) -> Result<u64, ArtifactError> {
        match self.inner.head(&key(d)).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => Err(ArtifactError::NotFound(*d)),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a whole artifact and checks its digest.
    pub async fn get(&self, d: &Sha256Digest) -> Result<Bytes, ArtifactError> {
        let bytes = match self.inner.get(&key(d)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Err(ArtifactError::NotFound(*d)),
            Err(e) => return Err(e.into()),
        };
        let actual = Sha256Digest::of(&bytes);
        if actual != *d {
            return Err(ArtifactError::Corrupt {
                expected: *d,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Streams an artifact in chunks (for large raw batches). The caller hashes
    /// what it reads if it needs the integrity check.
    pub async fn get_stream(
        &self,
        d: &Sha256Digest,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<>, ArtifactError>
    {
        match self.inner.get(&key(d)).await {
            Ok(r) => Ok(r.into_stream().map_err(std::io::Error::other)),
            Err(object_store::Error::NotFound { .. }) => Err(ArtifactError::NotFound(*d)),
            Err(e) => Err(e.into()),
        }
    }

    /// A blocking reader over an artifact, for CPU-bound parsers run in
    /// `spawn_blocking`: the file itself for a local store, else a bridge over the
    /// object stream (create it inside the runtime, read it on a blocking thread).
    pub async fn open_read(
        &self,
        d: &Sha256Digest,
    ) -> Result<Box<dyn std::io::Read + Send>, ArtifactError> {
        if let Some(path) = self.local_path(d) {
            return match std::fs::File::open(&path) {
                Ok(f) => Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(ArtifactError::NotFound(*d))
                }
                Err(e) => Err(ArtifactError::Source(e.to_string())),
            };
        }
        let stream = self.get_stream(d).await?;
        let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
        Ok(Box::new(tokio_util::io::SyncIoBridge::new(reader)))
    }

    /// Local file path of an artifact, when the store is a local directory.
    pub fn local_path(&self, d: &Sha256Digest) -> Option<std::path::PathBuf> {
        let h = d.to_hex();
        self.local_root
            .as_ref()
            .map(|r| r.join("sha256").join(&h[..2]).join(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_and_dedupe() {
        let dir = tempfile::tempdir().unwrap();
        let s = ArtifactStore::local(dir.path()).unwrap();
        let a = s.put(Bytes::from_static(b"hello")).await.unwrap();
        let b = s.put(Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(
            s.get(&a.sha256).await.unwrap(),
            Bytes::from_static(b"hello")
        );
        assert!(s.exists(&a.sha256).await.unwrap());
        let missing = Sha256Digest::of(b"nope");
        assert!(matches!(
            s.get(&missing).await,
            Err(ArtifactError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn streamed_upload_matches_whole_put_and_respects_limit() {
        let dir = tempfile::tempdir().unwrap();
        let s = ArtifactStore::local(dir.path()).unwrap();
        let chunks: Vec<Result<Bytes, std::io::Error>> = (0..100)
            .map(|i| Ok(Bytes::from(vec![i as u8; 100_000])))
            .collect();
        let whole: Vec<u8> = (0..100).flat_map(|i| vec![i as u8; 100_000]).collect();
        let r = s
            .put_stream(futures::stream::iter(chunks), None)
            .await
            .unwrap();
        assert_eq!(r.sha256, Sha256Digest::of(&whole));
        assert_eq!(r.size, whole.len() as u64);
        assert_eq!(s.get(&r.sha256).await.unwrap().len(), whole.len());

        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..10).map(|_| Ok(Bytes::from(vec![1u8; 1000]))).collect();
        let e = s
            .put_stream(futures::stream::iter(chunks), Some(5000))
            .await
            .unwrap_err();
        assert!(matches!(e, ArtifactError::TooLarge { limit: 5000 }));
        // Nothing partial is left behind.
        assert!(
            !dir.path().join("tmp").exists()
                || std::fs::read_dir(dir.path().join("tmp"))
                    .unwrap()
                    .next()
                    .is_none()
        );
    }

    #[tokio::test]
    async fn corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let s = ArtifactStore::local(dir.path()).unwrap();
        let a = s.put(Bytes::from_static(b"model")).await.unwrap();
        std::fs::write(s.local_path(&a.sha256).unwrap(), b"tampered").unwrap();
        assert!(matches!(
            s.get(&a.sha256).await,
            Err(ArtifactError::Corrupt { .. })
        ));
    }
}
