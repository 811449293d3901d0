//! One module per subcommand; each wires library crates and prints.

pub mod demo;
pub mod eval;
pub mod fleet;
pub mod models;
pub mod token;
pub mod train;
pub mod validate;
pub mod watermark;

/// The multi-threaded runtime the async subcommands run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
