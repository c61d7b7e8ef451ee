//! `diffkeeper`: read flight recordings of containers and commands.

mod args;
mod commands;
mod locate;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("diffkeeper: {err:#}");
            ExitCode::from(output::EXIT_ERROR)
        }
    }
}
