//! The proxies under test as child processes (pinot-proxy's release binary, nginx), each with a
//! generated config in a temporary directory, and what `/proc` says about their CPU and memory.

use anyhow::{bail, Context as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a child may take to accept connections.
const READY_DEADLINE: Duration = Duration::from_secs(15);

/// A free port on 127.0.0.1: bound to port 0, then released for the child to bind.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A running child process; dropping it stops it.
pub struct Child {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: std::process::Child,
    pub log: PathBuf,
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the child accepts TCP connections, retrying until a deadline.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} before listening; its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log)
                );
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on {} within {READY_DEADLINE:?}; log:\n{}",
                    self.name,
                    self.addr,
                    tail(&self.log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The child and, for nginx's master, its worker processes.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid()];
        pids.extend(children_of(self.pid()));
        pids
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master then stops its workers, which SIGKILL would orphan.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Starts the pinot-proxy binary with a config allowing 127.0.0.1 and waits for it to listen.
/// `logs` false runs it at `RUST_LOG=warn` instead of the default `info` (a line per call).
pub fn start_proxy(binary: &Path, dir: &Path, logs: bool) -> anyhow::Result<Child> {
    let port = free_port()?;
    let config = dir.join("pinot-proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_ms = 1000\n{}\n\
             [servers]\nallow = [\"127.0.0.1\"]\n{}",
            // Extra keys for [server] (drain_delay_ms = 0) and [servers] (partial_results =
            // "pass", to measure the check's cost), for the binary under test.
            std::env::var("BENCH_PROXY_SERVER_KEYS").unwrap_or_default(),
            std::env::var("BENCH_PROXY_SERVERS_KEYS").unwrap_or_default()
        ),
    )?;
    let log = dir.join("pinot-proxy.log");
    let out = std::fs::File::create(&log)?;
    let mut command = Command::new(binary);
    command
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    if !logs {
        command.env("RUST_LOG", "warn");
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut child = Child {
        name: "pinot-proxy",
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
        log,
    };
    child.wait_ready()?;
    Ok(child)
}

/// nginx's settings that the bench chooses; see `nginx_conf`.
pub struct NginxOptions {
    pub workers: usize,
    pub access_log: bool,
    /// `grpc_buffer_size`, when not nginx's default (one memory page).
    pub grpc_buffer_size: Option<String>,
}

/// The nginx configuration: h2c on a loopback port, `grpc_pass` to the headers' target.
/// Everything else is nginx's default, except limits that would otherwise break a long
/// benchmark (requests per connection, body size, timeouts) or unfairly cap streams.
pub fn nginx_conf(dir: &Path, port: u16, options: &NginxOptions) -> String {
    let d = dir.display();
    let user = if is_root() { "user root;\n" } else { "" };
    let access = if options.access_log {
        format!("access_log {d}/access.log;")
    } else {
        "access_log off;".to_string()
    };
    let buffer = options
        .grpc_buffer_size
        .as_ref()
        .map(|size| format!("grpc_buffer_size {size};"))
        .unwrap_or_default();
    format!(
        "{user}daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    {access}
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    underscores_in_headers on;
    client_max_body_size 0;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    http2_max_concurrent_streams 1024;
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpc://$http_forward_host:$http_forward_port;
            grpc_read_timeout 600s;
            grpc_send_timeout 600s;
            {buffer}
        }}
    }}
}}
",
        workers = options.workers,
    )
}

/// Starts nginx in the foreground with its own prefix and config in `dir`.
pub fn start_nginx(binary: &Path, dir: &Path, options: &NginxOptions) -> anyhow::Result<Child> {
    let port = free_port()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, port, options))?;
    let log = dir.join("nginx.stderr.log");
    let out = std::fs::File::create(&log)?;
    let child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut child = Child {
        name: "nginx",
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
        log,
    };
    child.wait_ready()?;
    // The master is listening before it forks its workers: wait for them.
    let deadline = Instant::now() + READY_DEADLINE;
    while children_of(child.pid()).len() < options.workers && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// `nginx -v`, e.g. `nginx/1.22.1`.
pub fn nginx_version(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("-v").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    Some(
        text.trim()
            .trim_start_matches("nginx version: ")
            .to_string(),
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            Some(line.split_whitespace().nth(2)? == "0")
        })
        .unwrap_or(false)
}

/// Processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name, starting with the state (field 3).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().map(str::to_string).collect())
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat` times.
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU seconds of all these processes (all their threads).
pub fn cpu_seconds(pids: &[u32], ticks: f64) -> f64 {
    pids.iter()
        .filter_map(|&pid| {
            let fields = stat_fields(pid)?;
            // utime and stime are fields 14 and 15; this slice starts at field 3.
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .sum()
}

/// A `/proc/<pid>/status` size field (`VmRSS`, `VmHWM`) in KiB, summed over the processes.
pub fn status_kib(pids: &[u32], field: &str) -> u64 {
    pids.iter()
        .filter_map(|&pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with(field))?;
            line[field.len() + 1..]
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Resets the processes' peak RSS (`VmHWM`) to their current RSS; false if the kernel refused.
pub fn reset_peak_rss(pids: &[u32]) -> bool {
    pids.iter()
        .all(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
}
