//! `reelforge token new`: a bearer token for the scheduler's API and the entry to add to its
//! tokens file (`--api-tokens`; see `scheduler::auth`).

use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;

/// `reelforge token`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a random token; prints it once (give it to the client) and the tokens-file entry,
    /// which holds only its SHA-256.
    New {
        /// A name for logs and errors (`acme-backend`).
        #[arg(long)]
        name: String,
        /// A tenant token: this tenant's jobs only.
        #[arg(long, conflicts_with_all = ["service_tenants", "admin"])]
        tenant: Option<String>,
        /// A service token acting for these tenants (comma-separated).
        #[arg(long, value_delimiter = ',', conflicts_with = "admin")]
        service_tenants: Vec<String>,
        /// An admin token: everything, including the fleet endpoints.
        #[arg(long)]
        admin: bool,
    },
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let TokenCommand::New { name, tenant, service_tenants, admin } = cmd;
    let (token, sha256) = scheduler::auth::new_token()?;
    let entry = match (tenant, service_tenants.is_empty(), admin) {
        (Some(t), true, false) => json!({ "name": name, "sha256": sha256, "scope": "tenant", "tenant": t }),
        (None, false, false) => {
            json!({ "name": name, "sha256": sha256, "scope": "service", "tenants": service_tenants })
        }
        (None, true, true) => json!({ "name": name, "sha256": sha256, "scope": "admin" }),
        _ => bail!("give one of --tenant T, --service-tenants A,B or --admin"),
    };
    // The entry is checked the way the scheduler will read it.
    scheduler::auth::Tokens::parse(&json!({ "tokens": [entry] }).to_string())?;
    println!("token (give it to the client; it is not stored anywhere): {token}");
    println!("tokens-file entry (add it to the \"tokens\" list):\n{}", serde_json::to_string_pretty(&entry)?);
    Ok(ExitCode::SUCCESS)
}
