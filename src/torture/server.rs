//! `--spawn`: `ordo serve` (this same executable) as a child process on 127.0.0.1 with
//! an ephemeral port and its own data directory, killed with SIGKILL and started again on
//! the same directory, and stopped with SIGTERM at the end.
//!
//! The child logs JSON lines to stderr; a thread per start reads them, hands over the
//! address from the `ready` line (logged once recovery is done) and keeps draining the
//! pipe so the server never blocks on a full one. Every call here blocks (process start,
//! waits): the driver runs them on tokio's blocking pool.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a start (recovery included) may take before it counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A spawned `ordo serve`.
pub struct Spawned {
    exe: PathBuf,
    data_dir: PathBuf,
    reservation_ttl: Duration,
    echo: bool,
    child: Option<Child>,
    /// `http://127.0.0.1:port` of the running child.
    pub base: String,
    /// Starts so far.
    pub starts: u64,
}

impl Spawned {
    /// Starts the server and waits until it is ready.
    pub fn start(
        exe: &Path,
        data_dir: &Path,
        reservation_ttl: Duration,
        echo: bool,
    ) -> anyhow::Result<Spawned> {
        let mut s = Spawned {
            exe: exe.to_owned(),
            data_dir: data_dir.to_owned(),
            reservation_ttl,
            echo,
            child: None,
            base: String::new(),
            starts: 0,
        };
        s.launch()?;
        Ok(s)
    }

    /// Starts `ordo serve` and waits until it is ready: sets `base` and `child`.
    fn launch(&mut self) -> anyhow::Result<()> {
        let mut child = self
            .serve_command()
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.exe.display()))?;
        self.starts += 1;
        let Some(stderr) = child.stderr.take() else {
            abandon(&mut child);
            anyhow::bail!("the server's stderr was not captured");
        };
        let ready = read_log(stderr, self.echo, self.starts)?;
        let addr = wait_ready(&mut child, &ready)?;
        self.base = format!("http://{addr}");
        self.child = Some(child);
        Ok(())
    }

    /// `ordo serve` on 127.0.0.1, port 0, JSON logs on a piped stderr, sync durability.
    fn serve_command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--durability", "sync"])
            .arg("--reservation-ttl")
            .arg(format!("{}s", self.reservation_ttl.as_secs().max(1)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // A clean configuration: no tokens, no config file, nothing from the caller's
        // environment that would change what the server allows.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ORDO_") {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    /// SIGKILL (`Child::kill` on Unix), and wait until the process is gone.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGKILL, then start again on the same data directory and wait until ready.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.launch()
    }

    /// SIGTERM, and the exit status; after `timeout` SIGKILL and `None`.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let Some(mut c) = self.child.take() else {
            return Ok(None);
        };
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        if !sent.is_ok_and(|s| s.success()) {
            c.kill()?;
            c.wait()?;
            anyhow::bail!("cannot send SIGTERM to the server (`kill -TERM` failed)");
        }
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Some(status) = c.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.kill()?;
        c.wait()?;
        Ok(None)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Reads start `n`'s log on a thread of its own until the pipe closes (echoing it with
/// `echo`); the returned channel gets the address from the first `ready` line.
fn read_log(stderr: ChildStderr, echo: bool, n: u64) -> anyhow::Result<mpsc::Receiver<String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("torture-serverlog-{n}"))
        .spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[server {n}] {line}");
                }
                if tx.is_some() {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if v["message"] == "ready" {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(v["addr"].as_str().unwrap_or("").to_owned());
                            }
                        }
                    }
                }
            }
        })?;
    Ok(rx)
}

/// The loopback address the child reported ready on; on any failure the child is
/// killed and reaped.
fn wait_ready(child: &mut Child, ready: &mpsc::Receiver<String>) -> anyhow::Result<SocketAddr> {
    let addr = match ready.recv_timeout(READY_TIMEOUT) {
        Ok(a) => a,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait().ok();
            anyhow::bail!(
                "the server did not become ready ({}; exit status {status:?})",
                match e {
                    mpsc::RecvTimeoutError::Timeout => "timed out",
                    mpsc::RecvTimeoutError::Disconnected => "it exited first",
                }
            );
        }
    };
    let parsed: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => {
            abandon(child);
            anyhow::bail!("the server reported an unreadable address {addr:?}");
        }
    };
    if !parsed.ip().is_loopback() {
        abandon(child);
        anyhow::bail!("the server bound {parsed}, not a loopback address");
    }
    Ok(parsed)
}

/// SIGKILL and reap a child that failed to start, ignoring errors.
fn abandon(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
