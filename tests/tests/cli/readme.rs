//! The README's "Running a consortium" walk-through, run as written: the block between its
//! `walkthrough` markers goes to bash unchanged but for the port, in a new folder, with the
//! `fedchain` of this build first on PATH. Its background processes (the coordinator, three
//! workers) run in a session of their own, stopped whatever happens.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fedchain_tests::fedchain_bin;

/// The walk-through's shell commands, from README.md.
fn walkthrough() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md");
    let start = text
        .find("<!-- walkthrough:start -->")
        .expect("the README marks its walk-through");
    let end = text.find("<!-- walkthrough:end -->").expect("and its end");
    let block = &text[start..end];
    let open = block.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let close = block.rfind("```").expect("closed");
    block[open..close].to_string()
}

#[test]
fn the_readmes_walkthrough_runs_as_written() {
    let script = walkthrough();
    assert!(script.contains("fedchain consortium init"), "{script}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = script.replace("7443", &port.to_string());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("walkthrough.sh"), &script).unwrap();
    let bin_dir = fedchain_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("setsid")
        .args(["bash", "-e", "-u", "-o", "pipefail", "walkthrough.sh"])
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("FEDCHAIN_COORDINATOR")
        .stdout(std::fs::File::create(dir.join("out.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("err.log")).unwrap())
        .spawn()
        .expect("bash");
    let session = child.id();
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Whatever happened, nothing of the session outlives the test.
    for signal in ["-TERM", "-KILL"] {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{session}")])
            .output();
    }
    let _ = child.wait();
    let said = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        std::fs::read_to_string(dir.join("out.log")).unwrap_or_default(),
        std::fs::read_to_string(dir.join("err.log")).unwrap_or_default()
    );
    let status = status.unwrap_or_else(|| panic!("the walk-through took over 10 minutes\n{said}"));
    assert!(
        status.success(),
        "the walk-through failed ({status})\n{said}"
    );
    for made in [
        "exports/oslo.csv",
        "exports/tromso.csv",
        "model.safetensors",
        "audit-events.json",
        "state-oslo/witness.txt",
    ] {
        assert!(dir.join(made).exists(), "{made} is missing\n{said}");
    }
    assert!(said.contains("verdict: OK"), "{said}");
}
