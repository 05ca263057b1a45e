//! Run files: how the command line finds the running server of a data directory.
//!
//! At start a server writes `<data_dir>/run/imbus.json` with its process id and the
//! addresses it actually bound; it removes the file on a clean shutdown. The admin API is
//! protected by a random bearer token kept in `<data_dir>/admin.token` (mode 0600), created
//! on first start; whoever can read the data directory can administer the server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::OpsError;

/// What a running server tells the command line about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub pid: u32,
    pub http: SocketAddr,
    #[serde(default)]
    pub listeners: Vec<(String, SocketAddr)>,
    pub backend: String,
    pub version: String,
}

/// The run file of a data directory.
#[derive(Debug, Clone)]
pub struct RunFile {
    path: PathBuf,
}

impl RunFile {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("run").join("imbus.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the run file atomically (temporary file, then rename).
    pub fn write(&self, info: &RunInfo) -> Result<(), OpsError> {
        let file_err = |source| OpsError::File {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(file_err)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(info).map_err(|e| file_err(e.into()))?;
        std::fs::write(&tmp, text).map_err(file_err)?;
        std::fs::rename(&tmp, &self.path).map_err(file_err)
    }

    /// The run file's content, or `None` if no server has written one.
    pub fn read(&self) -> Result<Option<RunInfo>, OpsError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| OpsError::BadRunFile {
                        path: self.path.clone(),
                        detail: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(OpsError::File {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Removes the run file (clean shutdown).
    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove run file");
        }
    }
}

fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// The admin token of a data directory, created (random, 256 bits, mode 0600) if missing.
pub fn admin_token(data_dir: &Path) -> Result<String, OpsError> {
    if let Some(token) = read_admin_token(data_dir)? {
        return Ok(token);
    }
    let path = token_path(data_dir);
    let file_err = |source| OpsError::File {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(file_err)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(token.as_bytes()).map_err(file_err)?;
            f.sync_all().map_err(file_err)?;
            Ok(token)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_admin_token(data_dir)?
            .ok_or_else(|| file_err(std::io::Error::other("admin token file is empty"))),
        Err(e) => Err(file_err(e)),
    }
}

/// The admin token of a data directory, if one was created.
pub fn read_admin_token(data_dir: &Path) -> Result<Option<String>, OpsError> {
    let path = token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(OpsError::File { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_admin_token(dir.path()).unwrap(), None);
        let a = admin_token(dir.path()).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(admin_token(dir.path()).unwrap(), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("admin.token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn run_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let rf = RunFile::new(dir.path());
        assert_eq!(rf.read().unwrap(), None);
        let info = RunInfo {
            pid: 42,
            http: "127.0.0.1:5280".parse().unwrap(),
            listeners: vec![("c2s".into(), "0.0.0.0:5222".parse().unwrap())],
            backend: "embedded".into(),
            version: "0.1.0".into(),
        };
        rf.write(&info).unwrap();
        assert_eq!(rf.read().unwrap(), Some(info));
        rf.remove();
        assert_eq!(rf.read().unwrap(), None);
        std::fs::write(rf.path(), "{").unwrap();
        assert!(
            rf.read()
                .unwrap_err()
                .to_string()
                .contains("not a valid run file")
        );
    }
}
