//! Questions to the user: on a terminal with a prompt (passwords without
//! echo), otherwise one line read from stdin, so scripts and tests can answer.

use std::io::{BufRead, IsTerminal, Write};

/// Why a question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// stdin ended before an answer.
    #[error("no answer to {0:?} (stdin is closed; pass it as a flag or an environment variable)")]
    NoAnswer(String),
    /// The terminal could not be read.
    #[error("cannot read the answer to {question:?}: {source}")]
    Io {
        /// The question.
        question: String,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Whether a person is at the keyboard.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal()
}

fn line(question: &str) -> Result<String, PromptError> {
    eprint!("{question} ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|source| PromptError::Io {
            question: question.to_owned(),
            source,
        })?;
    if read == 0 {
        return Err(PromptError::NoAnswer(question.to_owned()));
    }
    if !interactive() {
        eprintln!();
    }
    Ok(answer.trim_end_matches(['\r', '\n']).to_owned())
}

/// Asks for a line of text.
pub fn text(question: &str) -> Result<String, PromptError> {
    line(question).map(|a| a.trim().to_owned())
}

/// Asks for a secret: without echo on a terminal.
pub fn secret(question: &str) -> Result<String, PromptError> {
    if interactive() {
        rpassword::prompt_password(format!("{question} ")).map_err(|source| PromptError::Io {
            question: question.to_owned(),
            source,
        })
    } else {
        line(question)
    }
}

/// Asks a yes/no question; anything but y/yes is no.
pub fn confirm(question: &str) -> Result<bool, PromptError> {
    let answer = text(&format!("{question} [y/N]"))?;
    Ok(matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes"))
}
