//! Writes every fuzz target's valid encoding to `DIR/<target>/valid`, the libFuzzer corpus seed.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz-seeds DIR   (writes DIR/<target>/valid for every fuzz target)");
        return ExitCode::from(2);
    };
    for (name, bytes) in fedchain_fuzzing::seeds() {
        let folder = dir.join(name);
        let written = std::fs::create_dir_all(&folder)
            .and_then(|()| std::fs::write(folder.join("valid"), bytes));
        if let Err(e) = written {
            eprintln!("fuzz-seeds: cannot write {}: {e}", folder.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
