//! [`RedisServer`]: a private `redis-server` process on a free loopback port.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

/// How long a starting server may take to answer `PING`…
const STARTUP_LIMIT: Duration = Duration::from_secs(10);
/// …asked this often.
const STARTUP_POLL: Duration = Duration::from_millis(20);

/// A `redis-server` from `PATH`, started for one test on a free port of 127.0.0.1,
/// with its data in a directory of its own, and killed when dropped: no shared
/// instance, no fixed port.
///
/// ```no_run
/// use procore_auth_testkit::RedisServer;
///
/// let mut redis = RedisServer::builder().append_only(true).start()?;
/// let url = redis.url(); // redis://127.0.0.1:<port>/
/// redis.kill(); // SIGKILL, as a crash
/// redis.restart()?; // same port, same data directory
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    directory: PathBuf,
    append_only: bool,
}

/// Configures a [`RedisServer`]. Made by [`RedisServer::builder`].
#[derive(Debug, Default)]
pub struct RedisServerBuilder {
    append_only: bool,
}

impl RedisServerBuilder {
    /// Persists every write to an append-only file, fsynced before each reply
    /// (`appendfsync always`), so a killed and restarted server has lost nothing.
    /// Off by default (and no snapshots either): a test server keeps nothing.
    pub fn append_only(mut self, append_only: bool) -> Self {
        self.append_only = append_only;
        self
    }

    /// Starts the server and waits until it answers.
    ///
    /// # Errors
    ///
    /// If `redis-server` is not on `PATH` (the error says how to install it), or it did
    /// not start answering within 10 s.
    pub fn start(self) -> io::Result<RedisServer> {
        let directory = std::env::temp_dir().join(format!(
            "procore-auth-redis-{}-{}",
            std::process::id(),
            unique_suffix()
        ));
        std::fs::create_dir_all(&directory)?;
        let mut server = RedisServer {
            child: None,
            port: free_port()?,
            directory,
            append_only: self.append_only,
        };
        server.launch()?;
        Ok(server)
    }
}

impl RedisServer {
    /// Starts a server without persistence.
    ///
    /// # Errors
    ///
    /// As [`RedisServerBuilder::start`].
    pub fn start() -> io::Result<Self> {
        Self::builder().start()
    }

    /// Starts configuring a server.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the same data directory.
    ///
    /// # Errors
    ///
    /// As [`RedisServerBuilder::start`].
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.launch()
    }

    fn launch(&mut self) -> io::Result<()> {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--protected-mode", "yes", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.directory)
            .args(["--maxmemory-policy", "noeviction"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.append_only {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        let child = command.spawn().map_err(|error| {
            if error.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "redis-server is not on PATH: install it (Debian/Ubuntu: \
                     `sudo apt-get install redis-server`; macOS: `brew install redis`)",
                )
            } else {
                error
            }
        })?;
        self.child = Some(child);
        self.wait_until_answering()
    }

    fn wait_until_answering(&mut self) -> io::Result<()> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        for _ in 0..STARTUP_LIMIT.as_millis() / STARTUP_POLL.as_millis() {
            if ping(address).is_ok() {
                return Ok(());
            }
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(io::Error::other(format!(
                        "redis-server exited at start ({status}); is port {} taken?",
                        self.port
                    )));
                }
            }
            thread::sleep(STARTUP_POLL);
        }
        self.kill();
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "redis-server did not answer PING within 10 s",
        ))
    }
}

/// Sends `PING`; Ok once the server answers `+PONG` (a loading server answers an
/// error instead).
fn ping(address: SocketAddr) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply)?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(io::Error::other("not ready"))
    }
}

/// A port that was free a moment ago (the server binds it next; a clash makes it
/// exit at start, which [`RedisServer::start`] reports).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn unique_suffix() -> String {
    let mut bytes = [0_u8; 8];
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("append_only", &self.append_only)
            .finish()
    }
}
