//! The `pinot-proxy` binary as an operator runs it: `--check`, bad configs, missing files.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// A bad config must fail at startup; a run still going after this long is a hang, not slowness.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

const BIN: &str = env!("CARGO_BIN_EXE_pinot-proxy");

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary and waits for it to exit, killing it after [`EXIT_TIMEOUT`].
fn run(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .current_dir(manifest_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pinot-proxy");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(EXIT_TIMEOUT) {
        Ok(output) => output.expect("wait for pinot-proxy"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("pinot-proxy {args:?} did not exit within {EXIT_TIMEOUT:?}");
        }
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A config file under the temp dir, unique to this process and call, removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(text: &str) -> TempConfig {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "pinot-proxy-cli-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).expect("write temp config");
        TempConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A config whose only fault is the misspelled `lsten` key, listening on `listen`.
fn config_with_unknown_key(listen: &str) -> String {
    format!("[server]\nlisten = \"{listen}\"\nlsten = \"{listen}\"\n\n[servers]\nallow = [\"127.0.0.1\"]\n")
}

#[test]
fn example_config_checks_ok() {
    let output = run(&["--config", "config/pinot-proxy.toml", "--check"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ok"), "stdout: {stdout}");
}

#[test]
fn unknown_key_fails_with_one_line_naming_it() {
    let config = TempConfig::new(&config_with_unknown_key("127.0.0.1:0"));
    let output = run(&["--config", config.path(), "--check"]);
    let stderr = stderr(&output);
    assert!(!output.status.success(), "a bad config passed --check");
    assert_eq!(stderr.trim_end().lines().count(), 1, "stderr: {stderr}");
    assert!(
        stderr.contains("lsten"),
        "stderr does not name the key: {stderr}"
    );
    assert!(
        stderr.contains(config.path()),
        "stderr does not name the file: {stderr}"
    );
}

#[test]
fn missing_file_fails_naming_the_path() {
    let config = TempConfig::new("");
    let missing = format!("{}.missing", config.path());
    let output = run(&["--config", &missing, "--check"]);
    let stderr = stderr(&output);
    assert!(!output.status.success(), "a missing config passed --check");
    assert!(
        stderr.contains(&missing),
        "stderr does not name the path: {stderr}"
    );
}

/// The listen address is held by the test: a proxy that bound before validating would report
/// "address in use" instead of the bad key, and one that served would not exit.
#[test]
fn bad_config_exits_before_binding() {
    let held = TcpListener::bind("127.0.0.1:0").expect("bind a test port");
    let listen = held.local_addr().expect("local addr").to_string();
    let config = TempConfig::new(&config_with_unknown_key(&listen));
    for args in [
        &["--config", config.path(), "--check"][..],
        &["--config", config.path()][..],
    ] {
        let output = run(args);
        let stderr = stderr(&output);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains("lsten"), "{args:?}: stderr: {stderr}");
        assert!(
            !stderr.to_ascii_lowercase().contains("in use"),
            "{args:?}: tried to bind: {stderr}"
        );
    }
}

// Regression: `listen = "localhost:8096"` was refused with "invalid socket address syntax".
#[test]
fn listen_accepts_localhost_and_refuses_other_host_names() {
    let config = TempConfig::new("[server]\nlisten = \"localhost:0\"\n[servers]\n");
    let output = run(&["--config", config.path(), "--check"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));

    let config = TempConfig::new("[server]\nlisten = \"pinot-proxy:8096\"\n[servers]\n");
    let output = run(&["--config", config.path(), "--check"]);
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.contains("server.listen"), "stderr: {stderr}");
    assert!(stderr.contains("\"0.0.0.0:8096\""), "stderr: {stderr}");
}

/// Runs the binary with `stdin` as standard input.
fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pinot-proxy");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn token_decode_prints_the_pair_and_trino_properties() {
    let output = run(&[
        "token",
        "decode",
        "st-XkQBXKr652MV1VF9-5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout
        .starts_with("username=XkQBXKr652MV1VF9\npassword=5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg\n"));
    assert!(stdout.contains("pinot.broker.authentication.user=XkQBXKr652MV1VF9\n"));
    assert!(stdout.contains("pinot.controller.authentication.type=PASSWORD\n"));

    let basic = "NGNlZmI4NDgwZjhmNGE3ODg2YTVjOWRhMTA1NmE3YjU6eVlHVVlsV1BVaU5OTjQ2bkZaY09vM2FUT3FJQ1AyYUFrMXF4VDVCOEFKUT0=";
    let output = run(&["token", "decode", basic]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with(
        "username=4cefb8480f8f4a7886a5c9da1056a7b5\npassword=yYGUYlWPUiNNN46nFZcOo3aTOqICP2aAk1qxT5B8AJQ=\n"
    ), "{stdout}");

    // Regression: a token pasted with its header scheme was "not valid base64".
    let output = run(&[
        "token",
        "decode",
        "Bearer st-XkQBXKr652MV1VF9-5gkhGWNaGAdA1NU5yrHXRSPKMCcNRlRg",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("username=XkQBXKr652MV1VF9\n"),
        "{stdout}"
    );

    let output = run(&["token", "decode", "st-short-token"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("cannot decode the token"));
    assert!(
        !stderr(&output).contains("short-token"),
        "the secret was echoed"
    );
}

#[test]
fn token_hash_reads_stdin() {
    let output = run_with_stdin(&["token", "hash"], "password\n");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n"
    );
}

// Regression: empty input was hashed, and lines after the first were silently dropped.
#[test]
fn token_hash_refuses_empty_and_multi_line_input() {
    const PASSWORD_SHA256: &str =
        "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8\n";
    for ok in ["password", "password\r\n"] {
        let output = run_with_stdin(&["token", "hash"], ok);
        assert!(output.status.success(), "{ok:?}: {}", stderr(&output));
        assert_eq!(String::from_utf8_lossy(&output.stdout), PASSWORD_SHA256);
    }
    for (input, message) in [
        ("", "the password is empty"),
        ("\n", "the password is empty"),
        ("password\nsecond line\n", "more than one line"),
        ("password\n\n", "more than one line"),
    ] {
        let output = run_with_stdin(&["token", "hash"], input);
        assert_eq!(output.status.code(), Some(2), "{input:?}");
        assert!(output.stdout.is_empty(), "{input:?}: printed a hash");
        assert!(
            stderr(&output).contains(message),
            "{input:?}: {}",
            stderr(&output)
        );
        assert!(
            !stderr(&output).contains("Password"),
            "prompted without a terminal"
        );
    }
}

/// A running proxy process whose log lines arrive on a channel.
struct Running {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(config: &Path) -> Running {
        let mut child = Command::new(BIN)
            .args(["--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pinot-proxy");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    /// Waits for a log line containing `needle`.
    fn wait_for(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + EXIT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line with {needle:?}"),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_reloads_tls_and_sigterm_exits_cleanly() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("pinot-proxy-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    let config = TempConfig::new(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls_reload_interval_ms = 3600000\n\
         [server.tls]\ncert_file = {:?}\nkey_file = {:?}\n[servers]\n",
        dir.join("tls.crt").display().to_string(),
        dir.join("tls.key").display().to_string()
    ));
    let mut proxy = Running::start(&config.0);
    proxy.wait_for("serving");
    // A replaced certificate is picked up on SIGHUP, long before the next poll.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    proxy.signal("HUP");
    proxy.wait_for("TLS files reloaded");
    proxy.signal("TERM");
    proxy.wait_for("all connections closed");
    let (tx, rx) = mpsc::channel();
    let mut child = std::mem::replace(&mut proxy.child, Command::new("true").spawn().unwrap());
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx.recv_timeout(EXIT_TIMEOUT).unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_without_tls_does_not_stop_the_proxy() {
    // Regression: with no TLS files nothing handled SIGHUP, and its default action ended
    // the process.
    let config = TempConfig::new("[server]\nlisten = \"127.0.0.1:0\"\n[servers]\n");
    let proxy = Running::start(&config.0);
    proxy.wait_for("serving");
    proxy.signal("HUP");
    proxy.wait_for("SIGHUP");
    proxy.signal("TERM");
    proxy.wait_for("all connections closed");
}

// Regression: an allowlist that lets callers reach any address passed --check without a word.
#[test]
fn an_allowlist_open_to_everything_is_warned_about() {
    let config = TempConfig::new(
        "[server]\nlisten = \"127.0.0.1:0\"\n[servers]\nallow = [\"0.0.0.0/0\", \"*.com\"]\n",
    );
    let output = run(&["--config", config.path(), "--check"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stderr(&output) + &String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("every address, public ones included"),
        "{text}"
    );
    assert!(text.contains("whole top-level domain"), "{text}");
}

// Regression: --check said ok for a missing certificate or a key that does not fit it; the
// start then failed.
#[test]
fn check_loads_the_tls_files_and_names_the_bad_one() {
    let dir = std::env::temp_dir().join(format!("pinot-proxy-cli-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let issue = || {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (cert, _) = issue();
    let (_, other_key) = issue();
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("other.key"), other_key).unwrap();
    let config = |cert: &str, key: &str| {
        TempConfig::new(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n[servers]\n",
            dir.join(cert).display().to_string(),
            dir.join(key).display().to_string()
        ))
    };
    let missing = config("missing.crt", "other.key");
    let output = run(&["--config", missing.path(), "--check"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("missing.crt"),
        "{}",
        stderr(&output)
    );

    let mismatched = config("tls.crt", "other.key");
    let output = run(&["--config", mismatched.path(), "--check"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("does not fit"),
        "{}",
        stderr(&output)
    );
    std::fs::remove_dir_all(&dir).ok();
}
