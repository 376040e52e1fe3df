//! Wall-clock time as flowgate's records carry it: seconds or milliseconds
//! since the Unix epoch (certificate expiry, uptimes, event stamps), and
//! RFC 3339 text as Docker writes it. Time that only measures intervals
//! uses `Instant` instead.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch (0 if the clock is before it).
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Milliseconds since the epoch: what every live feed stamps.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// (year, month 1-12, day 1-31) of a day counted from 1970-01-01
/// (Howard Hinnant's civil-from-days algorithm).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
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

/// Seconds since the epoch of an RFC 3339 time such as Docker's
/// `2026-11-26T01:02:03.456Z`; None for the zero time Docker writes for
/// "never".
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = t.unix_timestamp();
    (secs > 0).then_some(secs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn engine_times_are_read_as_rfc3339() {
        assert_eq!(
            super::parse_rfc3339("2026-11-25T22:36:49.123456789Z"),
            Some(1_795_646_209)
        );
        assert_eq!(super::parse_rfc3339("0001-01-01T00:00:00Z"), None);
    }
}
