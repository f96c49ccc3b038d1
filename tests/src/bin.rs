//! Find and run the real `fedchain` binary.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The project's `.venv` Python (with torch and safetensors; `scripts/setup.sh` creates it), to
/// check fedchain's files against PyTorch itself.
pub fn venv_python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

/// The `fedchain` binary of this build (`target/<profile>/fedchain`, next to this test's `deps/`).
pub fn fedchain_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("fedchain");
    assert!(
        bin.exists(),
        "{} does not exist; run the end-to-end tests with `cargo test --workspace`, which builds \
         it first (or `cargo build -p fedchain-cli -p fedchain-server` before `cargo test -p \
         fedchain-tests`: the demo runs its coordinator with fedchain-server when it is there)",
        bin.display()
    );
    bin
}

/// Runs `fedchain ARGS` with a clean environment for libtorch: no LD_LIBRARY_PATH, so the test
/// also proves the binary finds libtorch through its rpath.
pub fn fedchain(args: &[&str]) -> Output {
    Command::new(fedchain_bin())
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run fedchain")
}

/// Stdout as text, asserting success and printing stderr on failure.
pub fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "fedchain failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

/// Stderr of a run that must fail cleanly: exit code 1 (our errors) or 2 (usage), never a panic.
pub fn failed_stderr(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}; stdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "fedchain panicked:\n{stderr}");
    stderr
}

/// Parses stdout as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok_stdout(out)).expect("stdout is one JSON document")
}
