//! `portcullis bans -c CONFIG add|list|remove`: bans in the config's `store:` file. A running gateway
//! on the same store picks changes up within about a second.

use super::bans::{now_ms, Ban, BanStore, Bans, RedisBans, Target};
use crate::events::{Emitter, Event, Kind};
use crate::fleet::{Fleet, RedisConfig};
use crate::store::StoreConfig;
use crate::units::parse_duration;
use clap::{ArgGroup, Subcommand};

#[derive(Subcommand)]
pub enum BansCommand {
    /// Ban an address, a prefix or a principal for a while; prints the ban's id.
    #[command(group(ArgGroup::new("target").required(true).args(["ip", "prefix", "principal"])))]
    Add {
        /// One address, e.g. 192.0.2.1 or 2001:db8::1.
        #[arg(long)]
        ip: Option<String>,
        /// A CIDR prefix, e.g. 2001:db8::/48.
        #[arg(long)]
        prefix: Option<String>,
        /// `<method>:<id>`: api_key, jwt, introspection, mtls or signature, and the principal's id.
        #[arg(long)]
        principal: Option<String>,
        /// How long, e.g. 30s, 15m, 1h, 7d.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (shown by `list`).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The bans in force (with `--all`, also those expired in the last day).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Lift a ban now.
    Remove { id: i64 },
}

/// Where the CLI writes: the fleet's Redis (`redis.share_bans: true`) or the `store:` file.
pub enum Backend {
    Sqlite(BanStore),
    Redis(Box<RedisBans>),
}

impl Backend {
    /// The config's ban store: Redis with `redis.share_bans: true`, else the `store:` file.
    pub fn open(store: Option<&StoreConfig>, redis: Option<&RedisConfig>) -> Result<Backend, String> {
        Ok(match redis.filter(|r| r.share_bans) {
            Some(r) => Backend::Redis(Box::new(RedisBans::new(&Fleet::new(r)?))),
            None => {
                let store = store.ok_or(
                    "the config has no `store:`, so bans live in the gateway's memory only; add `store: { sqlite: PATH }` \
                     (or `redis:` with `share_bans: true`)",
                )?;
                Backend::Sqlite(BanStore::open(&store.sqlite).map_err(|e| e.to_string())?)
            }
        })
    }

    fn add(&mut self, target: &Target, until: i64, reason: &str) -> Result<i64, String> {
        self.add_from(target, until, reason, "manual")
    }

    /// Adds a ban with its `source` (`manual`, `auto`; kept by an import).
    pub fn add_from(&mut self, target: &Target, until: i64, reason: &str, source: &str) -> Result<i64, String> {
        match self {
            Backend::Sqlite(s) => s.add(target, until, reason, source).map_err(|e| e.to_string()),
            Backend::Redis(r) => r.add(target, until, reason, source),
        }
    }

    /// Bans not expired at `now` (or all kept ones).
    pub fn list(&mut self, now: Option<i64>) -> Result<Vec<super::bans::Ban>, String> {
        match self {
            Backend::Sqlite(s) => s.list(now).map_err(|e| e.to_string()),
            Backend::Redis(r) => r.list(now),
        }
    }

    fn remove(&mut self, id: i64) -> Result<bool, String> {
        match self {
            Backend::Sqlite(s) => s.remove(id).map_err(|e| e.to_string()),
            Backend::Redis(r) => r.remove(id),
        }
    }
}

/// A ban event (as the gateway writes them) marked as the command's: who ran it, and why.
fn by_command(event: Event, why: &str) -> Event {
    let event = event.attr("actor", crate::events::actor()).attr("via", "cli");
    if why.is_empty() {
        event
    } else {
        event.attr("ban_reason", why.to_owned())
    }
}

/// Runs `cmd` on the config's Redis (with `redis.share_bans: true`) or store; changes are emitted to
/// `audit` (the config's audit trail, or nothing).
pub fn run(
    store: Option<&StoreConfig>,
    redis: Option<&RedisConfig>,
    cmd: BansCommand,
    audit: &Emitter,
) -> Result<(), String> {
    let mut bans = Backend::open(store, redis)?;
    match cmd {
        BansCommand::Add { ip, prefix, principal, duration, reason } => {
            let target = match (ip, prefix, principal) {
                (Some(ip), None, None) => Target::parse("ip", &ip)?,
                (None, Some(p), None) => Target::parse("prefix", &p)?,
                (None, None, Some(p)) => Target::parse("principal", &p)?,
                _ => return Err("give one of --ip, --prefix or --principal".into()),
            };
            let d = parse_duration(&duration)?;
            if d.is_zero() {
                return Err("--for must be positive".into());
            }
            let until = now_ms().saturating_add(d.as_millis().min(i64::MAX as u128) as i64);
            let id = bans.add(&target, until, &reason)?;
            let ban = Ban { id, target, reason, source: "manual".into(), created_at: now_ms(), expires_at: until };
            audit.emit(by_command(Bans::ban_event(Kind::BanSet, "command", &ban), &ban.reason));
            eprintln!("banned until {}", utc(until));
            println!("{id}");
        }
        BansCommand::List { all } => {
            let now = now_ms();
            let list = bans.list(if all { None } else { Some(now) })?;
            println!(
                "{:<6} {:<10} {:<40} {:<21} {:<10} {:<7} reason",
                "id", "kind", "target", "expires (UTC)", "left", "source"
            );
            for b in list {
                let (kind, target) = match &b.target {
                    Target::Ip(ip) => ("ip", ip.to_string()),
                    Target::Prefix(n) => ("prefix", n.to_string()),
                    Target::Principal(p) => ("principal", p.clone()),
                };
                let left = if b.expires_at > now { left(b.expires_at - now) } else { "expired".into() };
                println!(
                    "{:<6} {:<10} {:<40} {:<21} {:<10} {:<7} {}",
                    b.id,
                    kind,
                    target,
                    utc(b.expires_at),
                    left,
                    b.source,
                    b.reason
                );
            }
        }
        BansCommand::Remove { id } => {
            let ban = bans.list(None)?.into_iter().find(|b| b.id == id);
            if !bans.remove(id)? {
                return Err(format!("no ban {id}"));
            }
            let event = match &ban {
                Some(b) => Bans::ban_event(Kind::BanExpired, "lifted", b),
                None => Event::new(Kind::BanExpired, "lifted").rule(id.to_string()),
            };
            audit.emit(by_command(event, ""));
            eprintln!("ban {id} lifted");
        }
    }
    Ok(())
}

/// `2026-11-29T14:20:05Z`.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `1h02m`, `59s`.
fn left(ms: i64) -> String {
    let s = (ms + 999) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_962_005_000), "2026-11-29T14:20:05Z");
        assert_eq!(left(1), "1s");
        assert_eq!(left(3_723_000), "1h02m");
    }
}
