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
    readme_block(
        "<!-- walkthrough:start -->",
        "<!-- walkthrough:end -->",
        "```sh\n",
    )
}

/// The code block (opened by `fence`) between README.md's `start` and `end` markers.
fn readme_block(start: &str, end: &str, fence: &str) -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md");
    let start = text
        .find(start)
        .unwrap_or_else(|| panic!("the README marks a block with {start}"));
    let end = start + text[start..].find(end).expect("and its end");
    let block = &text[start..end];
    let open = block.find(fence).expect("a code block") + fence.len();
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
    assert!(said.contains("5 rows of new-patients.csv"), "{said}");
    assert!(dir.join("round-1.safetensors").exists(), "{said}");
    assert!(said.contains("job 2 cancelled after"), "{said}");
    // The list: job 1 finished after its 3 rounds, job 2 cancelled.
    assert!(said.contains("finished      3/3"), "{said}");
    assert!(said.contains("cancelled by researcher alice"), "{said}");
    // Replay checked both jobs' ends (job 2's deposits depend on how many hospitals enrolled
    // before the cancellation) and who cancelled job 2.
    assert!(said.contains("1 cancelled by their researcher"), "{said}");
    let scored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tromso-scored.json")).unwrap())
            .unwrap();
    let accuracy = scored["metrics"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{scored}");
    // The README's PyTorch lines predict what `fedchain predict` does: on the five rows as written,
    // and on a whole export (enough rows that a wrong scaling or layer would show).
    let python = readme_block(
        "<!-- pytorch:start -->",
        "<!-- pytorch:end -->",
        "```python\n",
    );
    for rows in ["new-patients.csv", "exports/tromso.csv"] {
        let from_torch = run_python(dir, &python.replace("new-patients.csv", rows));
        let out = Command::new(fedchain_bin())
            .args([
                "predict",
                "--model",
                "model.safetensors",
                "--csv",
                rows,
                "--json",
            ])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let from_fedchain: Vec<i64> = v["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap() as i64)
            .collect();
        assert!(from_fedchain.len() >= 5, "{v}");
        assert_eq!(
            from_torch, from_fedchain,
            "{rows}: PyTorch and fedchain disagree"
        );
    }
}

/// Runs `script` with the project's `.venv` Python in `dir`; its output is a JSON list of classes.
fn run_python(dir: &Path, script: &str) -> Vec<i64> {
    let python = fedchain_tests::venv_python();
    std::fs::write(dir.join("apply.py"), script).unwrap();
    let out = Command::new(&python)
        .arg("apply.py")
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh creates it)", python.display()));
    assert!(
        out.status.success(),
        "the README's PyTorch lines failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}
