//! Creating files and folders with their final permissions from the first moment.

use std::io::{self, Write};
use std::path::Path;

/// Mode of files holding a secret: owner read and write only.
pub(crate) const SECRET_MODE: u32 = 0o600;
/// Mode of files anyone may read (certificates, public keys).
pub(crate) const PUBLIC_MODE: u32 = 0o644;
/// Mode of folders: owner only (a party folder holds secrets).
pub(crate) const DIR_MODE: u32 = 0o700;

/// Writes `bytes` to a new file created with `mode` (never overwriting), synced to disk. The mode
/// is given to `open(2)`, so a secret is never briefly readable by others.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates one folder (its parent must exist) with owner-only permissions; fails if it exists.
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(path)
}

/// Creates a folder and any missing parents, the new ones owner-only.
pub(crate) fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(path)
}
