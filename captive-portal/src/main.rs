//! `captive-portal`: the missiongate control plane binary. See `captive-portal --help`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;

use captive_portal::cli::{Cli, Command};
use captive_portal::{client, serve};

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "captive-portal: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => {
            init_logging();
            runtime.block_on(serve::run(args))
        }
        Command::Mission(cmd) => runtime.block_on(client::mission(cmd)).map_err(|e| e.to_string()),
        Command::Keys(cmd) => runtime.block_on(client::keys(cmd)).map_err(|e| e.to_string()),
        Command::Migrate(args) => {
            init_logging();
            runtime.block_on(serve::migrate(args))
        }
        Command::GatewayCa(cmd) => captive_portal::gateway_ca::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "captive-portal: {e}");
            ExitCode::FAILURE
        }
    }
}
