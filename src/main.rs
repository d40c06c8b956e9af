//! The `pinot-proxy` command: parse arguments, load the config, serve until SIGTERM or SIGINT.

use clap::{Parser, Subcommand};
use pinot_proxy::{token, Config};
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
    if let Some(Command::Token(command)) = cli.command {
        return run_token(command);
    }
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pinot-proxy: {err:#}");
            return ExitCode::from(2);
        }
    };
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
        TokenCommand::Hash => {
            let mut line = String::new();
            match std::io::stdin().read_line(&mut line) {
                Ok(_) => Ok(token::hash_password(line.trim_end_matches(['\r', '\n'])) + "\n"),
                Err(err) => Err(format!("cannot read the password from stdin: {err}")),
            }
        }
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

/// Installs the SIGTERM (Kubernetes stopping the pod) and SIGINT handlers now; the returned
/// future completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                one.recv().await;
            }
            (Err(_), Err(_)) => std::future::pending().await,
        }
    }
}
