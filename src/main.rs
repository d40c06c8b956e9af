//! The `pinot-proxy` command: parse arguments, load the config, serve until SIGTERM or SIGINT;
//! or run one of the tools (`token`, `probe`).

use clap::{Parser, Subcommand};
use pinot_proxy::{probe, token, Config};
use std::path::PathBuf;
use std::process::ExitCode;

/// Forwards Trino's gRPC and REST calls into an Apache Pinot cluster.
#[derive(Parser)]
#[command(name = "pinot-proxy", version)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long, short, default_value = "config/pinot-proxy.toml")]
    config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long, alias = "check-config")]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Work with StarTree-style API tokens and password hashes.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Send one Submit as Trino does (or one REST GET) through a running proxy.
    ///
    /// Prints what came back, one `key: value` fact a line, and exits 0 when it worked, 1 when
    /// it failed, 2 on bad arguments.
    Probe(Box<probe::Args>),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print the username and password inside a token, and the matching Trino properties.
    Decode { token: String },
    /// Read a password on standard input and print its password_sha256 for [[auth.users]].
    Hash,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(command)) => return run_token(command),
        Some(Command::Probe(args)) => return run_probe(&args),
        None => {}
    }
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pinot-proxy: {err:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = init_logging(&config.log) {
        eprintln!("pinot-proxy: {}: {err:#}", cli.config.display());
        return ExitCode::from(2);
    }
    if cli.check {
        // Loads every file and secret the config names, as a start would, and binds nothing.
        let checked = tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| {
                runtime.block_on(async { pinot_proxy::App::build(&config).map(drop) })
            });
        if let Err(err) = checked {
            eprintln!("pinot-proxy: {}: {err:#}", cli.config.display());
            return ExitCode::from(2);
        }
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }
    tracing::info!(
        config = %cli.config.display(),
        version = env!("CARGO_PKG_VERSION"),
        "pinot-proxy starting"
    );
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async {
                // Handlers are installed before the port is bound, so a SIGTERM that comes
                // right after startup drains instead of killing the process.
                let shutdown = shutdown_signal();
                pinot_proxy::run(config, shutdown).await
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pinot-proxy: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_token(command: TokenCommand) -> ExitCode {
    let result = match command {
        TokenCommand::Decode { token } => token::decode_token(&token)
            .map(|credentials| token::describe(&credentials))
            .map_err(|err| format!("cannot decode the token: {err}")),
        TokenCommand::Hash => read_password()
            .and_then(|text| password_line(&text).map(token::hash_password))
            .map(|hash| hash + "\n"),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("pinot-proxy: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs `probe` on a single-threaded runtime, printing its facts on stdout as they come.
fn run_probe(args: &probe::Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("pinot-proxy probe: {err}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match runtime.block_on(probe::run(args, &mut out)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("pinot-proxy probe: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Longest password `token hash` reads, in bytes: far above any real one, and a bound on what a
/// mistaken pipe makes it read.
const MAX_PASSWORD_LEN: u64 = 64 * 1024;

/// The input of `token hash`: on a terminal a line typed after a prompt, not echoed; otherwise
/// all of standard input, so that anything after the first line is seen and refused.
fn read_password() -> Result<String, String> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    let read = if stdin.is_terminal() {
        eprint!("Password to hash: ");
        read_line_unechoed(&stdin)
    } else {
        let mut text = String::new();
        (&stdin)
            .take(MAX_PASSWORD_LEN + 1)
            .read_to_string(&mut text)
            .map(|_| text)
    };
    let text = read.map_err(|err| format!("cannot read the password from stdin: {err}"))?;
    if text.len() as u64 > MAX_PASSWORD_LEN {
        return Err(format!("the password is over {MAX_PASSWORD_LEN} bytes"));
    }
    Ok(text)
}

/// Reads one line from the terminal on `stdin` with echo off, as `getpass` does (typed-ahead
/// input is discarded), and turns echo back on whatever the read gave.
fn read_line_unechoed(stdin: &std::io::Stdin) -> std::io::Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let saved = tcgetattr(stdin)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(stdin, OptionalActions::Flush, &quiet)?;
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    let restored = tcsetattr(stdin, OptionalActions::Now, &saved);
    // The Enter the user typed was not echoed either.
    eprintln!();
    read?;
    restored?;
    Ok(line)
}

/// The password in `text`: one line, not empty; one trailing newline (`\n` or `\r\n`) is not
/// part of it. More lines are refused rather than dropped: the hash would silently be of a
/// different password than the one meant.
fn password_line(text: &str) -> Result<&str, String> {
    let line = match text.strip_suffix('\n') {
        Some(line) => line.strip_suffix('\r').unwrap_or(line),
        None => text,
    };
    if line.contains(['\n', '\r']) {
        return Err("the password is more than one line; give it as one line".to_owned());
    }
    if line.is_empty() {
        return Err("the password is empty".to_owned());
    }
    Ok(line)
}

/// Logging as `[log]` says; `RUST_LOG`, when set, wins over `log.level`.
fn init_logging(log: &pinot_proxy::LogConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.is_empty() => EnvFilter::try_new(&filter)
            .with_context(|| format!("RUST_LOG = {filter:?} is not a log filter"))?,
        _ => {
            let level = log.level.as_deref().unwrap_or("info");
            EnvFilter::try_new(level)
                .with_context(|| format!("log.level = {level:?} is not a log filter"))?
        }
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log.format {
        pinot_proxy::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        // One flat object per line: timestamp, level, message and the event's fields.
        pinot_proxy::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_target(false)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

/// Installs the SIGTERM (Kubernetes stopping the pod) and SIGINT handlers now; the returned
/// future completes on either. A second signal after that ends the process at once.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            tracing::warn!("cannot install the SIGTERM and SIGINT handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!("second shutdown signal: exiting now");
            std::process::exit(1);
        });
    }
}
