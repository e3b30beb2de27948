//! `modelbus`: parses the command line, loads the configuration and hands over
//! to the library: one service of [`modelbus_cli::platform::SERVICES`]
//! (`modelbus registry`, ...), or a command of [`modelbus_cli::commands`].

use std::process::ExitCode;

use anyhow::Result;
use clap::FromArgMatches as _;
use modelbus_cli::commands::{self, Cli, Globals};
use modelbus_cli::platform::{self, Service};

/// mimalloc keeps freed memory for reuse: the per-chunk Arrow buffers of streaming
/// validation no longer go back to the kernel (and come back page-faulted) each
/// chunk, which cost ~12% of the time in TLB shootdowns on two threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the command line asks for.
enum Invocation {
    /// `modelbus <service>`: one row of the services table.
    Service(Service, Globals),
    /// Any other command.
    Command(Cli),
}

/// Parses the command line, exiting with clap's message (and code 2) when it
/// does not parse.
fn parse() -> Invocation {
    let matches = commands::command().get_matches();
    // A service's subcommand, unless it is a command group given one of its
    // own subcommands (`modelbus monitor status`).
    let service = matches.subcommand().and_then(|(name, sub)| {
        platform::service_named(name).filter(|_| sub.subcommand_name().is_none())
    });
    let parsed = match service {
        Some(service) => {
            Globals::from_arg_matches(&matches).map(|g| Invocation::Service(service, g))
        }
        None => Cli::from_arg_matches(&matches).map(Invocation::Command),
    };
    parsed.unwrap_or_else(|e| e.exit())
}

async fn run(invocation: Invocation) -> Result<ExitCode> {
    match invocation {
        Invocation::Service(service, globals) => {
            let config = globals.load_config()?;
            commands::up::serve(config, &[service], None).await?;
            Ok(ExitCode::SUCCESS)
        }
        Invocation::Command(cli) => {
            let config = cli.globals.load_config()?;
            let client = cli.globals.client(&config);
            cli.cmd.run(config, client).await
        }
    }
}

fn main() -> ExitCode {
    let invocation = parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(invocation)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
