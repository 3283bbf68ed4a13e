//! A command's output, written the way other command-line tools write it: a reader that went
//! away (`curric plan f.curr --json | head -c 1`) ends the command quietly, a full disk is an
//! error that says so, and nothing panics. Diagnostics go through [`errln!`], which drops what
//! a closed or full stderr cannot take: logging must never stop training.

use std::io::Write;
use std::process::ExitCode;

/// Writes `text` to stdout. `Err(code)`: stop and exit with `code` (success for a closed pipe).
pub fn stdout(text: &str) -> Result<(), ExitCode> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(ExitCode::SUCCESS),
        Err(e) => {
            crate::errln!("error: cannot write to stdout: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

/// [`stdout`] for commands that end with their output: the exit code to return.
pub fn print(text: &str) -> ExitCode {
    match stdout(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` that never panics.
#[macro_export]
macro_rules! errprint {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}
