//! The only place legionc speaks SSH (crate ssh2): connect, check the host key against
//! known_hosts, authenticate by key file or ssh-agent, run commands, upload files atomically.
//!
//! Every operation has a deadline enforced from outside libssh2: a watchdog thread shuts the
//! TCP socket down when it passes, which makes any blocked libssh2 call fail at once.

use ssh2::{CheckResult, KnownHostFileKind, Session};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// What can go wrong with a board over SSH, each kind with its own message.
#[derive(Debug)]
pub enum SshError {
    Unreachable { board: String, addr: String, cause: String },
    UnknownHost { board: String, addr: String, known_hosts: PathBuf },
    HostKeyMismatch { board: String, addr: String, known_hosts: PathBuf },
    AuthFailed { board: String, user: String, how: String, cause: String },
    Timeout { board: String, what: String, after: Duration },
    /// A remote command exited non-zero or was killed.
    RemoteFailed { board: String, command: String, status: String, stderr: String },
    /// Ctrl-C (or the caller) stopped the command.
    Interrupted { board: String, what: String },
    Other { board: String, what: String, cause: String },
}

impl std::fmt::Display for SshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use SshError::*;
        match self {
            Unreachable { board, addr, cause } => write!(f, "board {board} ({addr}) is unreachable: {cause}"),
            UnknownHost { board, addr, known_hosts } => write!(
                f,
                "board {board} ({addr}): unknown host key (not in {}); check it and run again with --accept-new-host-keys to learn it",
                known_hosts.display()
            ),
            HostKeyMismatch { board, addr, known_hosts } => write!(
                f,
                "board {board} ({addr}): HOST KEY MISMATCH: the key differs from the one in {}; someone may be intercepting, or the board was reinstalled (then remove its line)",
                known_hosts.display()
            ),
            AuthFailed { board, user, how, cause } => write!(f, "board {board}: authentication of {user} failed ({how}): {cause}"),
            Timeout { board, what, after } => write!(f, "board {board}: {what} timed out after {:.1} s", after.as_secs_f64()),
            RemoteFailed { board, command, status, stderr } => {
                write!(f, "board {board}: `{command}` {status}")?;
                if !stderr.trim().is_empty() {
                    write!(f, ": {}", stderr.trim())?;
                }
                Ok(())
            }
            Interrupted { board, what } => write!(f, "board {board}: {what} interrupted"),
            Other { board, what, cause } => write!(f, "board {board}: {what}: {cause}"),
        }
    }
}

impl std::error::Error for SshError {}

pub type Result<T> = std::result::Result<T, SshError>;

/// How to reach one board.
#[derive(Clone, Debug)]
pub struct Target {
    pub board: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Private key; none: ssh-agent.
    pub key_file: Option<PathBuf>,
    pub known_hosts: PathBuf,
    /// Learn the key of a host that known_hosts does not have yet.
    pub accept_new_host_keys: bool,
    pub deadline: Duration,
}

impl Target {
    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
    /// The known_hosts name of the host (`[host]:port` off port 22).
    fn known_name(&self) -> String {
        if self.port == 22 { self.host.clone() } else { format!("[{}]:{}", self.host, self.port) }
    }
}

/// The default known_hosts file: `~/.ssh/known_hosts`.
pub fn default_known_hosts() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root")).join(".ssh/known_hosts")
}

/// An authenticated session with one board.
pub struct Connection {
    pub target: Target,
    session: Session,
    tcp: TcpStream,
}

/// Run `f` with a deadline: past it the socket is shut down, so `f` fails promptly.
fn with_deadline<T>(tcp: &TcpStream, deadline: Duration, f: impl FnOnce() -> T) -> (T, bool) {
    let sock = tcp.try_clone().ok();
    let fired = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let flag = fired.clone();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(deadline) == Err(mpsc::RecvTimeoutError::Timeout) {
            flag.store(true, Ordering::SeqCst);
            if let Some(s) = sock {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    });
    let r = f();
    let _ = done_tx.send(());
    let _ = watchdog.join();
    (r, fired.load(Ordering::SeqCst))
}

impl Connection {
    /// Connect, check the host key, authenticate; all within the target's deadline.
    pub fn open(t: &Target) -> Result<Connection> {
        let addr = t.addr();
        let unreachable = |cause: String| SshError::Unreachable { board: t.board.clone(), addr: addr.clone(), cause };
        let sock = addr
            .to_socket_addrs()
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("no address".into()))?;
        let tcp = TcpStream::connect_timeout(&sock, t.deadline).map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                SshError::Timeout { board: t.board.clone(), what: format!("connecting to {addr}"), after: t.deadline }
            }
            _ => unreachable(e.to_string()),
        })?;
        let (r, fired) = with_deadline(&tcp, t.deadline, || Connection::handshake(t, &tcp));
        match r {
            Ok(session) => Ok(Connection { target: t.clone(), session, tcp }),
            Err(_) if fired => Err(SshError::Timeout { board: t.board.clone(), what: format!("connecting to {addr}"), after: t.deadline }),
            Err(e) => Err(e),
        }
    }

    fn handshake(t: &Target, tcp: &TcpStream) -> Result<Session> {
        let other = |what: &str, e: ssh2::Error| SshError::Other { board: t.board.clone(), what: what.into(), cause: e.to_string() };
        let mut session = Session::new().map_err(|e| other("creating a session", e))?;
        session.set_tcp_stream(tcp.try_clone().map_err(|e| SshError::Other { board: t.board.clone(), what: "socket".into(), cause: e.to_string() })?);
        session.handshake().map_err(|e| SshError::Unreachable { board: t.board.clone(), addr: t.addr(), cause: format!("SSH handshake failed: {e}") })?;
        Connection::check_host_key(t, &session)?;
        let (how, r) = match &t.key_file {
            Some(k) => (format!("key file {}", k.display()), session.userauth_pubkey_file(&t.user, None, k, None)),
            None => ("ssh-agent".to_string(), session.userauth_agent(&t.user)),
        };
        if let Err(e) = r {
            return Err(SshError::AuthFailed { board: t.board.clone(), user: t.user.clone(), how, cause: e.to_string() });
        }
        if !session.authenticated() {
            return Err(SshError::AuthFailed { board: t.board.clone(), user: t.user.clone(), how, cause: "not accepted".into() });
        }
        Ok(session)
    }

    fn check_host_key(t: &Target, session: &Session) -> Result<()> {
        let other = |what: &str, cause: String| SshError::Other { board: t.board.clone(), what: what.into(), cause };
        let (key, kind) = session.host_key().ok_or_else(|| other("host key", "the server sent none".into()))?;
        let mut kh = session.known_hosts().map_err(|e| other("known_hosts", e.to_string()))?;
        if t.known_hosts.exists() {
            kh.read_file(&t.known_hosts, KnownHostFileKind::OpenSSH).map_err(|e| other(&format!("reading {}", t.known_hosts.display()), e.to_string()))?;
        }
        match kh.check_port(&t.host, t.port, key) {
            CheckResult::Match => Ok(()),
            CheckResult::Mismatch => Err(SshError::HostKeyMismatch { board: t.board.clone(), addr: t.addr(), known_hosts: t.known_hosts.clone() }),
            CheckResult::NotFound if t.accept_new_host_keys => {
                kh.add(&t.known_name(), key, &format!("legionc: board {}", t.board), kind.into()).map_err(|e| other("learning the host key", e.to_string()))?;
                if let Some(dir) = t.known_hosts.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                kh.write_file(&t.known_hosts, KnownHostFileKind::OpenSSH).map_err(|e| other(&format!("writing {}", t.known_hosts.display()), e.to_string()))
            }
            CheckResult::NotFound => Err(SshError::UnknownHost { board: t.board.clone(), addr: t.addr(), known_hosts: t.known_hosts.clone() }),
            CheckResult::Failure => Err(other("checking the host key", "libssh2 could not check it".into())),
        }
    }

    fn timeout(&self, what: &str) -> SshError {
        SshError::Timeout { board: self.target.board.clone(), what: what.into(), after: self.target.deadline }
    }

    /// Run a command; its stdout if it exits 0.
    pub fn exec(&self, command: &str) -> Result<String> {
        let t = &self.target;
        let (r, fired) = with_deadline(&self.tcp, t.deadline, || -> std::io::Result<(String, String, i32, Option<String>)> {
            let mut ch = self.session.channel_session()?;
            ch.exec(command)?;
            let mut out = String::new();
            let mut err = String::new();
            let _ = ch.read_to_string(&mut out);
            let _ = ch.stderr().read_to_string(&mut err);
            ch.wait_close()?;
            let sig = ch.exit_signal().ok().and_then(|s| s.exit_signal);
            Ok((out, err, ch.exit_status()?, sig))
        });
        match r {
            _ if fired => Err(self.timeout(&format!("`{command}`"))),
            Err(e) => Err(SshError::Other { board: t.board.clone(), what: format!("running `{command}`"), cause: e.to_string() }),
            Ok((_, stderr, _, Some(sig))) => {
                Err(SshError::RemoteFailed { board: t.board.clone(), command: command.into(), status: format!("was killed by SIG{sig}"), stderr })
            }
            Ok((out, _, 0, None)) => Ok(out),
            Ok((_, stderr, code, None)) => {
                Err(SshError::RemoteFailed { board: t.board.clone(), command: command.into(), status: format!("exited with status {code}"), stderr })
            }
        }
    }

    /// Run a command, handing every line of its stdout to `on_line` as it arrives. The
    /// deadline `idle` runs between two lines (a long job list is fine, a hung one is not);
    /// `stop` becoming true ends it at once with `Interrupted`. Errors of `on_line` end it too.
    pub fn exec_lines(&self, command: &str, idle: Duration, stop: &AtomicBool, on_line: &mut dyn FnMut(&str) -> std::result::Result<(), String>) -> Result<()> {
        let t = &self.target;
        let last = std::sync::Mutex::new(std::time::Instant::now());
        let fired = std::sync::Mutex::new(None::<bool>); // Some(true): interrupted, Some(false): idle
        let done = AtomicBool::new(false);
        let sock = self.tcp.try_clone().ok();
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::SeqCst) {
                    let why = if stop.load(Ordering::SeqCst) {
                        Some(true)
                    } else if last.lock().unwrap().elapsed() > idle {
                        Some(false)
                    } else {
                        None
                    };
                    if why.is_some() {
                        *fired.lock().unwrap() = why;
                        if let Some(s) = &sock {
                            let _ = s.shutdown(Shutdown::Both);
                        }
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            let r = (|| -> std::result::Result<(String, i32, Option<String>), String> {
                let mut ch = self.session.channel_session().map_err(|e| e.to_string())?;
                ch.exec(command).map_err(|e| e.to_string())?;
                let mut reader = std::io::BufReader::new(&mut ch);
                let mut line = String::new();
                loop {
                    line.clear();
                    let n = std::io::BufRead::read_line(&mut reader, &mut line).map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    *last.lock().unwrap() = std::time::Instant::now();
                    on_line(line.trim_end()).map_err(|e| format!("\u{0}{e}"))?;
                }
                drop(reader);
                let mut err = String::new();
                let _ = ch.stderr().read_to_string(&mut err);
                ch.wait_close().map_err(|e| e.to_string())?;
                let sig = ch.exit_signal().ok().and_then(|s| s.exit_signal);
                Ok((err, ch.exit_status().map_err(|e| e.to_string())?, sig))
            })();
            done.store(true, Ordering::SeqCst);
            r
        });
        let fired = *fired.lock().unwrap();
        match (fired, r) {
            (Some(true), _) => Err(SshError::Interrupted { board: t.board.clone(), what: format!("`{command}`") }),
            (Some(false), _) => Err(SshError::Timeout { board: t.board.clone(), what: format!("`{command}` (no output)"), after: idle }),
            (None, Err(e)) if e.starts_with('\u{0}') => Err(SshError::Other { board: t.board.clone(), what: format!("handling the output of `{command}`"), cause: e[1..].to_string() }),
            (None, Err(e)) => Err(SshError::Other { board: t.board.clone(), what: format!("running `{command}`"), cause: e }),
            (None, Ok((stderr, _, Some(sig)))) => {
                Err(SshError::RemoteFailed { board: t.board.clone(), command: command.into(), status: format!("was killed by SIG{sig}"), stderr })
            }
            (None, Ok((_, 0, None))) => Ok(()),
            (None, Ok((stderr, code, None))) => {
                Err(SshError::RemoteFailed { board: t.board.clone(), command: command.into(), status: format!("exited with status {code}"), stderr })
            }
        }
    }

    /// Upload `bytes` to `remote` atomically: SCP to a temporary name beside it, then rename.
    /// The temporary file is removed if anything fails.
    pub fn upload(&self, bytes: &[u8], remote: &str, mode: i32) -> Result<()> {
        let t = &self.target;
        let tmp = format!("{remote}.legionc-tmp-{}", std::process::id());
        let (r, fired) = with_deadline(&self.tcp, t.deadline, || -> std::io::Result<()> {
            let mut ch = self.session.scp_send(Path::new(&tmp), mode, bytes.len() as u64, None)?;
            ch.write_all(bytes)?;
            ch.send_eof()?;
            ch.wait_eof()?;
            ch.close()?;
            Ok(ch.wait_close()?)
        });
        let failed = match r {
            _ if fired => Some(self.timeout(&format!("uploading {remote}"))),
            Err(e) => Some(SshError::Other { board: t.board.clone(), what: format!("uploading {remote}"), cause: e.to_string() }),
            Ok(()) => None,
        };
        if let Some(e) = failed {
            // best effort, on a fresh connection if this one is gone
            if !fired {
                let _ = self.exec(&format!("rm -f {}", shell_quote(&tmp)));
            } else if let Ok(c) = Connection::open(t) {
                let _ = c.exec(&format!("rm -f {}", shell_quote(&tmp)));
            }
            return Err(e);
        }
        self.exec(&format!("mv -f {} {}", shell_quote(&tmp), shell_quote(remote))).map(|_| ())
    }
}

/// Quote for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = with_deadline(&self.tcp, Duration::from_secs(1), || self.session.disconnect(None, "bye", None));
    }
}
