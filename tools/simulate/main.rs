//! The labelled-traffic simulator for the anomaly detectors (issue 16). Built only with `--features
//! sim-clock`. See `docs/simulate.md`.
//!
//! A seeded population of API clients lives its days in simulated time; attacks of every class the
//! detectors claim to catch are injected into it, each labelled with its entities and window. The
//! stream goes either straight into the detection engine (`--in-process`) or through a real gateway on
//! loopback (`--gateway`), and the alerts are scored against the labels.

mod gateway;
mod inproc;
mod model;
mod score;
mod traffic;

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use traffic::{Class, Intensity, Population, Scenario};

#[derive(Parser)]
#[command(name = "portcullis-simulate", about = "Labelled traffic for the anomaly detectors: generate, replay, score")]
struct Args {
    /// The run's seed: the same seed and sizes give the same traffic.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Normal clients.
    #[arg(long, default_value_t = 200)]
    clients: u32,
    /// Simulated hours.
    #[arg(long, default_value_t = 30)]
    hours: u32,
    /// Attacks per class and intensity.
    #[arg(long, default_value_t = 1)]
    attacks: u32,
    /// Attack classes to inject, comma-separated ids (default: all).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Intensities: high, medium, low (low-and-slow); default all.
    #[arg(long, value_delimiter = ',')]
    intensities: Vec<String>,

    /// Drive the detection engine in this process.
    #[arg(long)]
    in_process: bool,
    /// In process: the engine's sensitivity (1.0 is the default).
    #[arg(long, default_value_t = 1.0)]
    sensitivity: f64,

    /// Send the traffic through the gateway at this URL (http://127.0.0.1:PORT).
    #[arg(long)]
    gateway: Option<String>,
    /// The gateway's admin listener (http://127.0.0.1:PORT), where the alerts are read.
    #[arg(long)]
    admin: Option<String>,
    /// An admin token (role viewer or above).
    #[arg(long)]
    admin_token: Option<String>,
    /// Where the world (the upstream) listens: the address the written config names.
    #[arg(long, default_value = "127.0.0.1:9901")]
    world: String,
    /// Through the gateway: do not read alerts (checks the traffic before the alerts API exists).
    #[arg(long)]
    skip_alerts: bool,
    /// Connections to the gateway (requests in flight).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,

    /// Write the gateway config for this population to FILE and exit.
    #[arg(long)]
    write_config: Option<String>,
    /// The anomaly mode in the written config: monitor or enforce.
    #[arg(long, default_value = "enforce")]
    mode: String,
    /// Replaces the written config's whole `anomaly:` section (YAML text, top-level key included).
    #[arg(long)]
    anomaly_yaml: Option<String>,
    /// The written config's state store (bans, admin tokens); default `state.db` beside the config.
    #[arg(long)]
    state_db: Option<String>,

    /// The report as JSON.
    #[arg(long)]
    json: bool,
    /// Exit 1 when a target of issue 16 is missed (scaled to the run's size).
    #[arg(long)]
    assert_targets: bool,
    /// Write every alert as a JSON line to FILE.
    #[arg(long)]
    alerts_out: Option<String>,
    /// Write every false alarm (an alert that matches no attack) as a JSON line to FILE.
    #[arg(long)]
    false_alarms_out: Option<String>,
    /// In process: write every record (address, principal, route, status, bytes, attack label) as a
    /// JSON line to FILE.
    #[arg(long)]
    records_out: Option<String>,
    /// Write the population (each client's role, time zone, devices, daily life) as JSON to FILE.
    #[arg(long)]
    population_out: Option<String>,
}

fn parse_list<T: Copy>(names: &[String], all: &[T], id: impl Fn(T) -> String) -> Result<Vec<T>, String> {
    if names.is_empty() {
        return Ok(all.to_vec());
    }
    names
        .iter()
        .map(|n| all.iter().copied().find(|x| id(*x) == *n).ok_or_else(|| format!("unknown name: {n}")))
        .collect()
}

fn scenario(a: &Args) -> Result<Scenario, String> {
    let mut s = Scenario::new(a.seed, a.clients, a.hours, a.attacks);
    s.classes = parse_list(&a.classes, &Class::ALL, |c| c.id().to_owned())?;
    s.intensities = parse_list(&a.intensities, &Intensity::ALL, |i| format!("{i:?}").to_ascii_lowercase())?;
    if s.clients == 0 || s.hours == 0 {
        return Err("--clients and --hours must be at least 1".into());
    }
    Ok(s)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis-simulate: {e}");
            ExitCode::from(2)
        }
    }
}

fn write_false(args: &Args, scorer: &score::Scorer) -> Result<(), String> {
    let Some(p) = &args.false_alarms_out else { return Ok(()) };
    let lines: String = scorer.false_alarms().map(|s| serde_json::to_string(s).unwrap_or_default() + "\n").collect();
    std::fs::write(p, lines).map_err(|e| format!("{p}: {e}"))
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let pop = Arc::new(Population::new(scenario(args)?));
    let world: std::net::SocketAddr =
        args.world.parse().map_err(|_| format!("--world {}: expected IP:PORT", args.world))?;
    if let Some(path) = &args.write_config {
        let state = args
            .state_db
            .clone()
            .unwrap_or_else(|| std::path::Path::new(path).with_file_name("state.db").to_string_lossy().into_owned());
        let anomaly = args.anomaly_yaml.clone().unwrap_or_else(|| gateway::anomaly_section(&args.mode));
        let mut anomaly = anomaly;
        if !anomaly.is_empty() && !anomaly.ends_with('\n') {
            anomaly.push('\n');
        }
        std::fs::write(path, gateway::config(&pop, world, &state, &anomaly)).map_err(|e| format!("{path}: {e}"))?;
        // The simulated keys themselves, for a person (or a test) to send requests as a client.
        let keys: serde_json::Map<String, serde_json::Value> =
            pop.accounts.iter().map(|a| (a.principal.clone(), a.key.clone().into())).collect();
        let keys_path = format!("{path}.keys.json");
        std::fs::write(&keys_path, serde_json::Value::Object(keys).to_string())
            .map_err(|e| format!("{keys_path}: {e}"))?;
        eprintln!(
            "wrote {path} ({} keys declared by hash; the keys in {keys_path}), world at {world}",
            pop.accounts.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(p) = &args.population_out {
        std::fs::write(p, pop.describe().to_string()).map_err(|e| format!("{p}: {e}"))?;
    }
    let mut out: Option<std::fs::File> = match &args.alerts_out {
        Some(p) => Some(std::fs::File::create(p).map_err(|e| format!("{p}: {e}"))?),
        None => None,
    };
    let mut write_alert = |s: &score::Seen| {
        if let Some(f) = out.as_mut() {
            use std::io::Write;
            let _ = writeln!(f, "{}", serde_json::to_string(s).unwrap_or_default());
        }
    };
    let (report, enforce) = if args.in_process {
        let settings = portcullis::anomaly::Settings {
            sensitivity: args.sensitivity,
            seed: Some(args.seed),
            ..Default::default()
        };
        let mut records = match &args.records_out {
            Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(|e| format!("{p}: {e}"))?)),
            None => None,
        };
        let scorer =
            inproc::run(&pop, settings, &mut write_alert, records.as_mut().map(|w| w as &mut dyn std::io::Write));
        write_false(args, &scorer)?;
        (scorer.report(&pop, "in-process"), false)
    } else if let Some(gw) = &args.gateway {
        let gw = gateway::addr_of(gw)?;
        let admin = gateway::addr_of(args.admin.as_deref().ok_or("--gateway needs --admin")?)?;
        let token = args.admin_token.clone().ok_or("--gateway needs --admin-token")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let concurrency = args.concurrency;
        let skip_alerts = args.skip_alerts;
        let pop2 = pop.clone();
        let (mut scorer, errors, alerts) = rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(world).await.map_err(|e| format!("world on {world}: {e}"))?;
            eprintln!("world listening on {}", listener.local_addr().map_err(|e| e.to_string())?);
            let world_data =
                Arc::new(model::World::new(pop2.scenario.seed, pop2.accounts.iter().map(|a| a.role).collect()));
            tokio::spawn(gateway::serve_world(listener, world_data));
            let (scorer, errors) = gateway::send(pop2, gw, concurrency).await?;
            // The detector thread works off the request path: give it a moment to drain.
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            let alerts = if skip_alerts { Vec::new() } else { gateway::alerts(admin, &token).await? };
            Ok::<_, String>((scorer, errors, alerts))
        })?;
        if errors > 0 {
            eprintln!("{errors} requests got no answer from the gateway");
        }
        for s in alerts {
            write_alert(&s);
            scorer.on_alert(s);
        }
        write_false(args, &scorer)?;
        (scorer.report(&pop, "gateway"), args.mode == "enforce")
    } else {
        return Err("say --in-process, --gateway URL, or --write-config FILE".into());
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", report.table());
    }
    if args.assert_targets {
        let misses = report.misses(enforce);
        if !misses.is_empty() {
            for m in &misses {
                eprintln!("target missed: {m}");
            }
            return Ok(ExitCode::from(1));
        }
        eprintln!("all targets met");
    }
    Ok(ExitCode::SUCCESS)
}
