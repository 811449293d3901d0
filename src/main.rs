//! The `reelforge` binary: parses the command line, wires the crates together and delegates.
//! No domain logic lives here.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Generative recommendation: repurpose and synthesise micro-videos for each user (GeneRec's
/// AI editor and AI creator), as a fleet of GPU workers behind RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "reelforge", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one edit and one create job end to end in this process (no services needed).
    Demo(commands::demo::DemoArgs),
    /// Run the scheduler of a fleet: admission, routing, job state, HTTP API (RabbitMQ).
    Scheduler(commands::fleet::SchedulerArgs),
    /// Run a worker of a fleet: consume tasks, run pipelines, store outputs (RabbitMQ).
    Worker(Box<commands::fleet::WorkerArgs>),
    /// Submit a job document to a fleet (`--wait` follows it to its result).
    Submit(commands::fleet::SubmitArgs),
    /// Show a job's state and result, from the scheduler's HTTP API.
    Status(commands::fleet::StatusArgs),
    /// Manage model checkpoints (`models init-tiny --out DIR`).
    #[command(subcommand)]
    Models(commands::models::ModelsCommand),
    /// Train a model (`train mcvd`).
    #[command(subcommand)]
    Train(commands::train::TrainCommand),
    /// Evaluate a model (`eval mcvd`).
    #[command(subcommand)]
    Eval(commands::eval::EvalCommand),
    /// Detect the watermark in a file (`watermark detect FILE`).
    #[command(subcommand)]
    Watermark(commands::watermark::WatermarkCommand),
    /// Make bearer tokens for the scheduler's API (`token new --name N --tenant T`).
    #[command(subcommand)]
    Token(commands::token::TokenCommand),
    /// Check a job document against the wire format and print the first problem.
    Validate {
        /// The job document (JSON).
        file: PathBuf,
        /// Accept file:/// media, as the embedded mode does.
        #[arg(long)]
        allow_local: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_level.into()))
        .with_writer(std::io::stderr)
        .init();
    let outcome = match cli.command {
        Command::Demo(args) => commands::runtime().and_then(|rt| rt.block_on(commands::demo::run(args))),
        Command::Validate { file, allow_local } => commands::validate::run(&file, allow_local),
        Command::Scheduler(args) => commands::runtime().and_then(|rt| rt.block_on(commands::fleet::scheduler(args))),
        Command::Worker(args) => commands::runtime().and_then(|rt| rt.block_on(commands::fleet::worker(*args))),
        Command::Submit(args) => commands::runtime().and_then(|rt| rt.block_on(commands::fleet::submit(args))),
        Command::Status(args) => commands::runtime().and_then(|rt| rt.block_on(commands::fleet::status(args))),
        Command::Models(cmd) => commands::models::run(cmd),
        Command::Train(cmd) => commands::train::run(cmd),
        Command::Eval(cmd) => commands::eval::run(cmd),
        Command::Watermark(cmd) => commands::watermark::run(cmd),
        Command::Token(cmd) => commands::token::run(cmd),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
