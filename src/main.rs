//! The `autoscaler` binary: parses the command line, sets up logging, and maps every outcome
//! to an exit status. All logic lives in the library.

use autoscaler::cli::{Cli, Command, DbCommand};
use autoscaler::config::Config;
use autoscaler::db::{ConnectOptions, Database};
use autoscaler::run::{self, EXIT_CANNOT_RUN, EXIT_OK};
use clap::{CommandFactory, Parser};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Generated from the command-line definitions; they need no config, database or runtime.
    match &cli.command {
        Some(Command::Completions { shell }) => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "autoscaler", &mut std::io::stdout());
            return ExitCode::from(EXIT_OK);
        }
        Some(Command::Man) => {
            let page = clap_mangen::Man::new(Cli::command());
            return match page.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::from(EXIT_OK),
                Err(e) => {
                    eprintln!("autoscaler: writing the man page: {e}");
                    ExitCode::from(EXIT_CANNOT_RUN)
                }
            };
        }
        _ => {}
    }
    let config = match &cli.global.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("autoscaler: {e}");
                return ExitCode::from(EXIT_CANNOT_RUN);
            }
        },
        None => Config::default(),
    };
    autoscaler::logging::init(
        cli.global
            .log_format
            .or(config.log_format)
            .unwrap_or_default(),
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("autoscaler: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_CANNOT_RUN);
        }
    };
    match runtime.block_on(dispatch(cli, config)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("autoscaler: {e:#}");
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}

async fn dispatch(cli: Cli, config: Config) -> anyhow::Result<u8> {
    let url = cli.global.database_url.clone();
    if cli.command.is_some()
        && (!cli.run.queues.is_empty()
            || cli.run.force
            || cli.run.dry_run
            || cli.run.metrics_addr.is_some())
    {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--queue, --force, --dry-run and --metrics-addr belong to the main job, not to a subcommand \
                 (options of a subcommand go after its name, e.g. `autoscaler audit --queue NAME`)",
            )
            .exit();
    }
    match cli.command {
        Some(Command::Db(DbCommand::Init)) => {
            Database::create_schema(&url).await?;
            println!(
                "created worker_pools, workers and builds in {}",
                autoscaler::db::redact_url(&url)
            );
            Ok(EXIT_OK)
        }
        Some(Command::Db(DbCommand::EnsureIndex)) => {
            let db = Database::connect(&url, &ConnectOptions::default())?;
            if db.ensure_index().await? {
                println!("created: {}", autoscaler::db::ACTIVE_BUILDS_INDEX);
            } else {
                println!(
                    "index {} already exists; nothing changed",
                    autoscaler::db::ACTIVE_BUILDS_INDEX_NAME
                );
            }
            Ok(EXIT_OK)
        }
        Some(Command::Demo { keep }) => Ok(autoscaler::demo::run(keep, &config).await?),
        Some(Command::Audit(args)) => Ok(autoscaler::audit::run(*args, &url, &config).await?),
        Some(Command::Simulate(args)) => Ok(autoscaler::simulate::run(*args, &url, &config).await?),
        Some(Command::Status(args)) => Ok(autoscaler::status::run(args, &url, &config).await?),
        Some(Command::Completions { .. } | Command::Man) => Ok(EXIT_OK),
        None => {
            if cli.run.queues.is_empty() {
                Cli::command()
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "name at least one pool with --queue NAME (or use a subcommand; see --help)",
                    )
                    .exit();
            }
            let stop = run::shutdown_signal()?;
            let engine = run::engine_for(&config, &url, cli.run.dry_run).await?;
            if cli.run.force {
                Ok(run::run_once(&engine, &cli.run, stop).await?)
            } else {
                let metrics = run::start_metrics(
                    &config,
                    cli.run.metrics_addr,
                    std::time::Duration::from_secs(cli.run.sleep),
                )
                .await?;
                let poll = std::time::Duration::from_secs_f64(config.poll_seconds.unwrap_or(1.0));
                Ok(run::run_loop(&engine, &cli.run, stop, metrics.as_deref(), poll).await)
            }
        }
    }
}
