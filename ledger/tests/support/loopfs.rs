//! A small ext4 file system on a loop device, for tests of what survives the OS rather than the
//! process: [`LoopFs::fail`] makes the kernel abort the file system at once (what only reached the
//! page cache is lost, as after a crash or power loss), [`LoopFs::recover`] unmounts, runs `e2fsck`
//! and mounts it again. Needs root and loop devices: [`LoopFs::new`] says why it cannot run, and
//! under CI (`CI` set) that is a failure, not a skip.

#![allow(dead_code)] // each test binary uses its own part of it

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct LoopFs {
    image: PathBuf,
    mount: PathBuf,
    _tmp: tempfile::TempDir,
    mounted: bool,
    /// `/sys/fs/ext4/loopN/trigger_fs_error` of the current mount (found once, so that
    /// [`LoopFs::fail`] acts within microseconds of being called).
    knob: PathBuf,
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl LoopFs {
    /// A new file system of `mib` MiB, mounted with `errors=remount-ro`. `Err` says why it cannot
    /// be made here (not root, no loop devices, no mkfs.ext4).
    pub fn new(mib: u64) -> Result<LoopFs, String> {
        if run("id", &["-u"])?.trim() != "0" {
            return Err("needs root to mount a loop device".into());
        }
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = tmp.path().join("fs.img");
        let mount = tmp.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        f.set_len(mib << 20).map_err(|e| e.to_string())?;
        drop(f);
        run("mkfs.ext4", &["-q", "-F", &image.to_string_lossy()])?;
        let mut fs = LoopFs {
            image,
            mount,
            _tmp: tmp,
            mounted: false,
            knob: PathBuf::new(),
        };
        fs.mount()?;
        Ok(fs)
    }

    /// `LoopFs::new`, or `None` with a note on stderr when this machine cannot mount one; under
    /// CI it panics instead, so that the test cannot pass without having run.
    pub fn new_or_skip(mib: u64, test: &str) -> Option<LoopFs> {
        match LoopFs::new(mib) {
            Ok(fs) => Some(fs),
            Err(why) if std::env::var_os("CI").is_none() => {
                eprintln!("{test}: SKIPPED, {why} (CI runs it as root)");
                None
            }
            Err(why) => panic!("{test} must run under CI: {why}"),
        }
    }

    fn mount(&mut self) -> Result<(), String> {
        run(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                &self.image.to_string_lossy(),
                &self.mount.to_string_lossy(),
            ],
        )?;
        self.mounted = true;
        self.knob = Path::new("/sys/fs/ext4")
            .join(self.device()?)
            .join("trigger_fs_error");
        if !self.knob.exists() {
            return Err(format!(
                "{} is missing: this kernel cannot inject file-system errors",
                self.knob.display()
            ));
        }
        Ok(())
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    /// The loop device's name (`loop3`), as the kernel's ext4 sysfs folder knows it.
    fn device(&self) -> Result<String, String> {
        let src = run(
            "findmnt",
            &["-n", "-o", "SOURCE", &self.mount.to_string_lossy()],
        )?;
        Path::new(src.trim())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("findmnt printed {src:?}"))
    }

    /// Aborts the file system now: from here on nothing more reaches the disk, and whatever was
    /// not yet written back is lost, as in an OS crash.
    pub fn fail(&self) -> Result<(), String> {
        std::fs::write(&self.knob, b"1").map_err(|e| format!("{}: {e}", self.knob.display()))
    }

    /// After [`LoopFs::fail`] (and once every process using it has exited): unmounts, repairs
    /// with `e2fsck -fy` and mounts again, as an operator would after the crash.
    pub fn recover(&mut self) -> Result<(), String> {
        self.unmount()?;
        // e2fsck exits 1 when it fixed something; only >= 4 means it could not.
        let status = Command::new("e2fsck")
            .args(["-fy", &self.image.to_string_lossy()])
            .output()
            .map_err(|e| format!("cannot run e2fsck: {e}"))?
            .status;
        if status.code().is_none_or(|c| c >= 4) {
            return Err(format!("e2fsck could not repair the file system: {status}"));
        }
        self.mount()
    }

    fn unmount(&mut self) -> Result<(), String> {
        if self.mounted {
            run("umount", &[&self.mount.to_string_lossy()])?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            // Lazy, so a test that failed with a process still inside does not leak the mount.
            let _ = run("umount", &["-l", &self.mount.to_string_lossy()]);
        }
    }
}
