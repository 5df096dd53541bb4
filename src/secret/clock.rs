//! UTC timestamps for the secrets section: now, and RFC 3339 in and out (`crate::units`).

pub use crate::units::{parse_rfc3339, utc};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2026-11-29T14:20:05Z"), Ok(1_795_962_005_000));
        assert_eq!(parse_rfc3339("2026-11-29T15:20:05.5+01:00"), Ok(1_795_962_005_500));
        assert_eq!(utc(1_795_962_005_000), "2026-11-29T14:20:05Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert!(parse_rfc3339("2026-11-29").is_err());
        assert!(parse_rfc3339("2026-13-29T14:20:05Z").is_err());
        assert!(parse_rfc3339("2026-11-29T14:20:05").is_err());
        assert!(parse_rfc3339("2026-11-29T14:20:05+1").is_err());
        // Days that do not exist in their month, and offsets that are not two digits each.
        assert!(parse_rfc3339("2026-02-29T00:00:00Z").is_err());
        assert!(parse_rfc3339("2026-02-31T00:00:00Z").is_err());
        assert!(parse_rfc3339("2026-04-31T00:00:00Z").is_err());
        assert_eq!(parse_rfc3339("2028-02-29T00:00:00Z").map(utc).as_deref(), Ok("2028-02-29T00:00:00Z"));
        assert!(parse_rfc3339("2100-02-29T00:00:00Z").is_err());
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_ok());
        assert!(parse_rfc3339("2026-11-29T14:20:05++5:00").is_err());
        assert!(parse_rfc3339("2026-11-29T14:20:05+-1:00").is_err());
        assert!(parse_rfc3339("2026-11-29T14:20:05+01:+5").is_err());
        assert!(parse_rfc3339("2026-11-29T14:20:05+24:00").is_err());
        assert!(parse_rfc3339("2026-11-29T14:20:05+é:00").is_err());
    }
}
