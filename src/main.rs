//! The `sensor-stats` binary: parses flags, starts logging, builds the app and serves
//! until SIGTERM or Ctrl-C. Everything else lives in the library.

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use sensor_stats::{App, Config, healthcheck, shutdown, telemetry};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ingests sensor measurements over HTTP and answers per-sensor statistics.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Ask the server on 127.0.0.1:<port> whether it is ready: exit 0 when /healthz
    /// answers 204, 1 otherwise (for container health checks).
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck) = cli.command {
        return match healthcheck::check(cli.config.port, Duration::from_secs(2)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("unhealthy: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match serve(cli.config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sensor-stats: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    telemetry::init(&config.log_level, config.log_format)?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), ?config, "starting");
    let app = App::build(config).await?;
    app.run_until(shutdown::signal()).await
}
