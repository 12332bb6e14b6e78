//! Exit codes shared by every aifb binary, and the error that carries one.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the check failed (regression found, run invalid, benchmark failed) |
//! | 2 | usage or input error (bad recipe, unreadable or wrong-schema Parquet, service that does not start) |
//! | 3 | inconclusive |
//! | 4 | not comparable |

use std::fmt;
use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// The check failed: regression found, run invalid, benchmark failed.
pub const CHECK_FAILED: u8 = 1;
/// Usage or input error, with a one-line reason on stderr.
pub const USAGE: u8 = 2;
/// Inconclusive result.
pub const INCONCLUSIVE: u8 = 3;
/// The inputs cannot be compared.
pub const NOT_COMPARABLE: u8 = 4;

/// An error that ends a binary: a one-line message and the exit code to leave with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Exit code, one of the constants of this module.
    pub code: u8,
    /// One line, naming the file, field or line at fault.
    pub message: String,
}

impl Failure {
    /// A usage or input error (exit 2).
    pub fn input(message: impl Into<String>) -> Self {
        Self {
            code: USAGE,
            message: message.into(),
        }
    }
    /// A failed check or run (exit 1).
    pub fn check(message: impl Into<String>) -> Self {
        Self {
            code: CHECK_FAILED,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Runs a binary's body: prints a failure as one line on stderr, prefixed by the program
/// name, and turns it into the process exit code.
pub fn finish(program: &str, result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let line = failure.message.replace('\n', " ");
            eprintln!("{program}: error: {line}");
            ExitCode::from(failure.code)
        }
    }
}
