//! `inventoryctl token`: signs a bearer token for a service running with
//! `--auth jwt`, with its HS256 secret or an ES256 key whose public half is
//! in the service's JWKS; `inventoryctl keygen` makes such a key. For
//! operators, tests and benchmarks without an identity provider.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use inventory_gateway::auth::jwt::mint::SigningKey;
use inventory_gateway::auth::{read_secret, Role};

#[derive(clap::Args)]
pub struct TokenArgs {
    /// The service's `--jwt-hs256-secret-file`.
    #[arg(long, required_unless_present = "es256_key_file", conflicts_with = "es256_key_file")]
    hs256_secret_file: Option<PathBuf>,
    /// A P-256 private key (PKCS#8 DER, as `inventoryctl keygen` writes it)
    /// whose public key is in the service's `--jwt-jwks-file`.
    #[arg(long)]
    es256_key_file: Option<PathBuf>,
    /// The `kid` put in the token's header.
    #[arg(long)]
    kid: Option<String>,
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
    let key = match (&args.hs256_secret_file, &args.es256_key_file) {
        (Some(path), _) => read_secret(path).map(SigningKey::Hs256).map_err(|e| e.to_string()),
        (None, Some(path)) => read_secret(path)
            .map_err(|e| e.to_string())
            .and_then(|der| SigningKey::es256_from_pkcs8(&der).map_err(|e| format!("{}: {e}", path.display()))),
        (None, None) => unreachable!("clap requires one"),
    };
    let key = match key {
        Ok(key) => key,
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
    println!("{}", key.sign(&claims, args.kid.as_deref()));
    ExitCode::SUCCESS
}

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Directory to write `es256.pk8` (the private key, mode 600) and
    /// `jwks.json` (its public key, for `--jwt-jwks-file`) into.
    #[arg(long)]
    out_dir: PathBuf,
    /// The key's `kid`.
    #[arg(long, default_value = "k1")]
    kid: String,
}

/// Writes a new ES256 key pair.
pub fn keygen(args: KeygenArgs) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (key, pkcs8) = SigningKey::generate_es256();
    let jwks = serde_json::json!({ "keys": [key.jwk(&args.kid).expect("a public key")] });
    let written = std::fs::create_dir_all(&args.out_dir).and_then(|()| {
        let mut private = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(args.out_dir.join("es256.pk8"))?;
        private.write_all(&pkcs8)?;
        std::fs::write(args.out_dir.join("jwks.json"), format!("{jwks:#}\n"))
    });
    match written {
        Ok(()) => {
            println!("wrote {0}/es256.pk8 and {0}/jwks.json (kid {1})", args.out_dir.display(), args.kid);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("inventoryctl keygen: {}: {e}", args.out_dir.display());
            ExitCode::FAILURE
        }
    }
}
