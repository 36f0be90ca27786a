//! The claimgate command line: `run`, `demo`, `validate`, `explain`, `test`,
//! `keys`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use claimgate::config::{EnvVars, LogFormat, PolicySource, ProcessConfig};
use claimgate::explain::{Case, Credential};
use clap::{Parser, Subcommand};

/// mimalloc: per-thread free lists, no arena lock; glibc malloc and free
/// were ~8 % of a proxied request's CPU in the load profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "claimgate",
    version,
    about = "A reverse proxy that enforces JWT claims"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the embedded demo: proxy, echo upstream, JWKS and example tokens.
    #[cfg(feature = "testkit")]
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9180")]
        admin_listen: SocketAddr,
    },
    /// Check a configuration with the same code a reload runs; exit 1 on error.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show what claimgate would do with one request: the route, the rule's
    /// trace, the decision and the headers the upstream would get.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// The request, e.g. "GET /orders/7".
        #[arg(long)]
        request: String,
        /// A token to verify (the issuer's keys are fetched first).
        #[arg(long, conflicts_with = "claims")]
        token: Option<String>,
        /// Claims as JSON, taken as verified (offline; no signature check).
        #[arg(long)]
        claims: Option<String>,
        /// The issuer the claims are for; else by their `iss`, else the only one.
        #[arg(long, requires = "claims")]
        issuer: Option<String>,
        #[arg(long, default_value = "localhost")]
        host: String,
        /// A request header, "Name: value"; repeatable.
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show each issuer's keys in a running claimgate (kid, type, algorithms,
    /// source, age, next refresh, last error), or load them now.
    Keys {
        /// The running instance's admin address.
        #[arg(long, default_value = "127.0.0.1:9180")]
        admin: SocketAddr,
        /// Load the keys now, bypassing the unknown-kid cooldown, and show
        /// which keys were added and removed (after a hard rotation or a
        /// key compromise).
        #[arg(long)]
        reload: bool,
        /// Only this issuer (by its configuration name).
        #[arg(long)]
        issuer: Option<String>,
        /// Print the admin API's JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the process file or of a policy file, for
    /// editors (`# yaml-language-server: $schema=<file>`) and CI checks.
    Schema {
        #[arg(value_parser = ["process", "policy"])]
        file: String,
    },
    /// Print shell completions: `claimgate completions bash > /etc/bash_completion.d/claimgate`.
    Completions { shell: clap_complete::Shell },
    /// Run policy tests: YAML files of requests and expected decisions.
    /// Exits 1 when any case fails.
    Test {
        /// Test files, or directories of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAIMGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never into files.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(claimgate::logging::Stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    // Access lines in the same shape, without the formatter's cost.
    claimgate::access_log::set_format(format == LogFormat::Json);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("claimgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run { config } => run(config).await,
            #[cfg(feature = "testkit")]
            Command::Demo {
                listen,
                admin_listen,
            } => demo(listen, admin_listen).await,
            Command::Validate { config } => validate(config),
            Command::Keys {
                admin,
                reload,
                issuer,
                json,
            } => claimgate::admin::cli::keys(admin, reload, issuer, json).await,
            Command::Explain {
                config,
                request,
                token,
                claims,
                issuer,
                host,
                headers,
                json,
            } => {
                let credential = match (token, claims) {
                    (Some(t), _) => Ok(Credential::Token(t)),
                    (None, Some(c)) => match serde_json::from_str(&c) {
                        Ok(serde_json::Value::Object(claims)) => {
                            Ok(Credential::Claims { claims, issuer })
                        }
                        _ => Err("--claims must be a JSON object".to_string()),
                    },
                    (None, None) => Ok(Credential::Headers),
                };
                match credential {
                    Ok(c) => explain(config, request, c, host, headers, json).await,
                    Err(e) => {
                        eprintln!("claimgate explain: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Schema { file } => {
                println!("{}", claimgate::config::json_schema(file == "policy"));
                ExitCode::SUCCESS
            }
            Command::Completions { shell } => {
                use clap::CommandFactory;
                let mut cmd = Cli::command();
                clap_complete::generate(shell, &mut cmd, "claimgate", &mut std::io::stdout());
                ExitCode::SUCCESS
            }
            Command::Test { paths } => {
                let report = claimgate::policy_test::run(&paths).await;
                print!("{}", report.output);
                if report.success() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
        }
    })
}

fn validate(path: PathBuf) -> ExitCode {
    // The same parse → validate → compile as `run` and a reload; key stores
    // are created but nothing is fetched.
    let result = ProcessConfig::load(&path, &EnvVars).and_then(|config| {
        let sources = PolicySource::read_dir(&config.policies)?;
        let metrics = std::sync::Arc::new(claimgate::metrics::Metrics::new());
        let fetcher = claimgate::jwks::Fetcher::default();
        let mut stores = |issuer: &str,
                          source: &claimgate::jwks::KeySource,
                          algs: &[claimgate::jwks::Algorithm],
                          refresh: claimgate::jwks::Refresh| {
            std::sync::Arc::new(claimgate::jwks::JwksStore::new(
                issuer.to_string(),
                source.clone(),
                algs.to_vec(),
                refresh,
                fetcher.clone(),
                metrics.clone(),
            ))
        };
        let snapshot = claimgate::config::compile(
            &sources,
            &EnvVars,
            &mut stores,
            config.limits.max_token_bytes,
            1,
        )?;
        Ok((sources.len(), snapshot.router.len()))
    });
    match result {
        Ok((files, routes)) => {
            println!(
                "{}: ok ({files} policy files, {routes} routes)",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{errs}");
            eprintln!("{} error(s)", errs.len());
            ExitCode::FAILURE
        }
    }
}

async fn explain(
    config: PathBuf,
    request: String,
    credential: Credential,
    host: String,
    header_args: Vec<String>,
    json: bool,
) -> ExitCode {
    let fail = |e: String| {
        eprintln!("claimgate explain: {e}");
        ExitCode::FAILURE
    };
    let (method, path) = match claimgate::policy_test::parse_request(&request) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let mut headers = http::HeaderMap::new();
    for h in &header_args {
        let parsed = h.split_once(':').and_then(|(k, v)| {
            Some((
                http::HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                http::HeaderValue::from_str(v.trim()).ok()?,
            ))
        });
        match parsed {
            Some((k, v)) => {
                headers.append(k, v);
            }
            None => return fail(format!("--header `{h}`: write it as `Name: value`")),
        }
    }
    let (_, app) = match claimgate::app::load(&config, Box::new(EnvVars)) {
        Ok(x) => x,
        Err(errs) => return fail(format!("\n{errs}")),
    };
    // A token that is not a JWT needs no keys: it is refused as malformed
    // without waiting for them.
    if let Credential::Token(t) = &credential {
        if jsonwebtoken::decode_header(t).is_ok() {
            for (issuer, why) in claimgate::explain::load_keys(&app.snapshot()).await {
                eprintln!("claimgate explain: issuer `{issuer}`: keys did not load: {why}");
            }
        }
    }
    let case = Case {
        method,
        path,
        host,
        headers,
        credential,
    };
    let snapshot = app.snapshot();
    let x = claimgate::explain::explain(&snapshot, &case, claimgate::jwks::unix_now()).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&x).unwrap_or_default());
    } else {
        print!("{}", x.to_text());
    }
    ExitCode::SUCCESS
}

async fn run(path: PathBuf) -> ExitCode {
    let (config, app) = match claimgate::app::load(&path, Box::new(EnvVars)) {
        Ok(x) => x,
        Err(errs) => {
            eprintln!("{errs}");
            return ExitCode::FAILURE;
        }
    };
    init_logs(config.log_format);
    let running = match claimgate::app::start(&config, app).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %running.addr, admin = %running.admin_addr, "claimgate serving");
    let app = running.app.clone();
    let reloader = tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let _ = app.reload().await;
        }
    });
    // SIGTERM comes from an orchestrator: stay up, unready, for the drain
    // delay so that endpoints are removed before the listener closes. SIGINT
    // is someone at a terminal: stop now.
    let delay = match wait_for_stop().await {
        Stop::Terminate => config.limits.drain_delay,
        Stop::Interrupt => Duration::ZERO,
    };
    tracing::info!(
        drain_delay_ms = delay.as_millis() as u64,
        "shutting down: unready now, then draining in-flight requests"
    );
    reloader.abort();
    let flushing = running.app.clone();
    running.shutdown(delay).await;
    // The last spans, exported before exit (the exporter's thread blocks).
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(otel) = &flushing.otel {
            otel.shutdown();
        }
    })
    .await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

#[cfg(feature = "testkit")]
async fn demo(listen: SocketAddr, admin_listen: SocketAddr) -> ExitCode {
    init_logs(LogFormat::Text);
    let demo = match claimgate::demo::start(listen, admin_listen).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("claimgate demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", demo.walkthrough());
    let _ = wait_for_stop().await;
    demo.running.shutdown(Duration::ZERO).await;
    ExitCode::SUCCESS
}

enum Stop {
    Terminate,
    Interrupt,
}

/// Waits for SIGTERM or SIGINT.
async fn wait_for_stop() -> Stop {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Stop::Interrupt,
        _ = term => Stop::Terminate,
    }
}
