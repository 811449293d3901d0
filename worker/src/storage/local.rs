//! [`LocalStore`]: a directory as object store, for the embedded mode. Keys map to paths under
//! the root; each put writes a temporary file, fsyncs it, renames it into place and fsyncs the
//! directory, so a put that returned survives a crash. Metadata goes to a `.meta.json` sidecar.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use protocol::MediaLocation;

use super::{ObjectMeta, StorageError, Store, StoredObject, sha256_hex};

/// A directory-backed store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| io(&root, source))?;
        let root = root.canonicalize().map_err(|source| io(&root, source))?;
        Ok(LocalStore { root })
    }

    /// The directory objects live under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file a key maps to.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        protocol::media::check_key(key).map_err(|reason| StorageError::InvalidKey { key: key.to_owned(), reason })?;
        Ok(self.root.join(key))
    }

    fn write_durably(&self, key: &str, bytes: &[u8], meta: &ObjectMeta) -> Result<StoredObject, StorageError> {
        let path = self.path_of(key)?;
        let dir = path.parent().expect("a checked key has a parent under root");
        std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
        let sidecar = serde_json::json!({ "content_type": meta.content_type, "metadata": meta.entries });
        atomic_write(&meta_path(&path), sidecar.to_string().as_bytes())?;
        atomic_write(&path, bytes)?;
        Ok(StoredObject {
            uri: format!("file://{}", path.display()),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        })
    }
}

fn meta_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".meta.json");
    PathBuf::from(s)
}

fn io(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io { path: path.display().to_string(), source }
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let dir = path.parent().expect("object paths have a parent");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|s| io(dir, s))?;
    tmp.write_all(bytes).map_err(|s| io(path, s))?;
    tmp.as_file().sync_all().map_err(|s| io(path, s))?;
    tmp.persist(path).map_err(|e| io(path, e.error))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|s| io(dir, s))?;
    Ok(())
}

#[async_trait]
impl Store for LocalStore {
    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    async fn fetch(&self, location: &MediaLocation, _scratch: &Path, max_bytes: u64) -> Result<PathBuf, StorageError> {
        match location {
            MediaLocation::Local(path) => {
                let md = match tokio::fs::metadata(path).await {
                    Ok(md) => md,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(StorageError::NotFound(path.display().to_string()));
                    }
                    Err(e) => return Err(io(path, e)),
                };
                if !md.is_file() {
                    return Err(StorageError::NotFound(format!("{} is not a file", path.display())));
                }
                if md.len() > max_bytes {
                    return Err(StorageError::TooLarge {
                        what: path.display().to_string(),
                        size: md.len(),
                        limit: max_bytes,
                    });
                }
                Ok(path.clone())
            }
            MediaLocation::S3 { bucket, key } => Err(StorageError::Unsupported(format!("s3://{bucket}/{key}"))),
        }
    }

    async fn put_file(&self, key: &str, file: &Path, meta: &ObjectMeta) -> Result<StoredObject, StorageError> {
        let bytes = tokio::fs::read(file).await.map_err(|s| io(file, s))?;
        self.put_bytes(key, &bytes, meta).await
    }

    async fn put_bytes(&self, key: &str, bytes: &[u8], meta: &ObjectMeta) -> Result<StoredObject, StorageError> {
        let this = self.clone();
        let (key, bytes, meta) = (key.to_owned(), bytes.to_vec(), meta.clone());
        tokio::task::spawn_blocking(move || this.write_durably(&key, &bytes, &meta))
            .await
            .map_err(|e| io(Path::new("<put>"), std::io::Error::other(e)))?
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let root = self.root.clone();
        let start = root.join(prefix.trim_end_matches('/'));
        let walk = move || {
            let mut keys = Vec::new();
            let mut dirs = vec![start];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(&dir, e)),
                };
                for entry in entries {
                    let path = entry.map_err(|e| io(&dir, e))?.path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    if path.is_dir() {
                        dirs.push(path);
                    } else if !name.ends_with(".meta.json") && !name.starts_with(".tmp") {
                        let key = path.strip_prefix(&root).ok().and_then(|k| k.to_str()).map(str::to_owned);
                        keys.extend(key);
                    }
                }
            }
            keys.sort();
            Ok(keys)
        };
        let keys: Vec<String> = tokio::task::spawn_blocking(walk)
            .await
            .map_err(|e| io(Path::new("<list>"), std::io::Error::other(e)))??;
        Ok(keys.into_iter().filter(|k| k.starts_with(prefix)).collect())
    }

    fn key_of(&self, uri: &str) -> Option<String> {
        let path = uri.strip_prefix("file://")?;
        let key = Path::new(path).strip_prefix(&self.root).ok()?.to_str()?.to_owned();
        self.path_of(&key).ok().map(|_| key)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        for p in [meta_path(&path), path] {
            match tokio::fs::remove_file(&p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p, e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_and_key_checks() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let meta = ObjectMeta { content_type: "text/plain".into(), ..Default::default() };
        let obj = store.put_bytes("t/j/a.txt", b"hello", &meta).await.unwrap();
        assert_eq!(obj.bytes, 5);
        assert_eq!(obj.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert!(obj.uri.starts_with("file:///"));
        assert_eq!(store.get("t/j/a.txt").await.unwrap().unwrap(), b"hello");
        assert!(store.get("t/j/missing").await.unwrap().is_none());
        let b = store.put_bytes("t/j/b.txt", b"bye", &meta).await.unwrap();
        assert_eq!(store.key_of(&b.uri).as_deref(), Some("t/j/b.txt"));
        assert_eq!(store.key_of("file:///elsewhere/t/j/b.txt"), None);
        store.delete("t/j/b.txt").await.unwrap();
        assert!(store.get("t/j/b.txt").await.unwrap().is_none());
        assert!(!dir.path().join("t/j/b.txt.meta.json").exists());
        store.put_bytes("t/j/sub/c.txt", b"c", &meta).await.unwrap();
        assert_eq!(store.list("t/j/").await.unwrap(), ["t/j/a.txt", "t/j/sub/c.txt"]);
        assert!(store.list("t/none/").await.unwrap().is_empty());
        store.delete("t/j/b.txt").await.unwrap();
        let sidecar = std::fs::read_to_string(dir.path().join("t/j/a.txt.meta.json")).unwrap();
        assert!(sidecar.contains("text/plain"));
        for bad in ["../x", "/abs", "t/../../x", "t//x", "a\u{1}b"] {
            assert!(matches!(store.put_bytes(bad, b"x", &meta).await, Err(StorageError::InvalidKey { .. })), "{bad}");
        }
    }

    #[tokio::test]
    async fn fetch_limits() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("s")).unwrap();
        let f = dir.path().join("in.bin");
        std::fs::write(&f, vec![0u8; 100]).unwrap();
        let loc = MediaLocation::Local(f.clone());
        assert_eq!(store.fetch(&loc, dir.path(), 100).await.unwrap(), f);
        assert!(matches!(store.fetch(&loc, dir.path(), 99).await, Err(StorageError::TooLarge { .. })));
        let missing = MediaLocation::Local(dir.path().join("nope"));
        assert!(matches!(store.fetch(&missing, dir.path(), 100).await, Err(StorageError::NotFound(_))));
        let s3 = MediaLocation::S3 { bucket: "b".into(), key: "k".into() };
        assert!(matches!(store.fetch(&s3, dir.path(), 100).await, Err(StorageError::Unsupported(_))));
    }
}
