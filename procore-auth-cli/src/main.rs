//! `procore-auth`: sign in to Procore once, then print fresh OAuth access tokens for
//! scripts, like `gh auth token` or `gcloud auth print-access-token`.
//!
//! ```text
//! export PROCORE_CLIENT_ID=… PROCORE_CLIENT_SECRET=…   # the app's credentials
//! procore-auth login --env sandbox                     # browser, loopback redirect
//! curl -H "Authorization: Bearer $(procore-auth token)" https://sandbox.procore.com/rest/v1.0/me
//! ```
//!
//! Built on `procore-auth-core` (the token file is its `FileStore`, refreshes go
//! through its `TokenManager`: single flight, saved before used) and
//! `procore-auth-reqwest` (token calls, and `whoami`'s request through
//! `ProcoreAuthMiddleware`). See `procore-auth --help` for the exit statuses.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod budget;
mod cli;
mod commands;
mod failure;
mod login;
mod loopback;
mod progress;
mod settings;
mod time;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::failure::Failure;
use crate::settings::Settings;

fn main() -> ExitCode {
    // Usage errors exit here, with status 2.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("procore-auth: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A read of stdin still blocked (`login --oob` timing out) must not hold the exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("procore-auth: {failure}");
            failure.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let settings = Settings::resolve(&cli.global)?;
    match &cli.command {
        Command::Login(args) => login::run(&settings, args).await,
        Command::Token => commands::token(&settings).await,
        Command::Whoami => commands::whoami(&settings).await,
        Command::Status => commands::status(&settings).await,
        Command::Logout => commands::logout(&settings).await,
    }
}
