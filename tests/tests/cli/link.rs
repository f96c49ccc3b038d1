//! The binary must find libtorch by itself (rpath) and keep libtorch_cuda linked, or a hospital's
//! GPU is silently never used.

use fedchain_tests::{fedchain, fedchain_bin, ok_stdout};
use std::process::Command;

#[test]
fn binary_runs_without_ld_library_path_and_links_libtorch_cuda() {
    // `fedchain()` clears LD_LIBRARY_PATH: this only works through the rpath.
    ok_stdout(&fedchain(&["--version"]));

    let ldd = Command::new("ldd")
        .arg(fedchain_bin())
        .output()
        .expect("ldd runs");
    let deps = String::from_utf8_lossy(&ldd.stdout);
    assert!(deps.contains("libtorch_cpu.so"), "{deps}");
    assert!(!deps.contains("not found"), "unresolved libraries:\n{deps}");
    // Built against a CUDA-capable libtorch (the PyPI wheel): libtorch_cuda must be a direct
    // dependency even though no symbol of it is referenced.
    let torch_lib = deps
        .lines()
        .find(|l| l.contains("libtorch_cpu.so"))
        .and_then(|l| l.split("=>").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .map(|p| std::path::Path::new(p).parent().unwrap().to_path_buf())
        .expect("libtorch_cpu path in ldd output");
    if torch_lib.join("libtorch_cuda.so").exists() {
        assert!(
            deps.contains("libtorch_cuda.so"),
            "libtorch_cuda dropped:\n{deps}"
        );
    }
}
