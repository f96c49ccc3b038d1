//! Small file systems for tests of what a full disk does: a `tmpfs` of a given size mounted on a
//! folder of the test. Needs root: [`Tmpfs::mount_or_skip`] says why it cannot run, and under CI
//! (`CI` set) that is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted `tmpfs`, unmounted when dropped.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a `tmpfs` of `mib` MiB on the folder `path` (created if missing).
    pub fn mount(path: &Path, mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// [`Tmpfs::mount`], or `None` with a note on stderr when this machine cannot; under CI it
    /// panics instead, so that the test cannot pass without having run.
    pub fn mount_or_skip(path: &Path, mib: u64, test: &str) -> Option<Tmpfs> {
        match Tmpfs::mount(path, mib) {
            Ok(fs) => Some(fs),
            Err(why) if std::env::var_os("CI").is_none() => {
                eprintln!("{test}: SKIPPED, {why} (CI runs it as root)");
                None
            }
            Err(why) => panic!("{test} must run under CI: {why}"),
        }
    }

    /// Fills the file system with `name` until it has no space left; returns the bytes written.
    pub fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path.join(name)).expect("create the filler");
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0;
        loop {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => written += n as u64,
            }
        }
        let _ = f.flush();
        written
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}
