//! The point of `fedchain-server`: a coordinator host and an auditor need no libtorch. Its binary
//! must not load any torch library, and it must carry the commands those parties run.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fedchain-server");

#[test]
fn the_server_binary_loads_no_libtorch() {
    let out = Command::new("ldd").arg(BIN).output().expect("run ldd");
    assert!(out.status.success(), "ldd {BIN} failed");
    let libs = String::from_utf8_lossy(&out.stdout);
    // Something was listed (ldd did read the binary), and none of it is torch.
    assert!(libs.contains("libc.so"), "{libs}");
    assert!(
        !libs
            .lines()
            .any(|l| l.contains("torch") || l.contains("c10")),
        "fedchain-server loads libtorch:\n{libs}"
    );
}

#[test]
fn the_server_binary_runs_the_coordinator_and_the_audit_commands() {
    let help = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .output()
            .expect("run fedchain-server");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let top = help(&["--help"]);
    assert!(
        top.contains("coordinator") && top.contains("audit"),
        "{top}"
    );
    assert!(
        !top.contains("worker"),
        "a worker trains, with libtorch: {top}"
    );
    for cmd in ["verify", "replay", "checkpoints", "export"] {
        assert!(help(&["audit", "--help"]).contains(cmd), "audit {cmd}");
    }
    assert!(help(&["coordinator", "--help"]).contains("--config"));
    // A missing configuration is a clear error, not a panic.
    let out = Command::new(BIN)
        .args(["coordinator", "--config", "/nonexistent/coordinator.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read the configuration"), "{err}");
}
