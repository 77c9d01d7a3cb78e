//! One error type for the whole crate, split by *who* has to act: the user (bad input,
//! exit code 2) or the program/environment (a run that failed, exit code 1).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's input is wrong: a spec key, a file, a model name. Exit code 2.
    /// The message names the file/key/line and what was expected.
    #[error("{0}")]
    Input(String),
    /// The run itself failed (I/O, numerics, a stage crashed). Exit code 1.
    #[error("{0}")]
    Run(String),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
    pub fn run(msg: impl Into<String>) -> Self {
        Error::Run(msg.into())
    }
    /// An I/O error with the path it concerns.
    pub fn io(path: &Path, what: &str, source: std::io::Error) -> Self {
        Error::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }
    /// Process exit code: 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => 2,
            _ => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
