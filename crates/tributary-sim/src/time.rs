//! Timestamp helpers: fast ISO-8601 formatting and lenient parsing (milliseconds since the Unix
//! epoch are the internal representation).

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// Generated data is created at or after this instant: 2019-01-01T00:00:00Z.
pub(crate) const GEN_BASE_S: i64 = 1_546_300_800;
/// Generated data is created and updated at or before this instant: 2025-06-01T00:00:00Z. It is
/// also the reference date for ages (`child`, `grade`).
pub(crate) const GEN_END_S: i64 = 1_748_736_000;
pub(crate) const DAY_S: i64 = 86_400;

/// `(year, month, day)` of a day number counted from 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn push_digits(out: &mut String, value: i64, width: usize) {
    if !(0..10_000).contains(&value) {
        out.push_str(&format!("{value:0width$}"));
        return;
    }
    let v = value as u32;
    let digits = [
        b'0' + (v / 1000 % 10) as u8,
        b'0' + (v / 100 % 10) as u8,
        b'0' + (v / 10 % 10) as u8,
        b'0' + (v % 10) as u8,
    ];
    for &d in &digits[4 - width.min(4)..] {
        out.push(char::from(d));
    }
}

fn push_date(out: &mut String, days: i64) {
    let (y, m, d) = civil_from_days(days);
    push_digits(out, y, 4);
    out.push('-');
    push_digits(out, i64::from(m), 2);
    out.push('-');
    push_digits(out, i64::from(d), 2);
}

/// `YYYY-MM-DD` for a day number counted from 1970-01-01.
pub(crate) fn format_date(days: i64) -> String {
    let mut out = String::with_capacity(10);
    push_date(&mut out, days);
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ`, or `YYYY-MM-DDTHH:MM:SS.mmmZ` when the milliseconds are not zero.
pub(crate) fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let tod = secs.rem_euclid(DAY_S);
    let mut out = String::with_capacity(24);
    push_date(&mut out, secs.div_euclid(DAY_S));
    out.push('T');
    push_digits(&mut out, tod / 3600, 2);
    out.push(':');
    push_digits(&mut out, (tod / 60) % 60, 2);
    out.push(':');
    push_digits(&mut out, tod % 60, 2);
    if millis != 0 {
        out.push('.');
        push_digits(&mut out, millis, 3);
    }
    out.push('Z');
    out
}

/// Parses an instant: RFC 3339 with offset, a naive `YYYY-MM-DDTHH:MM:SS[.fff]` (read as UTC),
/// or a bare date (midnight UTC). Returns milliseconds since the epoch.
pub(crate) fn parse_instant(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_millis());
        }
    }
    parse_date(s).map(|d| {
        d.and_hms_opt(0, 0, 0)
            .expect("midnight is valid")
            .and_utc()
            .timestamp_millis()
    })
}

pub(crate) fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

/// Whole years from `birth` to `reference` (both day numbers).
pub(crate) fn years_between(birth_days: i64, reference_days: i64) -> i64 {
    let (by, bm, bd) = civil_from_days(birth_days);
    let (ry, rm, rd) = civil_from_days(reference_days);
    let mut years = ry - by;
    if (rm, rd) < (bm, bd) {
        years -= 1;
    }
    years
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        assert_eq!(format_ms(GEN_BASE_S * 1000), "2019-01-01T00:00:00Z");
        assert_eq!(format_ms(GEN_END_S * 1000), "2025-06-01T00:00:00Z");
        assert_eq!(format_ms(GEN_END_S * 1000 + 7), "2025-06-01T00:00:00.007Z");
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(-1), "1969-12-31");
        for ms in [
            0,
            951_782_400_123,
            GEN_BASE_S * 1000 + 86_399_999,
            -86_400_000,
        ] {
            assert_eq!(parse_instant(&format_ms(ms)), Some(ms), "{ms}");
            let chrono = DateTime::from_timestamp_millis(ms).unwrap();
            assert_eq!(
                format_ms(ms)[..19],
                chrono.format("%Y-%m-%dT%H:%M:%S").to_string()
            );
        }
        assert_eq!(
            parse_instant("2019-01-01T01:00:00+01:00"),
            Some(GEN_BASE_S * 1000)
        );
        assert_eq!(parse_instant("2019-01-01"), Some(GEN_BASE_S * 1000));
        assert_eq!(
            parse_instant("2019-01-01T00:00:00"),
            Some(GEN_BASE_S * 1000)
        );
        assert_eq!(parse_instant("yesterday"), None);
    }

    #[test]
    fn whole_years() {
        let d = |s: &str| {
            parse_date(s)
                .unwrap()
                .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
                .num_days()
        };
        assert_eq!(years_between(d("2007-06-01"), d("2025-06-01")), 18);
        assert_eq!(years_between(d("2007-06-02"), d("2025-06-01")), 17);
    }
}
