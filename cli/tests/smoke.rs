//! Smoke tests of the binary's command surface.
//!
//! Besides checking the help text, this target makes `cargo test --workspace` build the
//! `fedchain` binary before any test runs (cargo builds a package's binaries only for that
//! package's own integration tests); the end-to-end tests in `tests/` then run that fresh binary.

use std::process::Command;

fn fedchain(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fedchain"))
        .args(args)
        .output()
        .expect("run fedchain")
}

#[test]
fn help_lists_every_command() {
    let out = fedchain(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["data", "train", "model", "demo", "bench"] {
        assert!(help.contains(cmd), "missing {cmd} in:\n{help}");
    }
}

#[test]
fn unknown_commands_are_usage_errors() {
    let out = fedchain(&["trian"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("train"));
}
