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
