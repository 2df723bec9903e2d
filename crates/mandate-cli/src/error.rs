//! The CLI's one error type and how it is reported.

use serde_json::json;

use crate::Output;

/// What went wrong, and so which exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A file could not be read or written (exit 1).
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The input is invalid (exit 3).
    #[error("{message}")]
    Input {
        /// Stable reason codes.
        codes: Vec<String>,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A signature or chain did not verify (exit 2).
    #[error("{message}")]
    Invalid {
        /// Stable reason codes.
        codes: Vec<String>,
        /// What failed.
        message: String,
    },
}

impl CliError {
    /// Invalid input with one code.
    pub fn input(code: &str, message: impl Into<String>) -> Self {
        CliError::Input {
            codes: vec![code.to_owned()],
            message: message.into(),
        }
    }

    /// The process exit code.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Io { .. } => 1,
            CliError::Invalid { .. } => 2,
            CliError::Input { .. } => 3,
        }
    }

    /// Prints the error on stderr.
    pub fn report(&self, out: Output) {
        match out {
            Output::Text => eprintln!("error: {self}"),
            Output::Json => {
                let codes = match self {
                    CliError::Io { .. } => vec!["io_error".to_owned()],
                    CliError::Input { codes, .. } | CliError::Invalid { codes, .. } => {
                        codes.clone()
                    }
                };
                eprintln!(
                    "{}",
                    json!({"error": {"codes": codes, "message": self.to_string()}})
                );
            }
        }
    }
}
