//! The embedded NATS server: `modelbus up` without `NATS_URL` starts a pinned
//! `nats-server` (≥ 2.10) on a free loopback port with its store under the state
//! dir, and restarts it if it dies. The test harness uses the same code.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::bus::{MIN_SERVER_VERSION, parse_version};

/// Why the embedded server could not run.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// No usable binary was found.
    #[error(
        "no nats-server ≥ {major}.{minor} found ({0}); run scripts/bootstrap.sh (installs \
         .tools/bin/nats-server) or set nats.server_binary",
        major = MIN_SERVER_VERSION.0, minor = MIN_SERVER_VERSION.1
    )]
    NotFound(String),
    /// The binary is too old.
    #[error(
        "{path} is nats-server {version}; modelbus needs {}.{} or newer (Debian's 2.9 cannot create KV \
         buckets). Run scripts/bootstrap.sh or set nats.server_binary",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
    )]
    TooOld {
        /// The binary.
        path: String,
        /// Its version.
        version: String,
    },
    /// The server did not come up.
    #[error("nats-server did not start: {0}")]
    Start(String),
}

/// Version of a nats-server binary (`nats-server --version` prints `nats-server: v2.15.1`).
pub fn binary_version(path: &Path) -> Option<String> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.split_whitespace()
        .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
        .map(|w| w.trim_start_matches('v').to_string())
}

/// Finds a nats-server ≥ 2.10: the configured path, else `.tools/bin/nats-server`
/// in the current directory or above the running executable, else the PATH.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, NatsServerError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = configured {
        candidates.push(p.to_path_buf());
    } else {
        if let Ok(cwd) = std::env::current_dir() {
            for dir in cwd.ancestors() {
                candidates.push(dir.join(".tools/bin/nats-server"));
            }
        }
        if let Ok(exe) = std::env::current_exe() {
            for dir in exe.ancestors().skip(1) {
                candidates.push(dir.join(".tools/bin/nats-server"));
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                candidates.push(dir.join("nats-server"));
            }
        }
    }
    let mut too_old = None;
    for c in &candidates {
        if !c.is_file() {
            continue;
        }
        match binary_version(c) {
            Some(v) if parse_version(&v).is_some_and(|x| x >= MIN_SERVER_VERSION) => {
                return Ok(c.clone());
            }
            Some(v) => {
                too_old.get_or_insert((c.display().to_string(), v));
            }
            None => {}
        }
    }
    match too_old {
        Some((path, version)) => Err(NatsServerError::TooOld { path, version }),
        None => Err(NatsServerError::NotFound(match configured {
            Some(p) => format!("{} does not exist or does not run", p.display()),
            None => "looked in .tools/bin and on the PATH".into(),
        })),
    }
}

/// Stops a nats-server left running on this store by a process that was killed
/// (SIGKILL skips our clean-up): two servers must never share a store.
async fn reap_orphan(store_dir: &Path) {
    let pid_file = store_dir.join("nats-server.pid");
    let Ok(pid) = std::fs::read_to_string(&pid_file) else {
        return;
    };
    let pid = pid.trim();
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        let _ = std::fs::remove_file(&pid_file);
        return;
    };
    let cmdline = String::from_utf8_lossy(&cmdline);
    let ours = cmdline.contains("nats-server") && cmdline.contains(&*store_dir.to_string_lossy());
    if ours {
        tracing::warn!(pid, "stopping an orphaned nats-server on this state dir");
        let _ = Command::new("kill").arg(pid).status().await;
        for _ in 0..100 {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = std::fs::remove_file(&pid_file);
}

/// Writes a file only its owner can read, durably.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::fsutil::write_private_file(path, bytes, crate::fsutil::Existing::Replace)
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// The shipped per-service permissions (`deploy/nats/permissions.conf`), which
/// the embedded server enforces too.
pub const PERMISSIONS_CONF: &str = include_str!("../../../deploy/nats/permissions.conf");

/// Every NATS user [`PERMISSIONS_CONF`] defines, one per service.
pub const SERVICE_USERS: [&str; 7] = [
    "registry", "ingest", "features", "trainer", "deployer", "serving", "monitor",
];

/// The embedded server's local administrator: full access, for the person who
/// owns the state dir (inspecting streams, debugging). Its password is in
/// [`LOCAL_ADMIN_PASSWORD_FILE`] under the server's store, readable by that
/// owner only, as the admin token and the automation key beside it are. No
/// service logs in as it.
pub const LOCAL_ADMIN: &str = "localadmin";

/// File (under the embedded server's store) holding [`LOCAL_ADMIN`]'s password.
pub const LOCAL_ADMIN_PASSWORD_FILE: &str = "localadmin.password";

/// The environment variable that holds `user`'s password for the server.
pub fn password_variable(user: &str) -> String {
    format!("MODELBUS_NATS_{}_PASSWORD", user.to_ascii_uppercase())
}

/// A running embedded nats-server.
pub struct EmbeddedNats {
    url: String,
    port: u16,
    binary: PathBuf,
    store_dir: PathBuf,
    child: Child,
    /// With per-service users: each user's password (fresh at every start of
    /// the platform, handed to the server in its environment, never written).
    passwords: Option<Vec<(String, String)>>,
}

impl EmbeddedNats {
    /// Starts a server with JetStream on a free loopback port, open to any
    /// client (the test harness's servers).
    pub async fn start(binary: &Path, store_dir: &Path) -> Result<Self, NatsServerError> {
        let port = free_port().map_err(|e| NatsServerError::Start(e.to_string()))?;
        Self::start_on(binary, store_dir, port).await
    }

    /// Starts a server on a given port (a restart keeps its port so clients reconnect).
    pub async fn start_on(
        binary: &Path,
        store_dir: &Path,
        port: u16,
    ) -> Result<Self, NatsServerError> {
        Self::spawn(binary, store_dir, port, None).await
    }

    /// Starts a server on a free loopback port that admits only the users of
    /// [`PERMISSIONS_CONF`], each with a fresh random password and the same
    /// permissions as in a deployment: another local user cannot connect, and
    /// no service can write what only another may. [`EmbeddedNats::credentials`]
    /// gives each service its login.
    pub async fn start_secured(binary: &Path, store_dir: &Path) -> Result<Self, NatsServerError> {
        let port = free_port().map_err(|e| NatsServerError::Start(e.to_string()))?;
        let passwords = SERVICE_USERS
            .iter()
            .chain(std::iter::once(&LOCAL_ADMIN))
            .map(|u| (u.to_string(), format!("p{}", crate::signing::new_nonce())))
            .collect();
        Self::spawn(binary, store_dir, port, Some(passwords)).await
    }

    /// The login of `user` on a server from [`EmbeddedNats::start_secured`].
    pub fn credentials(&self, user: &str) -> Option<crate::config::NatsCredentials> {
        let (_, password) = self.passwords.as_ref()?.iter().find(|(u, _)| u == user)?;
        Some(crate::config::NatsCredentials::new(
            user,
            Some(crate::config::Secret::new(password)),
        ))
    }

    async fn spawn(
        binary: &Path,
        store_dir: &Path,
        port: u16,
        passwords: Option<Vec<(String, String)>>,
    ) -> Result<Self, NatsServerError> {
        let io = |e: std::io::Error| NatsServerError::Start(e.to_string());
        crate::fsutil::create_private_dir(store_dir).map_err(io)?;
        reap_orphan(store_dir).await;
        let log = store_dir.join("nats-server.log");
        let mut cmd = Command::new(binary);
        match &passwords {
            None => {
                cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                    .arg(store_dir);
            }
            Some(passwords) => {
                let conf = store_dir.join("nats.conf");
                let users = "users = [";
                if !PERMISSIONS_CONF.contains(users) {
                    return Err(NatsServerError::Start(
                        "permissions.conf has no `users = [` list".into(),
                    ));
                }
                let permissions = PERMISSIONS_CONF.replacen(
                    users,
                    &format!(
                        "{users}\n    {{ user: {LOCAL_ADMIN}, password: ${} }}\n",
                        password_variable(LOCAL_ADMIN)
                    ),
                    1,
                );
                write_private(&store_dir.join("permissions.conf"), permissions.as_bytes())
                    .map_err(io)?;
                if let Some((_, pw)) = passwords.iter().find(|(u, _)| u == LOCAL_ADMIN) {
                    write_private(&store_dir.join(LOCAL_ADMIN_PASSWORD_FILE), pw.as_bytes())
                        .map_err(io)?;
                }
                write_private(
                    &conf,
                    format!(
                        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\ninclude permissions.conf\n",
                        store_dir.display().to_string()
                    )
                    .as_bytes(),
                )
                .map_err(io)?;
                cmd.arg("-c").arg(&conf);
                for (user, password) in passwords {
                    cmd.env(password_variable(user), password);
                }
            }
        }
        let child = cmd
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| NatsServerError::Start(format!("{}: {e}", binary.display())))?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(store_dir.join("nats-server.pid"), pid.to_string());
        }
        let mut me = Self {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            binary: binary.to_path_buf(),
            store_dir: store_dir.to_path_buf(),
            child,
            passwords,
        };
        me.wait_ready(&log).await?;
        Ok(me)
    }

    async fn wait_ready(&mut self, log: &Path) -> Result<(), NatsServerError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: String = tail.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                return Err(NatsServerError::Start(format!(
                    "exited with {status}: {tail}"
                )));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(NatsServerError::Start("not listening after 15s".into()))
    }

    /// Client URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills the server (tests use this to check reconnection).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Keeps the server running until `shutdown`, restarting it on the same port
    /// if it exits.
    pub async fn supervise(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = self.child.kill().await;
                    return;
                }
                status = self.child.wait() => {
                    tracing::error!(?status, "embedded nats-server exited; restarting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match Self::spawn(&self.binary, &self.store_dir, self.port, self.passwords.clone()).await {
                        Ok(n) => self = n,
                        Err(e) => tracing::error!(error = %e, "cannot restart nats-server"),
                    }
                }
            }
        }
    }
}
