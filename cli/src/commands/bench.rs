//! `modelbus bench`: the benchmarks' arguments; they run in [`crate::bench`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use modelbus_core::config::Config;

use crate::bench;

/// `modelbus bench ...`.
#[derive(Subcommand)]
pub enum BenchCmd {
    /// Cost of governance: second signature → production, a canary, a signed
    /// rollback; medians over several runs on an embedded platform.
    Governance {
        /// Timed runs (one more fills production first).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// CSV file (default: the shipped Telco file).
        #[arg(long, default_value = "data/telco-churn/telco_customer_churn.csv")]
        data: PathBuf,
        /// Spec file.
        #[arg(long, default_value = "config/datasets/telco-churn.toml")]
        spec: PathBuf,
        /// Bake time of each canary step.
        #[arg(long, default_value = "1s")]
        bake: humantime::Duration,
    },
    /// Submit → staging-serving latency over several runs, with the per-stage breakdown.
    Pipeline {
        /// Runs to time.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// CSV file (default: the shipped Telco file).
        #[arg(long, default_value = "data/telco-churn/telco_customer_churn.csv")]
        data: PathBuf,
        /// Spec file.
        #[arg(long, default_value = "config/datasets/telco-churn.toml")]
        spec: PathBuf,
    },
    /// Validation speed: a file against a spec's expectations, CSV parsing included.
    Validate {
        /// CSV file.
        #[arg(long, default_value = "data/telco-churn/telco_customer_churn.csv")]
        data: PathBuf,
        /// Spec file.
        #[arg(long, default_value = "config/datasets/telco-churn.toml")]
        spec: PathBuf,
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Rows per chunk (as `ingest.chunk_rows`).
        #[arg(long, default_value_t = 16_384)]
        chunk_rows: usize,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Model quality and fit time: k-fold stratified CV of the spec's candidates.
    Train {
        /// CSV file.
        #[arg(long, default_value = "data/telco-churn/telco_customer_churn.csv")]
        data: PathBuf,
        /// Spec file.
        #[arg(long, default_value = "config/datasets/telco-churn.toml")]
        spec: PathBuf,
        /// Folds.
        #[arg(long, default_value_t = 5)]
        folds: usize,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drift speed and memory: two Telco-shaped files compared column by column
    /// (CSV parsing included), as `modelbus drift` does; the files are generated
    /// when missing (seed 1, and seed 2 shifted: monthly charges × 1.10 + 5, one
    /// contract in five "Two year").
    Monitor {
        /// Reference CSV.
        #[arg(long, default_value = "bench/out/drift-reference.csv")]
        reference: PathBuf,
        /// Current CSV.
        #[arg(long, default_value = "bench/out/drift-current.csv")]
        current: PathBuf,
        /// Rows of each generated file.
        #[arg(long, default_value_t = 500_000)]
        rows: usize,
        /// Spec file.
        #[arg(long, default_value = "config/datasets/telco-churn.toml")]
        spec: PathBuf,
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Streaming throughput of the monitor's own work: logged predictions per
    /// second from decoding to evaluated windows (no bus, no registry).
    MonitorStream {
        /// Logged predictions (the Telco rows, cycled).
        #[arg(long, default_value_t = 200_000)]
        records: usize,
        /// Runs (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Spec file.
        #[arg(long, default_value = "config/datasets/telco-churn.toml")]
        spec: PathBuf,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prediction throughput with the prediction log off and on (alternating
    /// rounds, each on a fresh embedded platform): the log's overhead.
    Serving {
        /// Rounds of each mode.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Single-record requests per round.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// CSV file (default: the shipped Telco file).
        #[arg(long, default_value = "data/telco-churn/telco_customer_churn.csv")]
        data: PathBuf,
        /// Spec file.
        #[arg(long, default_value = "config/datasets/telco-churn.toml")]
        spec: PathBuf,
    },
    /// Writes a seeded Telco-shaped CSV of any size (for the benchmarks).
    Generate {
        /// Rows to write.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Source file sampled from.
        #[arg(long, default_value = "data/telco-churn/telco_customer_churn.csv")]
        from: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

impl BenchCmd {
    /// Runs the benchmark; the platform benchmarks start their own, configured
    /// from `config` with a fresh state dir.
    pub async fn run(self, config: Config) -> Result<ExitCode> {
        match self {
            BenchCmd::Governance {
                runs,
                data,
                spec,
                bake,
            } => bench::governance(config, runs, &data, &spec, bake.into()).await?,
            BenchCmd::Pipeline { runs, data, spec } => {
                bench::pipeline(config, runs, &data, &spec).await?
            }
            BenchCmd::Validate {
                data,
                spec,
                runs,
                chunk_rows,
                json,
            } => bench::validate(&data, &spec, runs, chunk_rows, json)?,
            BenchCmd::Train {
                data,
                spec,
                folds,
                json,
            } => bench::train(&data, &spec, folds, json)?,
            BenchCmd::Serving {
                rounds,
                requests,
                concurrency,
                data,
                spec,
            } => bench::serving(config, rounds, requests, concurrency, &data, &spec).await?,
            BenchCmd::Monitor {
                reference,
                current,
                rows,
                spec,
                runs,
                json,
            } => bench::monitor(&reference, &current, rows, &spec, runs, json)?,
            BenchCmd::MonitorStream {
                records,
                runs,
                spec,
                json,
            } => bench::monitor_stream(
                std::path::Path::new("data/telco-churn/telco_customer_churn.csv"),
                &spec,
                records,
                runs,
                json,
            )?,
            BenchCmd::Generate {
                rows,
                seed,
                from,
                out,
            } => {
                let bytes = bench::generate(&from, rows, seed, &out)?;
                eprintln!("wrote {rows} rows ({bytes} bytes) to {}", out.display());
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
