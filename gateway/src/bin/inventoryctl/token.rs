//! `inventoryctl token`: signs a bearer token for a service running with
//! `--auth jwt` and an HS256 secret, for operators and tests without an
//! identity provider.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use inventory_gateway::auth::jwt::mint::SigningKey;
use inventory_gateway::auth::{read_secret, Role};

#[derive(clap::Args)]
pub struct TokenArgs {
    /// The service's `--jwt-hs256-secret-file`.
    #[arg(long)]
    hs256_secret_file: PathBuf,
    /// Who the token is for (`sub`): recorded as the operator of its writes.
    #[arg(long)]
    sub: String,
    /// A role (repeat for several): reserver, payment, reader, receiver,
    /// operator, approver, admin.
    #[arg(long = "role", required = true)]
    roles: Vec<String>,
    /// The tenant its holds, orders and keys belong to.
    #[arg(long)]
    tenant: Option<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    #[arg(long)]
    issuer: Option<String>,
    #[arg(long)]
    audience: Option<String>,
}

pub fn run(args: TokenArgs) -> ExitCode {
    if let Some(bad) = args.roles.iter().find(|r| Role::parse(r).is_none()) {
        let known: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
        eprintln!("inventoryctl token: unknown role {bad:?}; roles are {}", known.join(", "));
        return ExitCode::from(2);
    }
    let secret = match read_secret(&args.hs256_secret_file) {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("inventoryctl token: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let mut claims = serde_json::json!({
        "sub": args.sub, "roles": args.roles, "iat": now, "exp": now + args.ttl.as_secs(),
    });
    for (name, value) in [("tenant", args.tenant), ("iss", args.issuer), ("aud", args.audience)] {
        if let Some(value) = value {
            claims[name] = value.into();
        }
    }
    println!("{}", SigningKey::Hs256(secret).sign(&claims, None));
    ExitCode::SUCCESS
}
