//! The `portcullis` command: `run`, `check`, `quickstart`, `keys`, `bans`, `tokens`, `secrets`, `store`,
//! `audit`, `openapi import`.
//!
//! Exit codes: 0 success; 1 `check` found an error; 64 (EX_USAGE) `run` was given an invalid config;
//! 70 the server failed while running.

pub mod store;

use crate::config::{self, ConfigError};
use crate::observe::metrics::Metrics;
use crate::pipeline::runtime::Lasting;
use crate::pipeline::Shared;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// A security-first API gateway.
#[derive(Parser)]
#[command(name = "portcullis", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway on a config file.
    Run {
        /// The config file (YAML or JSON).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file and print its compiled route table (exit 1 on error), like `nginx -t`.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run on the built-in quickstart config: HTTPS :8443, HTTP :8080 (redirect), admin :9901, demo API.
    Quickstart,
    /// Manage API keys in the store of an `api_key` authenticator of the config, or through a running
    /// gateway's admin API (`--admin URL`).
    Keys {
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminApi,
        /// The authenticator's name, when the config has several api_key authenticators.
        #[arg(long)]
        authenticator: Option<String>,
        #[command(subcommand)]
        command: crate::authn::api_key::cli::KeysCommand,
    },
    /// Ban addresses, prefixes and principals for a while, in the config's `store:` (a running gateway
    /// sees changes within about a second).
    Bans {
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminApi,
        #[command(subcommand)]
        command: crate::guard::cli::BansCommand,
    },
    /// Secrets encrypted at rest: encrypt config values, keep secrets in the config's `store:`, rotate keys.
    Secrets {
        /// The config file (its `secrets:` and `store:` sections); not needed by `keygen`. Before or
        /// after the subcommand.
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: crate::secret::cli::SecretsCommand,
    },
    /// Revoke JWTs by their `jti`, in the config's `redis:` or `store:` (running gateways refuse them
    /// within a second).
    Tokens {
        #[arg(short, long)]
        config: PathBuf,
        #[command(subcommand)]
        command: crate::authn::jwt::revoked::cli::TokensCommand,
    },
    /// The fleet's PostgreSQL (`store.postgres`): migrate its schema; export and import keys and bans
    /// between a node's stores and a fleet's.
    Store {
        #[arg(short, long)]
        config: PathBuf,
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// The admin API's tokens, in the config's `store:`.
    Admin {
        /// The config file (its `store:`); before or after the subcommand.
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: crate::admin::cli::AdminCommand,
    },
    /// Verify an audit trail, or make its signing key.
    Audit {
        #[command(subcommand)]
        command: crate::observe::audit::cli::AuditCommand,
    },
    /// Security testing: audit a config (`scan config`) or probe a live API (`scan api`).
    Scan {
        #[command(subcommand)]
        command: crate::scan::Command,
    },
    /// Rate limits from observed behaviour: `limits suggest --admin URL` asks a running gateway's
    /// anomaly detector for per-route, per-principal limits, printed as config to paste.
    Limits {
        #[command(flatten)]
        admin: AdminApi,
        #[command(subcommand)]
        command: LimitsCommand,
    },
    /// Work with OpenAPI documents.
    Openapi {
        #[command(subcommand)]
        command: OpenapiCommand,
    },
}

/// A running gateway's admin API, instead of the config's local store.
#[derive(clap::Args)]
struct AdminApi {
    /// The admin API's base URL, e.g. https://gw1.internal:9901 (http:// on loopback only).
    #[arg(long, global = true, value_name = "URL")]
    admin: Option<String>,
    /// The admin token (better: the PORTCULLIS_ADMIN_TOKEN environment variable).
    #[arg(long, global = true)]
    token: Option<String>,
    /// A PEM file of CAs trusted for the admin URL.
    #[arg(long, global = true, value_name = "FILE")]
    admin_ca: Option<String>,
}

/// `--admin` when given, else `-c`: which one a command talks to.
fn target(config: Option<PathBuf>, admin: AdminApi) -> Result<Result<PathBuf, crate::admin::remote::Remote>, String> {
    match (config, admin.admin) {
        (_, Some(url)) => crate::admin::remote::Remote::new(&url, admin.token, admin.admin_ca.as_deref()).map(Err),
        (Some(c), None) => Ok(Ok(c)),
        (None, None) => Err("give the config file with -c, or a running gateway with --admin URL".into()),
    }
}

#[derive(Subcommand)]
enum LimitsCommand {
    /// Print `rate_limits:` suggested from each route's observed per-principal rates.
    Suggest {
        /// The quantile of observed per-principal rates (default 0.999).
        #[arg(long, default_value_t = 0.999)]
        quantile: f64,
        /// Multiplied into the observed rate (default 2).
        #[arg(long, default_value_t = 2.0)]
        margin: f64,
        /// Print the JSON answer instead of the config fragment.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OpenapiCommand {
    /// Print the config sections (`openapi:` and `routes:`) an OpenAPI document implies: one route per
    /// path template, validated against the document. Each route's `auth` is a placeholder that does
    /// not compile until you choose.
    Import {
        /// The OpenAPI 3.0 or 3.1 document (YAML or JSON).
        file: PathBuf,
        /// The document's name in the config (default `api`).
        #[arg(long, default_value = "api")]
        name: String,
        /// The upstream the routes send to (default: the document's name).
        #[arg(long)]
        upstream: Option<String>,
    },
}

pub const QUICKSTART: &str = include_str!("../examples/quickstart.yaml");

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => match config::load(&config) {
            Ok((cfg, _)) => serve(cfg, Some(config), false),
            Err(e) => usage(&e),
        },
        Command::Keys { config, admin, authenticator, command } => {
            let config = match target(config, admin) {
                Ok(Ok(c)) => c,
                Ok(Err(remote)) => {
                    return match crate::admin::remote::keys(&remote, authenticator.as_deref(), command) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("portcullis keys: {e}");
                            ExitCode::from(1)
                        }
                    }
                }
                Err(e) => {
                    eprintln!("portcullis keys: {e}");
                    return ExitCode::from(64);
                }
            };
            let found = config::load(&config).map_err(|e| e.to_string()).and_then(|(cfg, _)| {
                let trail = command_trail(&cfg)?;
                let pg = cfg.store.as_ref().and_then(|s| s.postgres.clone());
                find_api_key(&cfg, authenticator.as_deref()).map(|k| (k, trail, pg))
            });
            let done = found.and_then(|((name, c), trail, pg)| {
                crate::authn::api_key::cli::run(&name, &c, pg.as_ref(), command, &trail.emitter())?;
                trail.check()
            });
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis keys: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Bans { config, admin, command } => {
            let config = match target(config, admin) {
                Ok(Ok(c)) => c,
                Ok(Err(remote)) => {
                    return match crate::admin::remote::bans(&remote, command) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("portcullis bans: {e}");
                            ExitCode::from(1)
                        }
                    }
                }
                Err(e) => {
                    eprintln!("portcullis bans: {e}");
                    return ExitCode::from(64);
                }
            };
            let done = config::load(&config).map_err(|e| e.to_string()).and_then(|(cfg, _)| {
                let trail = command_trail(&cfg)?;
                crate::guard::cli::run(cfg.store.as_ref(), cfg.redis.as_ref(), command, &trail.emitter())?;
                trail.check()
            });
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis bans: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Secrets { config, command } => match secrets(config.as_deref(), command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("portcullis secrets: {e}");
                ExitCode::from(1)
            }
        },
        Command::Tokens { config, command } => {
            let done = config::load(&config).map_err(|e| e.to_string()).and_then(|(cfg, _)| {
                let trail = command_trail(&cfg)?;
                let jwts: Vec<_> = cfg
                    .authenticators
                    .iter()
                    .filter_map(|(n, a)| a.jwt.as_ref().map(|j| (n.clone(), j.clone())))
                    .collect();
                crate::authn::jwt::revoked::cli::run(
                    cfg.store.as_ref(),
                    cfg.redis.as_ref(),
                    &jwts,
                    command,
                    &trail.emitter(),
                )?;
                trail.check()
            });
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis tokens: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Store { config, command } => {
            match config::load(&config).map_err(|e| e.to_string()).and_then(|(cfg, _)| store::run(&cfg, command)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis store: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Admin { config, command } => {
            let Some(config) = config else {
                eprintln!("portcullis admin: give the config file with -c");
                return ExitCode::from(64);
            };
            let done = config::load(&config).map_err(|e| e.to_string()).and_then(|(cfg, _)| {
                let trail = command_trail(&cfg)?;
                crate::admin::cli::run(
                    crate::admin::tokens::TokenStore::open(cfg.store.as_ref())?,
                    command,
                    &trail.emitter(),
                )?;
                trail.check()
            });
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis admin: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Audit { command } => crate::observe::audit::cli::run(command),
        Command::Scan { command } => crate::scan::run(command),
        Command::Limits { admin, command: LimitsCommand::Suggest { quantile, margin, json } } => {
            let done = match target(None, admin) {
                Ok(Err(remote)) => remote
                    .call(
                        http::Method::GET,
                        &format!("/admin/v1/anomaly/suggest?quantile={quantile}&margin={margin}"),
                        None,
                    )
                    .map(|v| {
                        if json {
                            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                        } else {
                            print!("{}", v["yaml"].as_str().unwrap_or_default());
                        }
                    }),
                Ok(Ok(_)) => Err("give a running gateway with --admin URL".into()),
                Err(_) => {
                    Err("give a running gateway with --admin URL (its anomaly detector has the observations)".into())
                }
            };
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portcullis limits suggest: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Openapi { command: OpenapiCommand::Import { file, name, upstream } } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("portcullis openapi import: `{}` cannot be read: {}", file.display(), e.kind());
                    return ExitCode::from(1);
                }
            };
            let upstream = upstream.unwrap_or_else(|| name.clone());
            match crate::validate::openapi::import(&file.display().to_string(), &text, &name, &upstream) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis openapi import: `{}`: {e}", file.display());
                    ExitCode::from(1)
                }
            }
        }
        Command::Quickstart => match config::parse(QUICKSTART, Path::new("examples/quickstart.yaml (built in)")) {
            Ok(mut cfg) => match quickstart_audit(&mut cfg) {
                Ok(()) => serve(cfg, None, true),
                Err(e) => {
                    eprintln!("portcullis: quickstart audit trail: {e}");
                    ExitCode::from(70)
                }
            },
            Err(e) => usage(&e),
        },
    }
}

/// The audit trail a command appends to (when the config has `audit:`), opened before the command
/// changes anything, so an unwritable trail refuses the change.
struct CommandTrail(Option<Arc<crate::observe::audit::CliTrail>>);

impl CommandTrail {
    fn emitter(&self) -> crate::events::Emitter {
        self.0.as_ref().map_or_else(crate::events::Emitter::none, |t| crate::events::Emitter::new(t.clone()))
    }

    /// An error when a record could not be appended (the change itself was made).
    fn check(&self) -> Result<(), String> {
        match self.0.as_ref().and_then(|t| t.failure()) {
            Some(e) => Err(format!("done, but the audit record could not be written: {e}")),
            None => Ok(()),
        }
    }
}

fn command_trail(cfg: &config::file::FileConfig) -> Result<CommandTrail, String> {
    let Some(audit) = &cfg.audit else {
        return Ok(CommandTrail(None));
    };
    let process_key = crate::observe::privacy::ProcessKey::default();
    let privacy = crate::observe::privacy::Privacy::new(
        cfg.logging.client_ip,
        cfg.logging.hash_key.as_ref().map_or(&process_key.0[..], |k| k.expose().as_bytes()),
    );
    crate::observe::audit::CliTrail::open(audit, privacy)
        .map(|t| CommandTrail(Some(Arc::new(t))))
        .map_err(|e| format!("audit: {e}"))
}

/// `secrets`: only the config's `secrets:` and `store:` sections are needed (a secret can be put before
/// the config that refers to it loads); the audit trail is used when the whole config loads.
fn secrets(path: Option<&Path>, command: crate::secret::cli::SecretsCommand) -> Result<(), String> {
    if !command.needs_config() {
        return crate::secret::cli::run(None, None, command, &crate::events::Emitter::none());
    }
    let path = path.ok_or("give the config file with -c")?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file `{}`: {}", path.display(), e.kind()))?;
    let (secrets, store) = config::secret_sections(&text);
    let (secrets, store) = (secrets?, store?);
    let trail = match config::parse(&text, path) {
        Ok(cfg) => command_trail(&cfg)?,
        Err(e) => {
            // Typically a `${store:NAME}` not stored yet: the change is made, but the trail the config
            // names cannot be opened without loading the whole config.
            if text.lines().any(|l| l.starts_with("audit:")) {
                eprintln!("note: not recorded in the audit trail: the config does not load yet ({e})");
            }
            CommandTrail(None)
        }
    };
    crate::secret::cli::run(secrets.as_ref(), store.as_ref().map(|s| s.sqlite.as_path()), command, &trail.emitter())?;
    trail.check()
}

/// The api_key authenticator `keys` works on: the one named, or the only one.
fn find_api_key(
    cfg: &config::file::FileConfig,
    name: Option<&str>,
) -> Result<(String, crate::authn::api_key::ApiKeyConfig), String> {
    let candidates: Vec<_> = cfg
        .authenticators
        .iter()
        .filter_map(|(n, a)| a.api_key.as_ref().map(|k| (n.clone(), k.clone())))
        .filter(|(n, _)| name.is_none_or(|want| want == n))
        .collect();
    match candidates.len() {
        1 => candidates.into_iter().next().ok_or_else(String::new),
        0 => Err("no api_key authenticator found in the config".into()),
        _ => Err("several api_key authenticators: choose one with --authenticator".into()),
    }
}

fn usage(e: &ConfigError) -> ExitCode {
    eprintln!("portcullis: {e}");
    ExitCode::from(64)
}

fn check(path: &Path) -> ExitCode {
    match config::load_and_compile(path, &Lasting::default(), None) {
        Ok(rt) => {
            println!("{}: configuration is valid", path.display());
            for l in &rt.listeners {
                println!(
                    "listener {} on {} ({})",
                    l.name,
                    l.address,
                    if l.tls.is_some() {
                        "TLS"
                    } else if l.redirect_https_port.is_some() {
                        "plain, redirects to HTTPS, refuses credentials"
                    } else if l.refuse_plain {
                        "plain, refuses every request"
                    } else {
                        "plain"
                    }
                );
            }
            println!("connection guards: {}", rt.guard.describe());
            print!("{}", rt.describe_routes());
            if let Ok((cfg, _)) = config::load(path) {
                for warning in config::lint::lints(&cfg) {
                    println!("warning: {warning}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Raises the soft open-file limit to the hard one: every connection is a file descriptor, and a soft
/// default of 1024 would refuse connections far below `max_connections`. Logs the limit, and warns
/// when it is below `max_connections` (plus room for upstream connections, files and listeners).
fn raise_open_file_limit(max_connections: usize) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            return;
        }
    };
    let wanted = (max_connections as u64).saturating_add(256);
    if limit < wanted {
        tracing::warn!(limit, max_connections, "the open-file limit is below what max_connections may need");
    } else {
        tracing::info!(limit, "open-file limit");
    }
}

fn serve(cfg: config::file::FileConfig, path: Option<PathBuf>, quickstart: bool) -> ExitCode {
    let lasting = Lasting { metrics: Arc::new(Metrics::new()), ..Lasting::default() };
    if let Err(e) = lasting.live.start() {
        tracing::warn!(error = %e, "live statistics cannot start a thread; the dashboard's figures stay still");
    }
    let text_path = path.clone().unwrap_or_else(|| PathBuf::from("examples/quickstart.yaml (built in)"));
    let runtime = match config::compile::compile(&cfg, &lasting, None) {
        Ok(rt) => rt,
        Err(e) => {
            let text = path
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_else(|| super::cli::QUICKSTART.to_owned());
            return usage(&e.locate(&text, &text_path));
        }
    };
    let _log = match crate::observe::init_logging(&runtime.log_level, cfg.logging.access_log_file.as_deref()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("portcullis: logging.access_log_file: cannot open it: {e}");
            return ExitCode::from(64);
        }
    };
    raise_open_file_limit(runtime.limits.max_connections);
    // One worker: a current-thread runtime runs every task on the main thread, without the
    // work-stealing scheduler's cross-thread wake-ups (the accept loop would otherwise sit on a second
    // thread). Blocking work (SQLite, file reads) still goes to the blocking pool either way.
    let mut builder = match runtime.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(w) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(w);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all();
    let tokio_rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    if quickstart {
        print_quickstart();
        if let Some(a) = &cfg.audit {
            let public = a.file.with_file_name("audit.pub");
            println!(
                "Audit trail (signed, hash-chained; every security event too): {}\nVerify it with:\n  \
                 portcullis audit verify {} --key {}\n",
                a.file.display(),
                a.file.display(),
                public.display()
            );
        }
    }
    let shared = Arc::new(Shared { runtime: arc_swap::ArcSwap::from_pointee(runtime), lasting });
    match tokio_rt.block_on(crate::server::run(shared, path, quickstart)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway failed");
            eprintln!("portcullis: {e}");
            ExitCode::from(70)
        }
    }
}

/// The quickstart's audit trail: a new directory under the temporary directory, with a signing key made
/// now (`audit.key`, its public half `audit.pub`) and the trail `audit.log`, named when the gateway
/// starts along with the command that verifies it.
fn quickstart_audit(cfg: &mut config::file::FileConfig) -> Result<(), String> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let dir = std::env::temp_dir().join(format!("portcullis-quickstart-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("`{}`: {e}", dir.display()))?;
    let key = dir.join("audit.key");
    crate::observe::audit::cli::keygen(&key, Some(&dir.join("audit.pub")))?;
    let yaml = format!(
        "file: {}\nsigning_key: ${{file:{}}}\ncheckpoint_every: 20\ncheckpoint_interval: 5s\nsecurity_events: true\n",
        dir.join("audit.log").display(),
        key.display()
    );
    let audit: crate::observe::audit::AuditConfig = serde_yaml_ng::from_str(&yaml).map_err(|e| e.to_string())?;
    cfg.audit = Some(audit);
    Ok(())
}

fn print_quickstart() {
    println!(
        "\nPortcullis quickstart\n\
         \n  HTTPS  https://127.0.0.1:8443   (self-signed certificate, generated now)\
         \n  HTTP   http://127.0.0.1:8080    (redirects to HTTPS)\
         \n  admin  http://127.0.0.1:9901    (/metrics, /healthz, /admin/v1, /admin/ui: token below)\
         \n\nTry:\
         \n  curl -k https://127.0.0.1:8443/echo/hello\
         \n  curl -k --http2 -X POST -H 'content-type: application/json' -d '{{\"hi\":1}}' https://127.0.0.1:8443/echo/post\
         \n  curl -k https://127.0.0.1:8443/users/42\
         \n  curl -k -i https://127.0.0.1:8443/private/data         # 401: needs an API key\
         \n  curl -k -H 'X-API-Key: pcs_vukq26u5_67m2su4ux6jqs7q4fnbjkz6tyifqqjz2cotjxva' https://127.0.0.1:8443/private/data\
         \n  curl -k -i -X DELETE -H 'X-API-Key: pcs_vukq26u5_67m2su4ux6jqs7q4fnbjkz6tyifqqjz2cotjxva' https://127.0.0.1:8443/private/data  # 403: needs admin\
         \n  curl -k -X DELETE -H 'X-API-Key: pcs_lkxqo2sd_dxpgsvs7zhxelocag2yx37sgxjglhgmpp6il2sa' https://127.0.0.1:8443/private/data  # the admin key\
         \n  curl -k -H 'X-API-Key: pcs_vukq26u5_67m2su4ux6jqs7q4fnbjkz6tyifqqjz2cotjxva' https://127.0.0.1:8443/users/quickstart-demo/profile\
         \n  curl -k -i -H 'X-API-Key: pcs_vukq26u5_67m2su4ux6jqs7q4fnbjkz6tyifqqjz2cotjxva' https://127.0.0.1:8443/users/someone-else/profile  # 403\
         \n  curl -sk -o /dev/null -w '%{{http_code}} ' 'https://127.0.0.1:8443/limited/[1-20]'  # 2/s, burst 5: then 429s\
         \n  curl -k \"https://127.0.0.1:8443/echo/search?q=1'%20OR%20'1'='1\"  # 403: SQL injection blocked\
         \n  curl -k \"https://127.0.0.1:8443/echo/search?q=O'Brien\"  # 200: not an attack\
         \n  curl -k -H 'content-type: application/json' -d '{{\"item\":\"tea\",\"quantity\":\"two\"}}' https://127.0.0.1:8443/orders  # 400: OpenAPI\
         \n  curl -k -i https://127.0.0.1:8443/nowhere          # 404 problem+json\
         \n  curl -k -i 'https://127.0.0.1:8443/echo/%2e%2e/x'   # 400: dot segments refused\
         \n  curl -i http://127.0.0.1:8080/echo/hello           # 308 to HTTPS\
         \n  curl -s http://127.0.0.1:9901/metrics | head\
         \n\nThe same config is examples/quickstart.yaml: `portcullis run -c examples/quickstart.yaml`.\n"
    );
}
