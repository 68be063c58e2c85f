//! Shell completions that know groved's handles: clap_complete's dynamic
//! engine. `grove completions SHELL` prints a small script that, on each
//! Tab, runs `GROVE_COMPLETE=SHELL grove -- WORDS...`; grove then answers
//! with the candidates (flags, subcommands, and for a handle argument the
//! handles groved lists, asked with the connection flags on the line being
//! completed) and exits.

use crate::connection::FLAGS;
use clap::{CommandFactory, Parser};
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use clap_complete::env::{CompleteEnv, Shells};
use std::time::Duration;

/// The environment variable that makes grove answer a completion request.
pub const VAR: &str = "GROVE_COMPLETE";

/// How long listing the handles may take before completion gives up on
/// them (a Tab must not hang on an unreachable groved).
const LIST_TIMEOUT: Duration = Duration::from_secs(2);

/// Answer a completion request and exit, when this run is one.
pub fn answer_if_asked() {
    CompleteEnv::with_factory(crate::Cli::command)
        .var(VAR)
        .complete();
}

/// The registration script for `shell` (bash, zsh, fish, elvish,
/// powershell). It calls `grove` by name, from PATH.
pub fn registration(shell: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let shells = Shells::builtins();
    let completer = shells
        .completer(shell)
        .ok_or_else(|| std::io::Error::other(format!("no completion for {shell}")))?;
    completer.write_registration(VAR, "grove", "grove", "grove", out)
}

/// Completes a handle argument.
pub fn handles() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        list_handles()
            .into_iter()
            .map(CompletionCandidate::new)
            .collect::<Vec<_>>()
    })
}

/// The connection flags on the command line being completed (the words
/// after `--`), as `grove` would take them.
fn connection_words(words: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut words = words.iter();
    while let Some(word) = words.next() {
        if FLAGS.contains(&word.as_str()) {
            if let Some(value) = words.next() {
                found.extend([word.clone(), value.clone()]);
            }
        } else if FLAGS
            .iter()
            .any(|flag| word.starts_with(&format!("{flag}=")))
        {
            found.push(word.clone());
        }
    }
    found
}

/// groved's handles, or none if it cannot be asked within LIST_TIMEOUT.
fn list_handles() -> Vec<String> {
    let words: Vec<String> = std::env::args()
        .skip_while(|a| a != "--")
        .skip(2) // "--" and the program's name
        .collect();
    let mut argv = vec!["grove".to_string()];
    argv.extend(connection_words(&words));
    argv.push("ping".into());
    let Ok(cli) = crate::Cli::try_parse_from(argv) else {
        return Vec::new();
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let local = tokio::task::LocalSet::new();
    let handles = local.block_on(&runtime, async {
        tokio::time::timeout(LIST_TIMEOUT, async {
            let client = cli.connection.connect().await.ok()?;
            client.list(&[]).await.ok()
        })
        .await
        .ok()
        .flatten()
    });
    runtime.shutdown_background();
    let mut handles = handles.unwrap_or_default();
    handles.sort();
    handles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_flags_are_found_on_the_line() {
        let words: Vec<String> = ["--socket", "/s", "info", "--address=h:1", "--json", "we"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            connection_words(&words),
            ["--socket", "/s", "--address=h:1"]
        );
        let dangling = ["info", "--socket"].map(String::from).to_vec();
        assert!(connection_words(&dangling).is_empty());
    }

    #[test]
    fn every_shell_has_a_registration() {
        for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
            let mut script = Vec::new();
            registration(shell, &mut script).unwrap();
            let script = String::from_utf8(script).unwrap();
            assert!(script.contains(VAR), "{shell}: {script}");
        }
    }
}
