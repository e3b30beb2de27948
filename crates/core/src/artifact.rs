//! The content-addressed artifact store: raw batches, validation reports, feature
//! sets, models. An artifact's SHA-256 is its identity and its key
//! (`sha256/<first two hex>/<digest>`), so writing the same bytes twice stores
//! them once and a reader can always check it got what it asked for.
//!
//! Backed by the `object_store` crate: a local directory by default. Durability
//! and integrity rules (see ARCHITECTURE.md, Invariants):
//!
//! - every write goes to a temporary object under `tmp/`, is flushed, then
//!   renamed under its digest; on a local store each file and every directory it
//!   touches is fsynced before the write returns, so a crash never leaves a
//!   truncated object under a digest;
//! - [`ArtifactStore::put`] and [`ArtifactStore::put_stream`] do not trust an
//!   object already stored under the digest: they check its size and digest and
//!   rewrite it when it is wrong (a repair);
//! - every read checks the digest: [`ArtifactStore::get`] before returning,
//!   [`ArtifactStore::get_stream`] and [`ArtifactStore::open_read`] as the bytes
//!   pass, failing at the end of the data instead of reporting a clean end;
//! - temporary files of interrupted uploads are removed on the error path, and
//!   at open when they have not been modified for [`STALE_TEMP_AGE`].

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};

use crate::ids::Sha256Digest;

/// How long a temporary file of an upload may go unmodified before opening the
/// store removes it as left behind by a crashed or killed process. A live upload
/// writes to its file continuously, so only an upload stalled for this long
/// could lose its file (and then fails rather than storing anything partial).
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

/// Folder of temporary objects (uploads in progress), relative to the store root.
const TMP_DIR: &str = "tmp";
/// Folder of the content-addressed objects.
const OBJECTS_DIR: &str = "sha256";
/// Read buffer of blocking readers and of digest checks.
const READ_BUFFER: usize = 1 << 20;

/// Errors from the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// No artifact with that digest.
    #[error("artifact {0} not found")]
    NotFound(Sha256Digest),
    /// The bytes read back do not hash to the digest asked for (truncated or
    /// altered in the store).
    #[error(
        "artifact {expected} is corrupt: its {size} stored bytes hash to {actual}, not to {expected}"
    )]
    Corrupt {
        /// Digest asked for.
        expected: Sha256Digest,
        /// Digest of what was read.
        actual: Sha256Digest,
        /// Bytes read.
        size: u64,
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
    /// Reading a stored artifact failed for another reason than its content.
    #[error("reading artifact {digest} failed: {reason}")]
    Read {
        /// The artifact.
        digest: Sha256Digest,
        /// The I/O error.
        reason: String,
    },
    /// The store URL is not understood, or its directory cannot be prepared.
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
    local_root: Option<PathBuf>,
}

fn key(d: &Sha256Digest) -> Path {
    let h = d.to_hex();
    Path::from(format!("{OBJECTS_DIR}/{}/{}", &h[..2], h))
}

/// A temporary object of one write. Dropped without [`TempObject::disarm`], it
/// removes itself (in the background), so an error or a cancelled upload (the
/// client went away and the request future was dropped) leaves nothing behind.
struct TempObject {
    store: Arc<dyn ObjectStore>,
    path: Option<Path>,
}

impl TempObject {
    fn new(store: &Arc<dyn ObjectStore>) -> Self {
        Self {
            store: store.clone(),
            path: Some(Path::from(format!("{TMP_DIR}/{}", uuid::Uuid::new_v4()))),
        }
    }

    fn path(&self) -> &Path {
        self.path
            .as_ref()
            .expect("a temporary object has a path until consumed")
    }

    /// Removes it now.
    async fn remove(mut self) {
        if let Some(p) = self.path.take() {
            let _ = self.store.delete(&p).await;
        }
    }

    /// It was renamed into place: nothing to remove.
    fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let store = self.store.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = store.delete(&p).await;
                });
            }
        }
    }
}

/// Fsyncs a directory so the entries just created in it are durable.
fn fsync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Removes the files in `dir` not modified for `age`; returns how many.
fn remove_stale_temp_files(dir: &std::path::Path, age: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let stale = meta.is_file()
            && meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|a| a > age);
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

impl ArtifactStore {
    /// A store in a local directory, created with mode 0700 if missing. Every
    /// write is fsynced (file and directories) before it returns. Temporary files
    /// older than [`STALE_TEMP_AGE`] (left by a crash) are removed.
    pub fn local(dir: &std::path::Path) -> Result<Self, ArtifactError> {
        let loc =
            |e: std::io::Error| ArtifactError::Location(dir.display().to_string(), e.to_string());
        crate::fsutil::create_private_dir(dir).map_err(loc)?;
        let root = dir.canonicalize().map_err(loc)?;
        for sub in [TMP_DIR, OBJECTS_DIR] {
            crate::fsutil::create_private_dir(&root.join(sub)).map_err(loc)?;
        }
        fsync_dir(&root).map_err(loc)?;
        let removed = remove_stale_temp_files(&root.join(TMP_DIR), STALE_TEMP_AGE);
        if removed > 0 {
            tracing::info!(
                removed,
                store = %root.display(),
                "removed temporary files of interrupted uploads"
            );
        }
        let fs = LocalFileSystem::new_with_prefix(&root)?.with_fsync(true);
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

    /// Stores bytes; returns their reference. An object already stored under
    /// their digest is kept only when it is whole (same size, same digest);
    /// otherwise it is replaced.
    pub async fn put(&self, bytes: Bytes) -> Result<ArtifactRef, ArtifactError> {
        let sha256 = Sha256Digest::of(&bytes);
        let size = bytes.len() as u64;
        if !self.intact(&sha256, size).await? {
            let tmp = TempObject::new(&self.inner);
            self.inner.put(tmp.path(), PutPayload::from(bytes)).await?;
            self.publish(tmp, &sha256).await?;
        }
        Ok(ArtifactRef { sha256, size })
    }

    /// Stores a stream of chunks without holding it in memory: written to a
    /// temporary object while hashed, then moved under its digest (replacing an
    /// object stored there that is not whole). Refuses (and removes the partial
    /// upload) once `max_bytes` is exceeded.
    pub async fn put_stream<S, E>(
        &self,
        mut stream: S,
        max_bytes: Option<u64>,
    ) -> Result<ArtifactRef, ArtifactError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp = TempObject::new(&self.inner);
        let upload = self.inner.put_multipart(tmp.path()).await?;
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
            tmp.remove().await;
            return Err(e);
        }
        writer.finish().await?;
        let sha256 = Sha256Digest::from_hasher(hasher);
        if self.intact(&sha256, size).await? {
            tmp.remove().await;
        } else {
            self.publish(tmp, &sha256).await?;
        }
        Ok(ArtifactRef { sha256, size })
    }

    /// Moves a written (and, on a local store, fsynced) temporary object under
    /// its digest, replacing whatever is there; durable when it returns.
    async fn publish(&self, tmp: TempObject, d: &Sha256Digest) -> Result<(), ArtifactError> {
        self.inner.rename(tmp.path(), &key(d)).await?;
        tmp.disarm();
        Ok(())
    }

    /// Whether the object stored under `d` is whole: `size` bytes hashing to `d`.
    /// A missing or wrong one is `false` (and logged), so the caller rewrites it.
    async fn intact(&self, d: &Sha256Digest, size: u64) -> Result<bool, ArtifactError> {
        let meta = match self.inner.head(&key(d)).await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if meta.size != size {
            tracing::warn!(
                artifact = %d,
                stored = meta.size,
                expected = size,
                "stored artifact has the wrong size; rewriting it"
            );
            return Ok(false);
        }
        let mut reader = match self.open_raw(d).await {
            Ok(r) => r,
            Err(ArtifactError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let digest = *d;
        let actual = tokio::task::spawn_blocking(move || -> std::io::Result<Sha256Digest> {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; READ_BUFFER];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return Ok(Sha256Digest::from_hasher(hasher)),
                    Ok(n) => hasher.update(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .map_err(|e| ArtifactError::Read {
            digest,
            reason: e.to_string(),
        })?
        .map_err(|e| ArtifactError::Read {
            digest,
            reason: e.to_string(),
        })?;
        if actual != *d {
            tracing::warn!(
                artifact = %d,
                actual = %actual,
                "stored artifact does not hash to its digest; rewriting it"
            );
            return Ok(false);
        }
        Ok(true)
    }

    /// Whether an artifact exists.
    pub async fn exists(&self, d: &Sha256Digest) -> Result<bool, ArtifactError> {
        match self.inner.head(&key(d)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Size of an artifact (as stored; reads check that its bytes are right).
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
                size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// The stored bytes as a stream, unchecked.
    async fn raw_stream(
        &self,
        d: &Sha256Digest,
    ) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, ArtifactError> {
        if let Some(path) = self.local_path(d) {
            return match tokio::fs::File::open(&path).await {
                Ok(f) => Ok(tokio_util::io::ReaderStream::with_capacity(f, READ_BUFFER).boxed()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(ArtifactError::NotFound(*d))
                }
                Err(e) => Err(ArtifactError::Read {
                    digest: *d,
                    reason: e.to_string(),
                }),
            };
        }
        match self.inner.get(&key(d)).await {
            Ok(r) => Ok(r.into_stream().map_err(std::io::Error::other).boxed()),
            Err(object_store::Error::NotFound { .. }) => Err(ArtifactError::NotFound(*d)),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams an artifact in chunks (for large raw batches), hashing them as
    /// they pass: when the bytes do not hash to `d`, the stream's last item is an
    /// error (`InvalidData`, carrying [`ArtifactError::Corrupt`]) instead of its
    /// end, so a consumer that reads to the end never takes a truncated or
    /// altered artifact for a whole one.
    pub async fn get_stream(
        &self,
        d: &Sha256Digest,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<>, ArtifactError>
    {
        let raw = self.raw_stream(d).await?;
        let expected = *d;
        Ok(futures::stream::unfold(
            Some((raw, Sha256::new(), 0u64)),
            move |state| async move {
                let (mut raw, mut hasher, mut size) = state?;
                match raw.next().await {
                    Some(Ok(chunk)) => {
                        hasher.update(&chunk);
                        size += chunk.len() as u64;
                        Some((Ok(chunk), Some((raw, hasher, size))))
                    }
                    Some(Err(e)) => Some((Err(e), None)),
                    None => {
                        let actual = Sha256Digest::from_hasher(hasher);
                        if actual == expected {
                            None
                        } else {
                            let e = ArtifactError::Corrupt {
                                expected,
                                actual,
                                size,
                            };
                            Some((
                                Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
                                None,
                            ))
                        }
                    }
                }
            },
        ))
    }

    /// A blocking reader over the stored bytes, unchecked: the file itself for a
    /// local store, else a bridge over the object stream (create it inside the
    /// runtime, read it on a blocking thread).
    async fn open_raw(&self, d: &Sha256Digest) -> Result<Box<dyn Read + Send>, ArtifactError> {
        if let Some(path) = self.local_path(d) {
            return match std::fs::File::open(&path) {
                Ok(f) => Ok(Box::new(std::io::BufReader::with_capacity(READ_BUFFER, f))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(ArtifactError::NotFound(*d))
                }
                Err(e) => Err(ArtifactError::Read {
                    digest: *d,
                    reason: e.to_string(),
                }),
            };
        }
        let stream = self.raw_stream(d).await?;
        let reader = tokio_util::io::StreamReader::new(stream);
        Ok(Box::new(tokio_util::io::SyncIoBridge::new(reader)))
    }

    /// A blocking reader over an artifact, for CPU-bound parsers run in
    /// `spawn_blocking`, that checks the digest as the bytes pass (see
    /// [`ArtifactReader`]). Create it inside the runtime, read it on a blocking
    /// thread.
    pub async fn open_read(&self, d: &Sha256Digest) -> Result<ArtifactReader, ArtifactError> {
        Ok(ArtifactReader {
            inner: self.open_raw(d).await?,
            expected: *d,
            hasher: Sha256::new(),
            read: 0,
            state: ReadState::Reading,
        })
    }

    /// Local file path of an artifact, when the store is a local directory. What
    /// is read there is not checked: use [`ArtifactStore::open_read`] to read an
    /// artifact; this is for tools and tests that inspect the store itself.
    pub fn local_path(&self, d: &Sha256Digest) -> Option<std::path::PathBuf> {
        let h = d.to_hex();
        self.local_root
            .as_ref()
            .map(|r| r.join(OBJECTS_DIR).join(&h[..2]).join(h))
    }
}

#[derive(Debug, Clone, Copy)]
enum ReadState {
    Reading,
    Verified,
    Corrupt(Sha256Digest),
}

/// A blocking reader over one artifact that checks its digest. The bytes are
/// hashed as they pass; at the end of the data, the read that would report the
/// end instead fails with an `InvalidData` error carrying
/// [`ArtifactError::Corrupt`] when they do not hash to the digest (and keeps
/// failing), so a parser never sees a clean end of a truncated or altered
/// artifact. [`ArtifactReader::finish`] reads whatever the consumer left unread
/// and gives the verdict as an [`ArtifactError`]: call it before treating what
/// was read as the artifact's content.
pub struct ArtifactReader {
    inner: Box<dyn Read + Send>,
    expected: Sha256Digest,
    hasher: Sha256,
    read: u64,
    state: ReadState,
}

impl std::fmt::Debug for ArtifactReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactReader")
            .field("artifact", &self.expected)
            .field("read", &self.read)
            .field("state", &self.state)
            .finish()
    }
}

impl ArtifactReader {
    /// The artifact being read.
    pub fn digest(&self) -> Sha256Digest {
        self.expected
    }

    fn corrupt(&self, actual: Sha256Digest) -> ArtifactError {
        ArtifactError::Corrupt {
            expected: self.expected,
            actual,
            size: self.read,
        }
    }

    /// Reads the rest (if the consumer stopped early) and returns the artifact's
    /// reference when all of its bytes hashed to its digest, else
    /// [`ArtifactError::Corrupt`] (or [`ArtifactError::Read`] for an I/O error).
    pub fn finish(mut self) -> Result<ArtifactRef, ArtifactError> {
        // Reads return 0 only once the digest was checked and found right.
        let mut buf = match self.state {
            ReadState::Reading => vec![0u8; READ_BUFFER],
            _ => vec![0u8; 1],
        };
        loop {
            match self.read(&mut buf) {
                Ok(0) => {
                    return Ok(ArtifactRef {
                        sha256: self.expected,
                        size: self.read,
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(match self.state {
                        ReadState::Corrupt(actual) => self.corrupt(actual),
                        _ => ArtifactError::Read {
                            digest: self.expected,
                            reason: e.to_string(),
                        },
                    });
                }
            }
        }
    }
}

impl Read for ArtifactReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.state {
            ReadState::Verified => return Ok(0),
            ReadState::Corrupt(actual) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    self.corrupt(actual),
                ));
            }
            ReadState::Reading => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
            self.read += n as u64;
            return Ok(n);
        }
        let actual = Sha256Digest::from_hasher(std::mem::take(&mut self.hasher));
        if actual == self.expected {
            self.state = ReadState::Verified;
            Ok(0)
        } else {
            self.state = ReadState::Corrupt(actual);
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                self.corrupt(actual),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ArtifactStore {
        /// A store over `object_store`'s in-memory backend: the path every
        /// non-local backend takes (no local file shortcuts).
        fn in_memory() -> Self {
            Self {
                inner: Arc::new(object_store::memory::InMemory::new()),
                local_root: None,
            }
        }
    }

    /// 3 MB of CSV-like lines, so a cut at a line boundary is itself a valid CSV.
    fn lines() -> Vec<u8> {
        (0..100_000)
            .flat_map(|i| format!("row-{i:06},{}\n", i % 7).into_bytes())
            .collect()
    }

    fn tmp_files(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_dir(dir.join(TMP_DIR))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn collect_stream(
        s: &ArtifactStore,
        d: &Sha256Digest,
    ) -> Result<Vec<u8>, std::io::Error> {
        let mut st = Box::pin(s.get_stream(d).await.unwrap());
        let mut out = Vec::new();
        while let Some(chunk) = st.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

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
        assert!(matches!(
            s.open_read(&missing).await,
            Err(ArtifactError::NotFound(_))
        ));
        // Writes leave no temporary file behind.
        assert!(
            tmp_files(dir.path()).is_empty(),
            "{:?}",
            tmp_files(dir.path())
        );
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
            tmp_files(dir.path()).is_empty(),
            "{:?}",
            tmp_files(dir.path())
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

    #[tokio::test]
    async fn a_truncated_object_fails_every_streamed_read_at_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let s = ArtifactStore::local(dir.path()).unwrap();
        let data = lines();
        let a = s.put(Bytes::from(data.clone())).await.unwrap();
        // Whole: both readers pass.
        assert_eq!(collect_stream(&s, &a.sha256).await.unwrap(), data);
        let mut r = s.open_read(&a.sha256).await.unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(r.finish().unwrap(), a);

        // Cut at a line boundary: what is left still parses as CSV.
        let cut = data[..data.len() / 2]
            .iter()
            .rposition(|b| *b == b'\n')
            .unwrap()
            + 1;
        let path = s.local_path(&a.sha256).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let truncated = Sha256Digest::of(&data[..cut]);

        let e = collect_stream(&s, &a.sha256).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let msg = e.to_string();
        assert!(
            msg.contains(&a.sha256.to_hex())
                && msg.contains(&truncated.to_hex())
                && msg.contains(&cut.to_string()),
            "{msg}"
        );

        let mut r = s.open_read(&a.sha256).await.unwrap();
        let mut back = Vec::new();
        let e = r.read_to_end(&mut back).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        // Every byte was delivered, but never a clean end; and it keeps failing.
        assert_eq!(back.len(), cut);
        assert!(r.read(&mut [0u8; 16]).is_err());
        match r.finish() {
            Err(ArtifactError::Corrupt {
                expected,
                actual,
                size,
            }) => {
                assert_eq!(expected, a.sha256);
                assert_eq!(actual, truncated);
                assert_eq!(size, cut as u64);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // A consumer that stops early still gets the verdict from finish().
        let mut r = s.open_read(&a.sha256).await.unwrap();
        r.read_exact(&mut [0u8; 100]).unwrap();
        assert!(matches!(r.finish(), Err(ArtifactError::Corrupt { .. })));
        assert!(matches!(
            s.get(&a.sha256).await,
            Err(ArtifactError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn put_and_put_stream_repair_a_damaged_object() {
        let dir = tempfile::tempdir().unwrap();
        let s = ArtifactStore::local(dir.path()).unwrap();
        let data = lines();
        let a = s.put(Bytes::from(data.clone())).await.unwrap();
        let path = s.local_path(&a.sha256).unwrap();

        // Truncated (what a crash before fsync leaves): put rewrites it.
        std::fs::write(&path, &data[..1000]).unwrap();
        assert_eq!(s.put(Bytes::from(data.clone())).await.unwrap(), a);
        assert_eq!(s.get(&a.sha256).await.unwrap(), data);

        // Same size, altered bytes: found by the digest, rewritten.
        let mut altered = data.clone();
        altered[10] ^= 1;
        std::fs::write(&path, &altered).unwrap();
        assert_eq!(s.put(Bytes::from(data.clone())).await.unwrap(), a);
        assert_eq!(s.get(&a.sha256).await.unwrap(), data);

        // A streamed upload of the right bytes repairs it too.
        std::fs::write(&path, b"").unwrap();
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        assert_eq!(
            s.put_stream(futures::stream::iter(chunks), None)
                .await
                .unwrap(),
            a
        );
        assert_eq!(collect_stream(&s, &a.sha256).await.unwrap(), data);
        assert!(
            tmp_files(dir.path()).is_empty(),
            "{:?}",
            tmp_files(dir.path())
        );
    }

    #[tokio::test]
    async fn a_non_local_backend_is_checked_and_repaired_the_same_way() {
        let s = ArtifactStore::in_memory();
        let data = lines();
        let a = s.put(Bytes::from(data.clone())).await.unwrap();
        let mut r = s.open_read(&a.sha256).await.unwrap();
        let back = tokio::task::spawn_blocking(move || {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map(|_| (v, r.finish()))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(back.0, data);
        assert!(back.1.is_ok());

        s.inner
            .put(
                &key(&a.sha256),
                PutPayload::from(data[..cut_at(&data)].to_vec()),
            )
            .await
            .unwrap();
        assert!(collect_stream(&s, &a.sha256).await.is_err());
        let mut r = s.open_read(&a.sha256).await.unwrap();
        let verdict = tokio::task::spawn_blocking(move || {
            let mut v = Vec::new();
            let read = r.read_to_end(&mut v);
            (read.is_err(), r.finish())
        })
        .await
        .unwrap();
        assert!(verdict.0);
        assert!(matches!(verdict.1, Err(ArtifactError::Corrupt { .. })));
        assert_eq!(s.put(Bytes::from(data.clone())).await.unwrap(), a);
        assert_eq!(collect_stream(&s, &a.sha256).await.unwrap(), data);
    }

    fn cut_at(data: &[u8]) -> usize {
        data.len() / 3
    }

    #[tokio::test]
    async fn temporary_files_of_a_crash_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(ArtifactStore::local(dir.path()).unwrap());
        let tmp = dir.path().join(TMP_DIR);
        // Left by a process killed mid-upload two hours ago, and one being written now.
        let old = tmp.join("0b6f2c5e-crashed#1");
        std::fs::write(&old, b"partial").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - 2 * STALE_TEMP_AGE)
            .unwrap();
        let fresh = tmp.join("in-progress");
        std::fs::write(&fresh, b"writing").unwrap();
        let s = ArtifactStore::local(dir.path()).unwrap();
        assert!(
            !old.exists(),
            "a stale temporary file must be removed at open"
        );
        assert!(fresh.exists(), "a live upload's file must be kept");
        // The store works as before.
        let a = s.put(Bytes::from_static(b"x")).await.unwrap();
        assert!(s.exists(&a.sha256).await.unwrap());
    }

    #[tokio::test]
    async fn a_cancelled_upload_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = ArtifactStore::local(dir.path()).unwrap();
        // One chunk, then a client that never sends the rest.
        let first: Result<Bytes, std::io::Error> = Ok(Bytes::from(vec![7u8; 100_000]));
        let stream = futures::stream::iter([first]).chain(futures::stream::pending());
        let upload = s.put_stream(Box::pin(stream), None);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), upload)
                .await
                .is_err()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !tmp_files(dir.path()).is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            tmp_files(dir.path()).is_empty(),
            "{:?}",
            tmp_files(dir.path())
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_store_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("state/artifacts");
        ArtifactStore::local(&dir).unwrap();
        for d in [
            dir.clone(),
            dir.join(TMP_DIR),
            dir.join(OBJECTS_DIR),
            base.path().join("state"),
        ] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
    }
}
