//! `portcullis tokens -c CONFIG revoke|list|unrevoke`: the revoked JWT ids, in the config's Redis (with
//! `redis:`) or `store:` file. Running gateways poll the list every 250 ms.

use super::{check_text, Entry, RedisRevoked, SqliteRevoked};
use crate::authn::jwt::JwtConfig;
use crate::events::{Emitter, Event, Kind};
use crate::fleet::{Fleet, RedisConfig};
use crate::store::StoreConfig;
use crate::units::parse_duration;
use clap::{ArgGroup, Subcommand};
use std::io::Read;

/// How long a revocation lasts when neither `--until` nor `--for` is given and the issuer has no
/// `max_lifetime` to go by.
const DEFAULT_FOR: i64 = 24 * 3600;

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Revoke the JWT with this `jti` (of one issuer, or of any); gateways refuse it within a second.
    #[command(group(ArgGroup::new("which").required(true).args(["jti", "token_stdin"])))]
    Revoke {
        /// The token's `jti` claim.
        #[arg(long)]
        jti: Option<String>,
        /// Read the token itself on stdin and take its `jti`, `iss` and `exp` (until `exp` plus leeway).
        /// Its signature is not checked: it only names what to refuse.
        #[arg(long, conflicts_with_all = ["jti", "issuer", "until", "duration"])]
        token_stdin: bool,
        /// The token's issuer (`iss`), as a jwt authenticator of the config has it; default: any issuer.
        #[arg(long)]
        issuer: Option<String>,
        /// Until when: unix seconds or `2026-12-01T00:00:00Z` (the token's `exp` is enough). Default: the
        /// issuer's `max_lifetime` (plus leeway) from now, or 24h when an issuer concerned has none.
        #[arg(long, conflicts_with = "duration")]
        until: Option<String>,
        /// How long from now instead, e.g. 12h, 7d.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// Why (recorded in the audit trail).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The revoked ids in force (with `--all`, also ended ones still kept).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Lift a revocation.
    Unrevoke {
        #[arg(long)]
        jti: String,
        /// The issuer it was revoked for (none: the any-issuer entry).
        #[arg(long)]
        issuer: Option<String>,
    },
}

enum Backend {
    Sqlite(SqliteRevoked),
    Redis(Box<RedisRevoked>),
}

impl Backend {
    fn revoke(&mut self, e: &Entry, reason: &str) -> Result<(), String> {
        match self {
            Backend::Sqlite(s) => s.revoke(e, reason).map_err(|e| e.to_string()),
            Backend::Redis(r) => r.revoke(e),
        }
    }

    fn unrevoke(&mut self, issuer: Option<&str>, jti: &str) -> Result<bool, String> {
        match self {
            Backend::Sqlite(s) => s.unrevoke(issuer, jti).map_err(|e| e.to_string()),
            Backend::Redis(r) => r.unrevoke(issuer, jti),
        }
    }

    fn list(&mut self, now: Option<i64>) -> Result<Vec<Entry>, String> {
        match self {
            Backend::Sqlite(s) => s.list(now).map_err(|e| e.to_string()),
            Backend::Redis(r) => r.list(now),
        }
    }
}

fn now() -> i64 {
    super::now()
}

/// Unix seconds, or an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || format!("`{s}` is not a time: write unix seconds or 2026-12-01T00:00:00Z");
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    // UTC only (`Z`), read by the one RFC 3339 parser (which refuses impossible dates).
    if s.len() != 20 || !s.ends_with('Z') {
        return Err(bad());
    }
    crate::units::parse_rfc3339(s).map(|ms| ms.div_euclid(1000)).map_err(|_| bad())
}

/// How long until `t`: `1h02m`, `59s`.
fn left(secs: i64) -> String {
    match secs {
        ..=0 => "ended".into(),
        1..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// The default end of a revocation: long enough that every token of the issuer(s) concerned that
/// exists now has expired by then (`max_lifetime` plus `leeway`), else [`DEFAULT_FOR`].
fn default_until(jwts: &[(String, JwtConfig)], issuer: Option<&str>) -> (i64, Option<String>) {
    let concerned: Vec<&JwtConfig> =
        jwts.iter().map(|(_, c)| c).filter(|c| issuer.is_none_or(|i| c.issuer == i)).collect();
    let lifetimes: Option<Vec<i64>> = concerned
        .iter()
        .map(|c| c.max_lifetime.map(|m| (m.0.as_secs() + c.leeway.0.as_secs()).min(i64::MAX as u64 / 2) as i64))
        .collect();
    match lifetimes.and_then(|l| l.into_iter().max()) {
        Some(secs) => (now().saturating_add(secs), None),
        None => (
            now() + DEFAULT_FOR,
            Some(
                "an issuer concerned has no max_lifetime: revoked for 24h; a token living longer comes back then \
                 (give --until with the token's exp)"
                    .into(),
            ),
        ),
    }
}

/// Runs `cmd` on the config's Redis (with `redis:`) or store; changes are recorded in `audit`.
pub fn run(
    store: Option<&StoreConfig>,
    redis: Option<&RedisConfig>,
    jwts: &[(String, JwtConfig)],
    cmd: TokensCommand,
    audit: &Emitter,
) -> Result<(), String> {
    let check_issuer = |issuer: Option<&str>| -> Result<(), String> {
        match issuer {
            Some(i) if !jwts.iter().any(|(_, c)| c.issuer == i) => {
                check_text("--issuer", i)?;
                Err(format!("no jwt authenticator of the config has the issuer `{i}`"))
            }
            _ => Ok(()),
        }
    };
    // A presented token names the entry (read before anything is opened).
    let cmd = match cmd {
        TokensCommand::Revoke { token_stdin: true, reason, .. } => {
            let mut text = String::new();
            std::io::stdin().take(1 << 20).read_to_string(&mut text).map_err(|e| e.to_string())?;
            let (jti, issuer, exp) = named_by(text.trim())?;
            let leeway = jwts.iter().find(|(_, c)| c.issuer == issuer).map_or(0, |(_, c)| c.leeway.0.as_secs() as i64);
            TokensCommand::Revoke {
                jti: Some(jti),
                token_stdin: false,
                issuer: Some(issuer),
                until: Some(exp.saturating_add(leeway).to_string()),
                duration: None,
                reason,
            }
        }
        other => other,
    };
    // Checked before anything is opened: a bad argument changes nothing.
    match &cmd {
        TokensCommand::Revoke { jti, issuer, .. } => {
            check_text("--jti", jti.as_deref().unwrap_or_default())?;
            check_issuer(issuer.as_deref())?;
        }
        TokensCommand::Unrevoke { jti, issuer } => {
            check_text("--jti", jti)?;
            check_issuer(issuer.as_deref())?;
        }
        TokensCommand::List { .. } => {}
    }
    let mut list = match redis {
        Some(r) => Backend::Redis(Box::new(RedisRevoked::new(&Fleet::new(r)?))),
        None => {
            let store = store.ok_or(
                "the config has neither `redis:` nor `store:`, so there is nowhere to keep revoked token ids; \
                 add `store: { sqlite: PATH }` (or `redis:` for a fleet)",
            )?;
            Backend::Sqlite(SqliteRevoked::open(&store.sqlite).map_err(|e| e.to_string())?)
        }
    };
    match cmd {
        TokensCommand::Revoke { jti, issuer, until, duration, reason, .. } => {
            let jti = jti.unwrap_or_default();
            let until = match (until, duration) {
                (Some(t), _) => parse_time(&t)?,
                (None, Some(d)) => {
                    let d = parse_duration(&d)?;
                    now().saturating_add(d.as_secs().min(i64::MAX as u64 / 2) as i64)
                }
                (None, None) => {
                    let (until, warning) = default_until(jwts, issuer.as_deref());
                    if let Some(w) = warning {
                        eprintln!("warning: {w}");
                    }
                    until
                }
            };
            if until <= now() {
                return Err("that time has passed: a token past it has expired anyway".into());
            }
            let entry = Entry { issuer, jti, until };
            list.revoke(&entry, &reason)?;
            audit.emit(event("token_revoked", &entry, &reason));
            eprintln!("revoked until {} ({} from now)", entry.until, left(entry.until - now()));
        }
        TokensCommand::List { all } => {
            let t = now();
            println!("{:<40} {:<12} {:<10} jti", "issuer", "until", "left");
            for e in list.list(if all { None } else { Some(t) })? {
                println!(
                    "{:<40} {:<12} {:<10} {}",
                    e.issuer.as_deref().unwrap_or("*"),
                    e.until,
                    left(e.until - t),
                    e.jti
                );
            }
        }
        TokensCommand::Unrevoke { jti, issuer } => {
            if !list.unrevoke(issuer.as_deref(), &jti)? {
                return Err(match issuer {
                    Some(i) => format!("`{jti}` is not revoked for issuer `{i}`"),
                    None => format!("`{jti}` is not revoked for any issuer (give --issuer for an issuer's entry)"),
                });
            }
            audit.emit(event("token_unrevoked", &Entry { issuer, jti, until: now() }, ""));
            eprintln!("revocation lifted");
        }
    }
    Ok(())
}

/// The `jti`, `iss` and `exp` a JWT names (its signature unchecked: it only says what to refuse).
fn named_by(token: &str) -> Result<(String, String, i64), String> {
    use base64::Engine;
    let payload = token.split('.').nth(1).ok_or("that is not a JWT (three dot-separated parts)")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the token's payload is not base64url")?;
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| "the token's payload is not a JSON object")?;
    let text = |name: &str| match claims.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        _ => Err(format!("the token has no `{name}` string; give --jti and --issuer instead")),
    };
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_f64)
        .filter(|e| e.is_finite() && e.abs() < 1e15)
        .ok_or("the token has no numeric `exp`; give --jti and --until instead")?;
    Ok((text("jti")?, text("iss")?, exp as i64))
}

/// The `admin.action` record of a change, by the OS user who ran the command.
fn event(action: &'static str, e: &Entry, why: &str) -> Event {
    let ev = Event::new(Kind::AdminAction, action)
        .rule(e.jti.clone())
        .principal(crate::events::actor())
        .attr("issuer", e.issuer.clone().unwrap_or_else(|| "*".into()))
        .attr("until", e.until)
        .attr("via", "cli");
    if why.is_empty() {
        ev
    } else {
        ev.attr("revoke_reason", why.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_entry() {
        use base64::Engine;
        let enc = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let t = format!(
            "{}.{}.sig",
            enc(serde_json::json!({"alg": "HS256"})),
            enc(serde_json::json!({"jti": "j", "iss": "i", "exp": 5}))
        );
        assert_eq!(named_by(&t), Ok(("j".into(), "i".into(), 5)));
        let no_jti = format!("h.{}.s", enc(serde_json::json!({"iss": "i", "exp": 5})));
        assert!(named_by(&no_jti).unwrap_err().contains("`jti`"));
        let no_exp = format!("h.{}.s", enc(serde_json::json!({"jti": "j", "iss": "i"})));
        assert!(named_by(&no_exp).unwrap_err().contains("`exp`"));
        assert!(named_by("opaque").is_err());
        assert!(named_by("a.%%%.c").is_err());
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1795962005"), Ok(1_795_962_005));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Ok(951_782_400));
        assert_eq!(parse_time("2026-11-29T14:20:05Z"), Ok(1_795_962_005));
        for bad in ["", "tomorrow", "2026-11-29 14:20:05Z", "2026-13-01T00:00:00Z", "2026-11-29T14:20:05+01:00"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(left(59), "59s");
        assert_eq!(left(3723), "1h02m");
        assert_eq!(left(0), "ended");
    }
}
