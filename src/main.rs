//! The `sensor-stats` binary: parses flags, starts logging, builds the app and serves
//! until SIGTERM or Ctrl-C. Everything else lives in the library.

use std::{io::Write as _, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use sensor_stats::{App, Config, access, healthcheck, shutdown, telemetry};

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
    /// answers 204, 1 otherwise (for container health checks). Speaks TLS, without
    /// verifying the certificate, when --tls-cert is set.
    Healthcheck,
    /// API keys for --api-keys-file.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a key: prints its token on the first line (shown this once, stored nowhere:
    /// give it to the client) and the line to add to the keys file on the second.
    New {
        /// The key's name (letters, digits, `.`, `_`, `-`; at most 64): shown in logs and
        /// owns the key's Idempotency-Keys.
        name: String,
        /// What it may do: any of ingest, read, delete, metrics (spaces or commas).
        #[arg(required = true)]
        scopes: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Healthcheck) => {
            let timeout = Duration::from_secs(2);
            let result = if cli.config.tls_cert.is_some() {
                healthcheck::check_tls(cli.config.port, timeout)
            } else {
                healthcheck::check(cli.config.port, timeout)
            };
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Keys {
            command: KeysCommand::New { name, scopes },
        }) => return new_key(&name, &scopes),
        None => {}
    }
    match serve(cli.config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sensor-stats: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn new_key(name: &str, scopes: &[String]) -> ExitCode {
    let key = match access::generate(name, scopes) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("sensor-stats keys new: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "Line 1: the token. Give it to the client now; it is stored nowhere and cannot be shown again.\n\
         Line 2: add it to the API keys file (the file holds only the token's SHA-256).\n\
         Do not append this whole output to the keys file."
    );
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{}\n{}", key.token, key.line).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sensor-stats keys new: cannot write the key: {e}");
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
