//! netd: data plane for container overlay networks.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use netd::{api, check, config, daemon, inspect, watch};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "netd",
    version,
    about = "Data plane for container overlay networks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        #[arg(long, default_value = "/etc/netd/netd.toml")]
        config: PathBuf,
    },
    /// Probe the kernel features netd needs.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Show this node's state, from netd and from the kernel.
    Inspect {
        /// API socket (default: the config's api_socket, else /run/netd/netd.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The node's config: names its sandboxes and LB pins when the daemon is down.
        #[arg(long, default_value = "/etc/netd/netd.toml")]
        config: PathBuf,
        /// Machine-readable output (stable field names).
        #[arg(long, global = true)]
        json: bool,
        /// Stream changes (same as `inspect events`).
        #[arg(long)]
        watch: bool,
        #[command(subcommand)]
        what: Option<inspect::What>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config } => run(config),
        Cmd::Check { json } => std::process::exit(check::run(json)),
        Cmd::Inspect {
            socket,
            config,
            json,
            watch,
            what,
        } => {
            let opts = inspect::Opts {
                socket,
                config,
                json,
                watch,
            };
            std::process::exit(inspect::run(opts, what))
        }
    }
}

fn run(config: PathBuf) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETD_LOG")
                .unwrap_or_else(|_| "info,hickory_server=warn".into()),
        )
        .init();
    let cfg = config::Config::load(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let socket = cfg.api_socket.clone();
        let listener = api::server::bind(&socket, cfg.api_group.as_deref())?;
        let d = daemon::Daemon::start(cfg).await?;
        tokio::spawn(watch::gossip_to_reconcile(d.clone()));
        tokio::spawn(watch::periodic(d.clone()));
        tokio::spawn(watch::publish_sa_epoch(d.clone()));
        tracing::info!(socket = %socket.display(), "API listening");
        let events = d.clone();
        axum::serve(listener, api::router(d))
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                // Event streams never end by themselves: end them, or the stop would wait.
                events.shared.events.close();
            })
            .await
            .context("serving API")?;
        // A normal stop leaves the data plane as it is: containers keep their connectivity.
        std::fs::remove_file(&socket).ok();
        tracing::info!("netd stopped; data plane left in place");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
