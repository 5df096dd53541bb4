//! UTC timestamps for the secrets section: now, RFC 3339 in and out (no time zone database needed).

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `2026-11-29T14:20:05Z`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// RFC 3339 date-time (`2026-12-31T23:59:59Z`, fractional seconds and `+HH:MM` offsets accepted) to
/// milliseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let bad = || format!("`{text}` is not an RFC 3339 date-time such as 2026-12-31T23:59:59Z");
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let s = text.get(r).ok_or_else(bad)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<i64>().map_err(|_| bad())
    };
    let (y, mo, d, h, mi, s) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    // 2026-02-31 is refused rather than read as March 3rd.
    if !(1..=12).contains(&mo) || !(1..=month_days).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    let mut rest = &text[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let first3 = format!("{:0<3}", &frac[..digits.min(3)]);
        ms = first3.parse::<i64>().map_err(|_| bad())?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && o.as_bytes()[3] == b':' => {
            // Two digits each: `parse` alone would take `+5` or `-1` as an hour.
            let two = |t: &str| -> Result<i64, String> {
                if t.len() == 2 && t.bytes().all(|c| c.is_ascii_digit()) {
                    t.parse::<i64>().map_err(|_| bad())
                } else {
                    Err(bad())
                }
            };
            let (oh, om) = (two(&o[1..3])?, two(&o[4..6])?);
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
        _ => return Err(bad()),
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60;
    Ok(secs * 1000 + ms)
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
