//! `modelbus config`: the effective configuration, secrets masked.

use std::process::ExitCode;

use modelbus_core::config::Config;

/// Prints `config` as TOML with its secrets masked.
pub fn run(config: &Config) -> ExitCode {
    print!("{}", config.to_redacted_toml());
    ExitCode::SUCCESS
}
