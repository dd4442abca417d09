//! `inventoryd`: the inventory reservation service.

use std::process::ExitCode;

// The shard loops and replay allocate many small strings; mimalloc measured
// faster than the system allocator for that on this machine.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use inventory_gateway::Config;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "inventoryd",
    version,
    about = "Inventory reservation service: sharded in-memory core, journal before every acknowledgement"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    config: Config,
    /// Log format: text or json.
    #[arg(long, env = "INVENTORY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Build a fresh data dir from PostgreSQL (the journal and disk are
    /// lost): uses --data-dir, --postgres-schema and optionally --shards.
    Restore {
        /// The PostgreSQL the writer persisted to.
        #[arg(long)]
        from_postgres: String,
        /// The data dir to build (must not hold a journal).
        #[arg(long, default_value = "./data")]
        data_dir: std::path::PathBuf,
        /// The schema the writer used.
        #[arg(long, default_value = "inventory")]
        postgres_schema: String,
        /// Shard count (default: as many as PostgreSQL has checkpoints for).
        #[arg(long)]
        shards: Option<u16>,
        /// Journal kind to create: `sled` or `file` (see `--journal`).
        #[arg(long, default_value = "sled", value_parser = clap::value_parser!(inventory_journal::Backend))]
        journal: inventory_journal::Backend,
        /// The `--events-source` the service publishes with: events the
        /// broker may have missed are rebuilt for the relay, byte for byte.
        #[arg(long, default_value = "inventoryd")]
        events_source: String,
    },
}

fn restore(
    url: &str,
    data_dir: &std::path::Path,
    schema: &str,
    shards: Option<u16>,
    journal: inventory_journal::Backend,
    events_source: &str,
) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let started = std::time::Instant::now();
    let result = runtime.block_on(async {
        let schema = inventory_persistence::Schema::new(schema)?;
        inventory_gateway::restore::restore_data_dir(url, &schema, data_dir, shards, journal, events_source).await
    });
    match result {
        Ok(restored) => {
            let r = &restored.report;
            println!(
                "restored {} rows and {} holds into {} shards at journal sequences {:?} in {:.2} s; {} events to publish again",
                r.rows,
                r.holds,
                r.shards,
                r.checkpoints,
                started.elapsed().as_secs_f64(),
                restored.backlog
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("inventoryd restore: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Sub::Restore { from_postgres, data_dir, postgres_schema, shards, journal, events_source }) =
        &cli.command
    {
        return restore(from_postgres, data_dir, postgres_schema, *shards, *journal, events_source);
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let config = cli.config;
    // The control runtime, on this thread: the accept loop, start-up and
    // shutdown, the PostgreSQL writers and gauges. Connections are served on
    // the HTTP threads (`--http-threads`), each with a runtime of its own.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("inventoryd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Install the handlers before announcing the address, so a SIGTERM
        // that follows the announcement is always a graceful shutdown.
        let shutdown = shutdown_signal()?;
        inventory_gateway::http::protected_mode(&config, config.listen)
            .map_err(inventory_gateway::ServerError::Config)?;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        // A stable line for scripts and tests that start us on port 0.
        let scheme = if config.tls_cert.is_some() { "https" } else { "http" };
        println!("inventoryd listening on {scheme}://{addr}");
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "listening");
        inventory_gateway::run(config, listener, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "inventoryd failed");
            eprintln!("inventoryd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
