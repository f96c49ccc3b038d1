//! What makes a write durable: `fsync` of the files written and of the directories that gained
//! or lost a name.
//!
//! `sled` 0.34.7's `Db::flush` is not enough on Linux: it writes the log with
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`, which persists the data pages but neither
//! a growing file's size and extents nor the drive's write cache, and it never syncs the blob files
//! it writes for large values (`blobs/`), its configuration file or the directories holding them.
//! Only its background thread calls `fsync`, about every 500 ms. An OS crash, a power loss or a
//! file-system error inside that window loses records that were acknowledged. [`SledSync`] closes
//! the gap: after sled's flush it fsyncs the log file, every file that appeared since its last call,
//! and the directories whose entries changed. `fsync` acts on the inode, so a second descriptor
//! persists what sled's own descriptor wrote.

use crate::error::{LedgerError, Result};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fsyncs the file at `path` (its data and metadata, and the drive's write cache).
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Fsyncs the directory `dir`, so that names created, renamed or removed in it survive a crash.
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Directory fsync is a Unix notion; elsewhere the OS keeps names as it sees fit.
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

/// Replaces `path` with `contents` atomically and durably: a temporary file in the same folder is
/// written, fsynced and renamed over `path`, then the folder is fsynced. On failure the temporary
/// file is removed and `path` is untouched.
pub fn replace_file(path: &Path, contents: &[u8]) -> Result<()> {
    let name = path.file_name().ok_or_else(|| {
        LedgerError::InvalidArgument(format!("{} has no file name", path.display()))
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(contents).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// `create_dir_all` whose result survives a crash: every directory it creates is synced into its
/// parent. A folder that already exists is left alone.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // Innermost first: each new directory's name is made durable in its parent, up to the
    // first parent that already existed.
    for d in &missing {
        let parent = d.parent().filter(|p| !p.as_os_str().is_empty());
        sync_dir(parent.unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Makes a sled folder durable after `Db::flush`: see the module documentation.
///
/// It remembers the files it has synced (by name and length), so a call syncs the log file, the
/// files that are new or changed since the last call, and the directories whose set of names
/// changed. A blob file sled writes is never rewritten, so after its first sync it costs nothing.
#[derive(Debug)]
pub struct SledSync {
    dir: PathBuf,
    /// Per directory (the sled folder and its `blobs/`): file name -> length when last synced.
    seen: HashMap<PathBuf, HashMap<OsString, u64>>,
}

/// The name of sled 0.34's log file inside its folder; every record lives in it.
const SLED_LOG: &str = "db";
/// Where sled 0.34 writes values too large for the log, one file each.
const SLED_BLOBS: &str = "blobs";

impl SledSync {
    /// For the sled folder `dir` (the one given to `sled::open`).
    pub fn new(dir: &Path) -> SledSync {
        SledSync {
            dir: dir.to_path_buf(),
            seen: HashMap::new(),
        }
    }

    /// Fsyncs what sled wrote since the last call. Call it after `Db::flush`.
    pub fn sync(&mut self) -> Result<()> {
        sync_file(&self.dir.join(SLED_LOG))?;
        let dir = self.dir.clone();
        self.sync_new_files(&dir)?;
        let blobs = dir.join(SLED_BLOBS);
        if blobs.is_dir() {
            self.sync_new_files(&blobs)?;
        }
        Ok(())
    }

    /// Fsyncs each regular file of `dir` that is new or changed in length, then `dir` itself when
    /// its set of names changed.
    fn sync_new_files(&mut self, dir: &Path) -> Result<()> {
        let mut now = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let path = entry.path();
            // A file removed between the listing and here (sled's blob collection) needs no sync.
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(LedgerError::Io { path, source }),
            };
            if meta.is_file() {
                now.insert(entry.file_name(), meta.len());
            }
        }
        let before = self.seen.entry(dir.to_path_buf()).or_default();
        let mut names_changed = before.len() != now.len();
        for (name, len) in &now {
            match before.get(name) {
                Some(old) if old == len => {}
                Some(_) => sync_file(&dir.join(name))?,
                None => {
                    names_changed = true;
                    match sync_file(&dir.join(name)) {
                        Err(LedgerError::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound => {}
                        other => other?,
                    }
                }
            }
        }
        if names_changed {
            sync_dir(dir)?;
        }
        *before = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_file_swaps_contents_and_leaves_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state.txt");
        replace_file(&path, b"one").unwrap();
        replace_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        let err = replace_file(&tmp.path().join("no/such/dir/f"), b"x").unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }

    #[test]
    fn create_dir_all_creates_every_missing_level() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
    }

    #[test]
    fn sled_sync_tracks_new_and_grown_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join(SLED_LOG), b"log").unwrap();
        let mut s = SledSync::new(dir);
        s.sync().unwrap();
        assert_eq!(s.seen[dir].len(), 1);
        std::fs::create_dir(dir.join(SLED_BLOBS)).unwrap();
        std::fs::write(dir.join(SLED_BLOBS).join("17"), b"blob").unwrap();
        std::fs::write(dir.join("conf"), b"c").unwrap();
        s.sync().unwrap();
        assert_eq!(s.seen[dir].len(), 2);
        assert_eq!(s.seen[&dir.join(SLED_BLOBS)].len(), 1);
        std::fs::remove_file(dir.join(SLED_BLOBS).join("17")).unwrap();
        s.sync().unwrap();
        assert!(s.seen[&dir.join(SLED_BLOBS)].is_empty());
    }

    #[test]
    fn a_missing_log_is_an_error_that_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let err = SledSync::new(tmp.path()).sync().unwrap_err().to_string();
        assert!(err.contains(SLED_LOG), "{err}");
    }
}
