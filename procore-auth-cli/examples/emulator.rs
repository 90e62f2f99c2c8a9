//! Starts the local Procore emulator (`procore-auth-testkit`) for trying `procore-auth`
//! by hand, and prints the variables that point the CLI at it.
//!
//! ```text
//! cargo run -p procore-auth-cli --example emulator        # in one terminal
//! eval "$(…the export line it printed…)"                  # in another
//! procore-auth login --no-browser
//! ```
//!
//! The emulator approves every sign-in at once (no password page): opening the printed
//! URL (in a browser, or with `curl -sL`) redirects straight to the CLI's loopback
//! listener. It registers `http://localhost:<port>` as a redirect URI, with the port
//! from `PROCORE_AUTH_PORT` (default 8765, the CLI's default). Stop it with Ctrl-C.

use procore_auth_testkit::Emulator;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("PROCORE_AUTH_PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(8765);
    let emulator = Emulator::builder()
        .redirect_uri(format!("http://localhost:{port}"))
        .start()
        .await;
    println!("Procore emulator at {}", emulator.base_url());
    println!(
        "export PROCORE_ENVIRONMENT={} PROCORE_CLIENT_ID={} PROCORE_CLIENT_SECRET={}",
        emulator.base_url(),
        emulator.client_id(),
        emulator.client_secret()
    );
    println!("(it approves every sign-in at once; redirect URI http://localhost:{port}; Ctrl-C stops it)");
    std::future::pending::<()>().await;
}
