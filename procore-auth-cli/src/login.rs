//! `procore-auth login`: the authorization-code flow, through the loopback redirect
//! or by pasting the code (`--oob`), saved to the token file.

use std::io::BufRead;
use std::time::Duration;

use procore_auth_core::{
    AuthorizationCode, AuthorizationRequest, CallbackError, Clock, Error, OAuthClient, SystemClock,
    Token, TokenStore, OUT_OF_BAND_REDIRECT_URI,
};
use procore_auth_reqwest::ReqwestTransport;

use crate::cli::LoginArgs;
use crate::failure::{chain, Failure};
use crate::loopback::{Loopback, Page};
use crate::progress::Spinner;
use crate::settings::Settings;
use crate::{budget, time};

/// Runs `login`.
pub(crate) async fn run(settings: &Settings, args: &LoginArgs) -> Result<(), Failure> {
    let oauth = settings.oauth()?;
    let transport = transport()?;
    settings.create_token_directory()?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let token = if args.oob {
        out_of_band(settings, &oauth, &transport, args, timeout).await?
    } else {
        loopback(settings, &oauth, &transport, args, timeout).await?
    };
    let expiry = token.expires_at().map_or_else(
        || "has no known expiry".to_owned(),
        |at| format!("expires {}", time::utc_and_relative(at, SystemClock.now())),
    );
    eprintln!(
        "Signed in to {}.\nToken saved to {}; the access token {expiry}.",
        settings.environment().auth_base(),
        settings.token_file().display()
    );
    Ok(())
}

/// The token endpoint's client.
pub(crate) fn transport() -> Result<ReqwestTransport, Failure> {
    ReqwestTransport::new()
        .map_err(|error| Failure::failed(format!("cannot build an HTTP client: {}", chain(&error))))
}

/// The loopback flow: the browser comes back to `http://localhost:<port>`.
async fn loopback(
    settings: &Settings,
    oauth: &OAuthClient,
    transport: &ReqwestTransport,
    args: &LoginArgs,
    timeout: Duration,
) -> Result<Token, Failure> {
    if args.port == 0 {
        return Err(Failure::usage(
            "--port must be the port of a registered redirect URI, not 0",
        ));
    }
    let redirect_uri = format!("http://localhost:{}", args.port);
    let mut listener = Loopback::bind(args.port).await?;
    let attempt = oauth.authorization_request(redirect_uri.as_str());
    show_url(
        &attempt,
        args.no_browser,
        "Sign in there; this waits for Procore's redirect to",
    );
    eprintln!("  {redirect_uri}\n");
    let spinner = Spinner::start("Waiting for the browser… (Ctrl-C to cancel)");
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let result = loop {
        let callback = tokio::select! {
            () = &mut deadline => break Err(timed_out(timeout)),
            callback = listener.next() => callback,
        };
        let Some(callback) = callback else {
            break Err(Failure::failed("the redirect listener stopped"));
        };
        match attempt.verify_redirect(callback.query()) {
            Err(Error::Callback(CallbackError::StateMismatch)) => {
                // Not this login's redirect (a stale tab, or a page trying to log us in
                // to its own account): refused, and still waiting for ours.
                callback.reply(Page::wrong_state());
                spinner.println("Ignored a redirect whose state does not match this login.");
            }
            Err(error) => {
                let failure = Failure::from_core("the sign-in was not completed", &error);
                callback.reply(Page::failed(&chain(&error)));
                break Err(failure);
            }
            Ok(code) => {
                spinner.set_message("Exchanging the code for a token…");
                let result = complete(settings, oauth, transport, &code, &redirect_uri).await;
                callback.reply(match &result {
                    Ok(_) => Page::signed_in(),
                    Err(failure) => Page::failed(&failure.to_string()),
                });
                break result;
            }
        }
    };
    spinner.finish();
    listener.shutdown().await;
    result
}

/// The out-of-band flow: Procore shows the code, the user pastes it on stdin.
async fn out_of_band(
    settings: &Settings,
    oauth: &OAuthClient,
    transport: &ReqwestTransport,
    args: &LoginArgs,
    timeout: Duration,
) -> Result<Token, Failure> {
    let attempt = oauth.authorization_request(OUT_OF_BAND_REDIRECT_URI);
    show_url(
        &attempt,
        args.no_browser,
        "Approve the app there, then paste the code Procore shows.",
    );
    eprint!("Code: ");
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    });
    let line = match tokio::time::timeout(timeout, line).await {
        Err(_) => return Err(timed_out(timeout)),
        Ok(Err(error)) => return Err(Failure::failed(format!("reading the code failed: {error}"))),
        Ok(Ok(Err(error))) => {
            return Err(Failure::failed(format!("reading the code failed: {error}")))
        }
        Ok(Ok(Ok(line))) => line,
    };
    let code = line.trim();
    if code.is_empty() {
        return Err(Failure::failed("no code was entered"));
    }
    complete(
        settings,
        oauth,
        transport,
        &AuthorizationCode::new(code),
        OUT_OF_BAND_REDIRECT_URI,
    )
    .await
}

/// Exchanges the code and saves the token (under the token file's lock).
async fn complete(
    settings: &Settings,
    oauth: &OAuthClient,
    transport: &ReqwestTransport,
    code: &AuthorizationCode,
    redirect_uri: &str,
) -> Result<Token, Failure> {
    let token = oauth
        .exchange_code(transport, code, redirect_uri)
        .await
        .map_err(|error| Failure::from_core("exchanging the authorization code failed", &error))?;
    let _lock = settings.lock()?;
    settings.store().save(&token, None).await.map_err(|error| {
        Failure::failed(format!(
            "cannot save the token to {}: {}",
            settings.token_file().display(),
            chain(&error)
        ))
    })?;
    // The old token's budget says nothing about this one.
    budget::remove(settings.token_file());
    Ok(token)
}

/// Opens the authorization URL in the browser (unless told not to), and prints it.
fn show_url(attempt: &AuthorizationRequest, no_browser: bool, then: &str) {
    let opened = if no_browser {
        Ok(())
    } else {
        webbrowser::open(attempt.url()).map_err(|error| error.to_string())
    };
    match opened {
        Ok(()) if !no_browser => eprintln!("Opened your browser at:"),
        Ok(()) => eprintln!("Open this URL in your browser:"),
        Err(why) => eprintln!("Could not open a browser ({why}). Open this URL in one:"),
    }
    eprintln!("\n  {}\n\n{then}", attempt.url());
}

fn timed_out(timeout: Duration) -> Failure {
    Failure::failed(format!(
        "no answer within {} (see --timeout)",
        time::duration(timeout)
    ))
}
