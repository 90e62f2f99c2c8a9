//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The port of the loopback redirect when neither `--port` nor `PROCORE_AUTH_PORT`
/// says otherwise: register `http://localhost:8765` as a redirect URI of the app.
pub(crate) const DEFAULT_PORT: u16 = 8765;

/// How long `login` waits for the browser, in seconds, by default.
pub(crate) const DEFAULT_LOGIN_TIMEOUT_SECS: u64 = 300;

/// Sign in to Procore and print fresh OAuth access tokens for scripts.
///
/// The app's client id comes from --client-id or PROCORE_CLIENT_ID; its client
/// secret only from the PROCORE_CLIENT_SECRET environment variable (never from the
/// command line, where other users could read it).
#[derive(Debug, Parser)]
#[command(
    name = "procore-auth",
    version,
    after_help = "Exit status: 0 ok, 1 failed, 2 usage or configuration error, \
                  3 sign in again (`procore-auth login`), 4 temporary failure (try again later)."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Procore environment: production, sandbox, monthly-sandbox, federal, or a base URL
    /// [default: production]
    #[arg(
        long = "env",
        value_name = "NAME|URL",
        env = "PROCORE_ENVIRONMENT",
        hide_env_values = true,
        global = true
    )]
    pub(crate) environment: Option<String>,

    /// The app's OAuth client id
    #[arg(
        long,
        value_name = "ID",
        env = "PROCORE_CLIENT_ID",
        hide_env_values = true,
        global = true
    )]
    pub(crate) client_id: Option<String>,

    #[arg(
        long,
        help = "Where the token is kept [default: <config dir>/procore-auth/<login host>.json]",
        value_name = "PATH",
        env = "PROCORE_AUTH_TOKEN_FILE",
        hide_env_values = true,
        global = true
    )]
    pub(crate) token_file: Option<PathBuf>,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Sign in with the browser and save the token (mode 0600)
    Login(LoginArgs),
    /// Print a fresh access token (and nothing else) on stdout, refreshing it if needed
    Token,
    /// Show whom the token acts for (GET /rest/v1.0/me) and when it expires
    Whoami,
    /// Show the saved token's expiry and the last known rate-limit budget (no network)
    Status,
    /// Revoke the token at Procore and delete the token file
    Logout,
}

/// `login`'s options.
#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    #[arg(
        long,
        help = "Port of the registered redirect URI http://localhost:<PORT>, listened on at 127.0.0.1",
        value_name = "PORT",
        env = "PROCORE_AUTH_PORT",
        hide_env_values = true,
        default_value_t = DEFAULT_PORT
    )]
    pub(crate) port: u16,

    /// Paste the code Procore shows instead (redirect URI urn:ietf:wg:oauth:2.0:oob)
    #[arg(long)]
    pub(crate) oob: bool,

    /// Do not open a browser: print the URL to open
    #[arg(long)]
    pub(crate) no_browser: bool,

    /// Seconds to wait for the browser to come back
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_LOGIN_TIMEOUT_SECS)]
    pub(crate) timeout: u64,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_option_takes_the_client_secret() {
        let help = Cli::command().render_long_help().to_string();
        assert!(!help.contains("--client-secret"), "{help}");
        assert!(help.contains("PROCORE_CLIENT_SECRET"), "{help}");
    }
}
