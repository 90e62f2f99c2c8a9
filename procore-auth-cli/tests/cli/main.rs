//! End to end: the built `procore-auth` binary against the emulator, over real
//! loopback HTTP. The tests play the browser: they read the authorization URL the CLI
//! prints, ask the emulator for it (which approves at once with a 302), and follow the
//! redirect to the CLI's loopback listener.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use procore_auth_testkit::{Emulator, TokenFault};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

/// The exit statuses the CLI documents.
const EXIT_FAILED: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_SIGN_IN_AGAIN: i32 = 3;
const EXIT_TRANSIENT: i32 = 4;

/// No CLI run in these tests should come near this.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// An emulator, a temporary token file and a free loopback port registered as the
/// redirect URI `http://localhost:<port>`.
struct Harness {
    emulator: Emulator,
    directory: tempfile::TempDir,
    port: u16,
}

/// What a CLI run printed, and how it exited.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Harness {
    async fn start() -> Self {
        let port = free_port();
        let emulator = Emulator::builder()
            .redirect_uri(format!("http://localhost:{port}"))
            .start()
            .await;
        Self {
            emulator,
            directory: tempfile::tempdir().unwrap(),
            port,
        }
    }

    fn token_file(&self) -> PathBuf {
        self.directory.path().join("token.json")
    }

    /// The CLI with nothing from this process's environment but what points it at
    /// the emulator and the temporary token file.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_procore-auth"));
        command
            .args(args)
            .env_clear()
            .env("HOME", self.directory.path())
            .env("XDG_CONFIG_HOME", self.directory.path().join("config"))
            .env("PROCORE_ENVIRONMENT", self.emulator.base_url())
            .env("PROCORE_CLIENT_ID", self.emulator.client_id())
            .env("PROCORE_CLIENT_SECRET", self.emulator.client_secret())
            .env("PROCORE_AUTH_TOKEN_FILE", self.token_file())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> Run {
        finish(self.command(args).spawn().unwrap(), String::new()).await
    }

    /// Starts `login --no-browser --port <port>` and reads its stderr up to the
    /// authorization URL.
    async fn start_login(&self, extra: &[&str]) -> Login {
        let port = self.port.to_string();
        let mut args = vec!["login", "--no-browser", "--port", &port];
        args.extend_from_slice(extra);
        let mut command = self.command(&args);
        command.stdin(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let url = loop {
            let mut line = String::new();
            let read = tokio::time::timeout(PROCESS_TIMEOUT, stderr.read_line(&mut line))
                .await
                .expect("no authorization URL in time")
                .unwrap();
            assert!(read > 0, "login printed no authorization URL:\n{seen}");
            seen.push_str(&line);
            if line.contains("/oauth/authorize?") {
                break line.trim().to_owned();
            }
        };
        Login {
            child,
            stderr,
            seen,
            url,
        }
    }

    /// A whole `login` through the loopback listener, the test being the browser.
    async fn login(&self) -> Run {
        let login = self.start_login(&[]).await;
        let (status, page) = login.follow().await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("Signed in"), "{page}");
        login.finish().await
    }

    fn stored(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.token_file()).unwrap()).unwrap()
    }

    fn stored_secret(&self, field: &str) -> String {
        self.stored()[field].as_str().unwrap().to_owned()
    }

    /// Rewrites the token file so that its access token looks expired to the CLI (the
    /// emulator still takes its refresh token).
    fn expire_stored_token(&self) {
        let mut token = self.stored();
        let issued_at = token["issued_at"].as_u64().unwrap();
        token["issued_at"] = (issued_at - 7200).into();
        token["expires_at"] = (issued_at - 3600).into();
        std::fs::write(self.token_file(), serde_json::to_vec(&token).unwrap()).unwrap();
    }
}

/// A `login` waiting for the browser.
struct Login {
    child: Child,
    stderr: BufReader<ChildStderr>,
    seen: String,
    url: String,
}

impl Login {
    /// What a browser does: GET the authorization URL (the emulator approves at once)
    /// and follow its redirect to the loopback listener.
    async fn follow(&self) -> (u16, String) {
        let location = authorize(&self.url).await;
        assert!(
            location.starts_with("http://localhost:"),
            "unexpected redirect {location}"
        );
        get(&location).await
    }

    /// The `state` this login sent.
    fn state(&self) -> String {
        query_param(&self.url, "state")
    }

    async fn finish(self) -> Run {
        let Login {
            child,
            mut stderr,
            seen,
            ..
        } = self;
        let mut rest = String::new();
        tokio::time::timeout(PROCESS_TIMEOUT, stderr.read_to_string(&mut rest))
            .await
            .expect("login did not finish")
            .unwrap();
        finish(child, seen + &rest).await
    }
}

async fn finish(mut child: Child, stderr_so_far: String) -> Run {
    let mut stdout = String::new();
    let mut stderr = stderr_so_far;
    let mut out = child.stdout.take().unwrap();
    let err = child.stderr.take();
    let read = async {
        out.read_to_string(&mut stdout).await.unwrap();
        if let Some(mut err) = err {
            err.read_to_string(&mut stderr).await.unwrap();
        }
    };
    tokio::time::timeout(PROCESS_TIMEOUT, read)
        .await
        .expect("the CLI did not finish");
    let status = tokio::time::timeout(PROCESS_TIMEOUT, child.wait())
        .await
        .expect("the CLI did not exit")
        .unwrap();
    Run {
        code: status.code().expect("killed by a signal"),
        stdout,
        stderr,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// GETs the authorization URL from the emulator and returns where it redirects.
async fn authorize(url: &str) -> String {
    let response = no_redirects().get(url).send().await.unwrap();
    assert_eq!(response.status(), 302, "{}", response.text().await.unwrap());
    response.headers()["location"].to_str().unwrap().to_owned()
}

async fn get(url: &str) -> (u16, String) {
    let response = no_redirects().get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn query_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .to_owned()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Asserts that none of `secrets` appears in what a run printed (stdout excepted for
/// `token`, whose job it is).
fn assert_no_secret(run: &Run, secrets: &[String], stdout_too: bool) {
    for secret in secrets {
        assert!(
            !run.stderr.contains(secret.as_str()),
            "a secret on stderr:\n{run:?}"
        );
        if stdout_too {
            assert!(
                !run.stdout.contains(secret.as_str()),
                "a secret on stdout:\n{run:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_token_whoami_status_logout() {
    let harness = Harness::start().await;
    let emulator = &harness.emulator;

    let login = harness.login().await;
    assert_eq!(login.code, 0, "{login:?}");
    assert!(login.stderr.contains("Signed in to"), "{login:?}");
    assert!(login.stdout.is_empty(), "{login:?}");
    assert_eq!(emulator.stats().authorization_code_grants, 1);
    #[cfg(unix)]
    assert_eq!(mode(&harness.token_file()), 0o600);
    let access = harness.stored_secret("access_token");
    let refresh = harness.stored_secret("refresh_token");
    let secrets = [
        access.clone(),
        refresh.clone(),
        emulator.client_secret().to_owned(),
    ];
    assert_no_secret(&login, &secrets, true);

    // `token` twice: the token, a newline, nothing else; no token call either time.
    for _ in 0..2 {
        let token = harness.run(&["token"]).await;
        assert_eq!(token.code, 0, "{token:?}");
        assert_eq!(token.stdout, format!("{access}\n"));
        assert!(token.stderr.is_empty(), "{token:?}");
        assert_eq!(emulator.stats().token_calls, 1, "only the code exchange");
    }
    let me = reqwest::Client::new()
        .get(format!("{}/rest/v1.0/me", emulator.base_url()))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);

    let whoami = harness.run(&["whoami"]).await;
    assert_eq!(whoami.code, 0, "{whoami:?}");
    let user = emulator.default_user();
    for expected in [
        "user id:".to_owned(),
        user.get().to_string(),
        emulator.user_login(user),
        emulator.user_name(user),
        "token expires:".to_owned(),
        "refresh token: present".to_owned(),
        format!("application {}", emulator.client_id()),
        "requests left".to_owned(),
    ] {
        assert!(
            whoami.stdout.contains(&expected),
            "{expected:?} in\n{}",
            whoami.stdout
        );
    }
    assert_no_secret(&whoami, &secrets, true);
    assert_eq!(emulator.stats().token_calls, 1);

    let status = harness.run(&["status"]).await;
    assert_eq!(status.code, 0, "{status:?}");
    for expected in [
        "token expires:",
        "(in 1h ",
        "refresh token: present",
        "requests left as of",
    ] {
        assert!(
            status.stdout.contains(expected),
            "{expected:?} in\n{}",
            status.stdout
        );
    }
    assert_no_secret(&status, &secrets, true);

    let logout = harness.run(&["logout"]).await;
    assert_eq!(logout.code, 0, "{logout:?}");
    assert!(logout.stderr.contains("Signed out"), "{logout:?}");
    assert_no_secret(&logout, &secrets, true);
    assert!(emulator.stats().revocations >= 1);
    assert!(!harness.token_file().exists());
    assert!(!harness
        .directory
        .path()
        .join("token.rate-limit.json")
        .exists());
    let revoked = reqwest::Client::new()
        .get(format!("{}/rest/v1.0/me", emulator.base_url()))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 401, "revoked at the server");

    let token = harness.run(&["token"]).await;
    assert_eq!(token.code, EXIT_SIGN_IN_AGAIN, "{token:?}");
    assert!(token.stdout.is_empty());
    assert!(token.stderr.contains("procore-auth login"), "{token:?}");
    let status = harness.run(&["status"]).await;
    assert_eq!(status.code, EXIT_SIGN_IN_AGAIN, "{status:?}");
    let logout = harness.run(&["logout"]).await;
    assert_eq!(logout.code, 0, "logging out twice is fine: {logout:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_refreshes_an_expired_token_once_and_saves_it_before_printing() {
    let harness = Harness::start().await;
    assert_eq!(harness.login().await.code, 0);
    let old_refresh = harness.stored_secret("refresh_token");
    harness.expire_stored_token();

    let token = harness.run(&["token"]).await;
    assert_eq!(token.code, 0, "{token:?}");
    let stats = harness.emulator.stats();
    assert_eq!(stats.refresh_token_grants, 1);
    assert_eq!(stats.consumed_refresh_tokens, vec![old_refresh.clone()]);
    // Saved: the file holds the rotated pair, and the access token printed is its.
    let new_refresh = harness.stored_secret("refresh_token");
    assert_ne!(new_refresh, old_refresh);
    assert_eq!(
        token.stdout,
        format!("{}\n", harness.stored_secret("access_token"))
    );
    #[cfg(unix)]
    assert_eq!(mode(&harness.token_file()), 0o600);
    assert_no_secret(&token, &[old_refresh, new_refresh], false);

    let again = harness.run(&["token"]).await;
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.stdout, token.stdout);
    assert_eq!(
        harness.emulator.stats().token_calls,
        stats.token_calls,
        "no token call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_token_calls_refresh_once() {
    let harness = Harness::start().await;
    assert_eq!(harness.login().await.code, 0);
    harness.expire_stored_token();

    // Six processes at once, all finding the token expired.
    let children: Vec<Child> = (0..6)
        .map(|_| harness.command(&["token"]).spawn().unwrap())
        .collect();
    let mut runs = Vec::new();
    for child in children {
        runs.push(finish(child, String::new()).await);
    }
    let first = &runs[0].stdout;
    for run in &runs {
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(&run.stdout, first, "every process prints the one new token");
    }
    assert_eq!(
        harness.emulator.stats().refresh_token_grants,
        1,
        "the token file's lock makes the refresh single-flight across processes"
    );
    assert_eq!(
        *first,
        format!("{}\n", harness.stored_secret("access_token"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_scripts_can_act_on() {
    let harness = Harness::start().await;
    let emulator = &harness.emulator;

    // Never signed in.
    for command in ["token", "whoami"] {
        let run = harness.run(&[command]).await;
        assert_eq!(run.code, EXIT_SIGN_IN_AGAIN, "{command}: {run:?}");
        assert!(run.stderr.contains("not signed in"), "{run:?}");
    }
    // Usage and configuration errors.
    let run = harness.run(&["frobnicate"]).await;
    assert_eq!(run.code, EXIT_USAGE, "{run:?}");
    let mut no_secret = harness.command(&["token"]);
    no_secret.env_remove("PROCORE_CLIENT_SECRET");
    assert_eq!(harness.login().await.code, 0);
    let run = finish(no_secret.spawn().unwrap(), String::new()).await;
    assert_eq!(run.code, EXIT_USAGE, "{run:?}");
    assert!(run.stderr.contains("PROCORE_CLIENT_SECRET"), "{run:?}");
    let run = harness.run(&["--env", "staging", "token"]).await;
    assert_eq!(run.code, EXIT_USAGE, "{run:?}");

    // A temporary failure of the token endpoint: 4, and the token is kept.
    harness.expire_stored_token();
    emulator.push_token_fault(TokenFault::Status(503));
    let run = harness.run(&["token"]).await;
    assert_eq!(run.code, EXIT_TRANSIENT, "{run:?}");
    assert!(run.stdout.is_empty());
    let run = harness.run(&["token"]).await;
    assert_eq!(run.code, 0, "the next try works: {run:?}");

    // The refresh token refused: sign in again.
    harness.expire_stored_token();
    emulator.push_token_fault(TokenFault::InvalidGrant);
    let run = harness.run(&["token"]).await;
    assert_eq!(run.code, EXIT_SIGN_IN_AGAIN, "{run:?}");
    assert!(run.stderr.contains("reauthorization required"), "{run:?}");

    // Revoked behind the CLI's back: whoami's 401, a refresh refused, sign in again.
    assert_eq!(harness.login().await.code, 0);
    emulator.revoke_all_tokens();
    let run = harness.run(&["whoami"]).await;
    assert_eq!(run.code, EXIT_SIGN_IN_AGAIN, "{run:?}");

    // A corrupt token file: sign in again.
    std::fs::write(harness.token_file(), b"{not json").unwrap();
    let run = harness.run(&["token"]).await;
    assert_eq!(run.code, EXIT_SIGN_IN_AGAIN, "{run:?}");
    assert!(!run.stderr.contains("not json"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_with_the_wrong_state_is_refused() {
    let harness = Harness::start().await;
    let login = harness.start_login(&[]).await;

    // A forged redirect (another tab, another site): refused, never exchanged.
    let (status, page) = get(&format!(
        "http://127.0.0.1:{}/?code=forged&state=forged",
        harness.port
    ))
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("does not match"), "{page}");
    // Still waiting for the real one.
    let (status, page) = login.follow().await;
    assert_eq!(status, 200, "{page}");
    let run = login.finish().await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("Ignored a redirect"), "{run:?}");
    assert_eq!(harness.emulator.stats().authorization_code_grants, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_authorization_fails_the_login() {
    let harness = Harness::start().await;
    let login = harness.start_login(&[]).await;
    let (status, page) = get(&format!(
        "http://localhost:{}/?error=access_denied&error_description=nope&state={}",
        harness.port,
        login.state()
    ))
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("access_denied"), "{page}");
    let run = login.finish().await;
    assert_eq!(run.code, EXIT_FAILED, "{run:?}");
    assert!(run.stderr.contains("access_denied"), "{run:?}");
    assert!(!harness.token_file().exists());
    assert_eq!(harness.emulator.stats().token_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oob_login_reads_the_code_from_stdin() {
    let harness = Harness::start().await;
    let mut login = harness.start_login(&["--oob"]).await;
    assert!(
        login
            .url
            .contains("redirect_uri=urn%3Aietf%3Awg%3Aoauth%3A2.0%3Aoob"),
        "{}",
        login.url
    );
    // Procore shows the code on a page; the person copies it into the terminal.
    let (status, page) = get(&login.url).await;
    assert_eq!(status, 200, "{page}");
    let code = page
        .split("<code id=\"authorization_code\">")
        .nth(1)
        .and_then(|rest| rest.split("</code>").next())
        .unwrap()
        .to_owned();
    let mut stdin = login.child.stdin.take().unwrap();
    stdin
        .write_all(format!("{code}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let run = login.finish().await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        !run.stderr.contains(&code),
        "the code is not echoed: {run:?}"
    );
    assert_eq!(harness.emulator.stats().authorization_code_grants, 1);
    let token = harness.run(&["token"]).await;
    assert_eq!(
        token.stdout,
        format!("{}\n", harness.stored_secret("access_token"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_gives_up_after_its_timeout() {
    let harness = Harness::start().await;
    let run = {
        let login = harness.start_login(&["--timeout", "1"]).await;
        login.finish().await
    };
    assert_eq!(run.code, EXIT_FAILED, "{run:?}");
    assert!(run.stderr.contains("no answer within 1s"), "{run:?}");
    // The port is free again.
    std::net::TcpListener::bind(("127.0.0.1", harness.port)).unwrap();
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_token_file_is_per_environment_in_the_config_directory() {
    let harness = Harness::start().await;
    let mut status = harness.command(&["status"]);
    status.env_remove("PROCORE_AUTH_TOKEN_FILE");
    let run = finish(status.spawn().unwrap(), String::new()).await;
    assert_eq!(run.code, EXIT_SIGN_IN_AGAIN, "{run:?}");
    let port = harness
        .emulator
        .base_url()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let expected = harness
        .directory
        .path()
        .join(format!("config/procore-auth/127.0.0.1_{port}.json"));
    assert!(
        run.stdout.contains(&expected.display().to_string()),
        "{expected:?} in {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_procore_is_a_temporary_failure_and_logout_keeps_the_token() {
    let harness = Harness::start().await;
    assert_eq!(harness.login().await.code, 0);
    let before = std::fs::read(harness.token_file()).unwrap();
    let nobody = format!("http://127.0.0.1:{}", free_port());
    for command in ["whoami", "logout"] {
        let mut unreachable = harness.command(&[command]);
        unreachable.env("PROCORE_ENVIRONMENT", &nobody);
        let run = finish(unreachable.spawn().unwrap(), String::new()).await;
        assert_eq!(run.code, EXIT_TRANSIENT, "{command}: {run:?}");
    }
    assert_eq!(
        std::fs::read(harness.token_file()).unwrap(),
        before,
        "kept as it was"
    );
    let logout = harness.run(&["logout"]).await;
    assert_eq!(logout.code, 0, "{logout:?}");
}
