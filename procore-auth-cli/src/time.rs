//! Times for people: UTC timestamps and rough durations, without a date library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-11-23T10:04:05Z`.
pub(crate) fn utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `in 1h 29m 58s` or `5m 2s ago`, from `now`.
pub(crate) fn relative(time: SystemTime, now: SystemTime) -> String {
    match time.duration_since(now) {
        Ok(ahead) => format!("in {}", duration(ahead)),
        Err(behind) => format!("{} ago", duration(behind.duration())),
    }
}

/// `2026-11-23T10:04:05Z (in 1h 29m 58s)`.
pub(crate) fn utc_and_relative(time: SystemTime, now: SystemTime) -> String {
    format!("{} ({})", utc(time), relative(time, now))
}

/// `1h 29m 58s`, `2d 3h 0m 0s`, `0s`: whole seconds.
pub(crate) fn duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m {s}s"),
    }
}

/// Howard Hinnant's `civil_from_days` for days since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(utc(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(utc(at(1_700_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(utc(at(4_102_444_799)), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn durations_and_relative_times() {
        assert_eq!(duration(Duration::from_millis(900)), "0s");
        assert_eq!(duration(Duration::from_secs(302)), "5m 2s");
        assert_eq!(duration(Duration::from_secs(5398)), "1h 29m 58s");
        assert_eq!(
            duration(Duration::from_secs(2 * 86_400 + 3 * 3600)),
            "2d 3h 0m 0s"
        );
        assert_eq!(relative(at(1_000_090), at(1_000_000)), "in 1m 30s");
        assert_eq!(relative(at(1_000_000), at(1_000_090)), "1m 30s ago");
    }
}
