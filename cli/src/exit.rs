//! How a command of either binary (`fedchain`, `fedchain-server`) ends: its exit code, or its
//! error and the causes that add something, on stderr.

use std::process::ExitCode;

/// The exit code of a command's result, printing an error first.
pub fn code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            // Library errors often repeat their source in their own message; print a cause only
            // when it adds something.
            let mut shown = e.to_string();
            for cause in e.chain().skip(1) {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                shown = text;
            }
            ExitCode::FAILURE
        }
    }
}
