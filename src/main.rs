//! The `pinot-proxy` command: parse arguments, load the config, serve until SIGTERM or SIGINT.

use clap::Parser;
use pinot_proxy::Config;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
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
        println!("{}: ok", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("pinot-proxy: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pinot_proxy::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pinot-proxy: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
