//! `diffkeeper`: read flight recordings of containers and commands.

mod args;
mod commands;
mod locate;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    if !matches!(cli.command, args::Command::Record(_)) {
        exit_quietly_on_closed_pipe();
    }
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("diffkeeper: {err:#}");
            ExitCode::from(output::EXIT_ERROR)
        }
    }
}

/// `diffkeeper timeline … | head` must end quietly when `head` has read
/// enough, like any Unix filter: Rust ignores SIGPIPE, so printing to the
/// closed pipe would panic. The readers get the default action back; `record`
/// keeps ignoring it, since a closed terminal must not kill it before the
/// recording is finished.
fn exit_quietly_on_closed_pipe() {
    // SAFETY: restores a default disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}
