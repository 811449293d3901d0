//! One module per subcommand; each wires library crates and prints.

pub mod demo;
pub mod eval;
pub mod fleet;
pub mod models;
pub mod train;
pub mod validate;

use std::process::ExitCode;

/// The multi-threaded runtime the async subcommands run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// A subcommand whose implementation has not landed yet: says so and exits 2.
pub fn not_yet(what: &str, issue: &str) -> anyhow::Result<ExitCode> {
    eprintln!("reelforge: {what} is not built yet (it lands with {issue}); `reelforge demo` runs what exists.");
    Ok(ExitCode::from(2))
}
