//! `modelbus policies`: the promotion policies' own tests.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use modelbus_registry::policy::PolicySet;

/// `modelbus policies ...`.
#[derive(Subcommand)]
pub enum PoliciesCmd {
    /// Runs the Rego unit tests (`test_*` rules in `*_test.rego`) of a policy directory.
    Test {
        /// Policy directory (default: the policy shipped in the binary).
        dir: Option<PathBuf>,
    },
}

impl PoliciesCmd {
    /// Runs the tests and prints each; exit 1 when one fails.
    pub fn run(self) -> Result<ExitCode> {
        let PoliciesCmd::Test { dir } = self;
        let set = match &dir {
            Some(d) => PolicySet::load_dir(d)?,
            None => PolicySet::default_set(),
        };
        let outcomes = set.run_tests()?;
        let failed = outcomes.iter().filter(|o| !o.passed).count();
        for o in &outcomes {
            println!("{} {}", if o.passed { "PASS" } else { "FAIL" }, o.name);
        }
        println!(
            "{} passed, {failed} failed (policy {})",
            outcomes.len() - failed,
            set.digest()
        );
        Ok(if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}
