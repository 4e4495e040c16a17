//! Cron schedules: checking an `on.schedule` entry (five fields or a macro, an IANA time
//! zone, a cron that can fire at all) and deciding whether it is due in a given minute,
//! read on the wall clock of its zone, with a fixed rule at daylight-saving changes.
//!
//! The rule at the transitions (the one croner and OCPS follow): a cron with one fixed
//! minute and hour (`30 2 * * *`, `@daily`) runs once a day whatever the clocks do; when its
//! time is skipped (spring forward) it runs at the first minute after the gap, and when its
//! time happens twice (fall back) it runs the first time only. Any other cron (`*/15 * * *
//! *`, `@hourly`) follows the wall clock: skipped minutes do not run, minutes that happen
//! twice run twice.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;
use croner::{Cron, JobType};

/// The macros a schedule may use instead of five fields.
pub const CRON_MACROS: &[&str] = &[
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
];

/// Days searched for a date the cron matches: 28 years repeat every weekday and date
/// combination within 1901–2099 (leap days included).
const SEARCH_DAYS: i64 = 28 * 366;

/// Longest run of wall-clock minutes a transition may skip that is looked at for a
/// fixed-time cron (real zones skip at most a day, Samoa 2011).
const MAX_GAP_MINUTES: i64 = 24 * 60 + 1;

/// The cron, parsed; the error says what is wrong with it.
pub(crate) fn check_cron(expr: &str) -> Result<Cron, String> {
    let trimmed = expr.trim();
    if trimmed.starts_with('@') {
        if !CRON_MACROS.contains(&trimmed) {
            let hint = crate::diag::did_you_mean(trimmed, CRON_MACROS.iter().copied())
                .map(|h| format!("did you mean `{h}`?"))
                .unwrap_or_else(|| format!("expected one of: {}", CRON_MACROS.join(", ")));
            return Err(format!("unknown macro `{trimmed}`; {hint}"));
        }
    } else {
        let fields = expr.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "expected 5 fields (minute hour day month weekday) or a macro such as `@daily`, found {fields}"
            ));
        }
    }
    let cron = expr.parse::<Cron>().map_err(|e| e.to_string())?;
    if !fires_ever(&cron) {
        return Err("it never fires: no date has that day in that month".into());
    }
    Ok(cron)
}

/// Whether some date matches the cron's day, month and weekday fields (the minute and hour
/// fields always have a value once parsed).
fn fires_ever(cron: &Cron) -> bool {
    let Some(start) = chrono::NaiveDate::from_ymd_opt(2000, 1, 1) else {
        return false;
    };
    (0..SEARCH_DAYS).any(|d| {
        use chrono::Datelike;
        let day = start + Duration::days(d);
        cron.pattern.month_match(day.month()).unwrap_or(false)
            && cron
                .pattern
                .day_match(day.year(), day.month(), day.day())
                .unwrap_or(false)
    })
}

/// The time zone of a schedule entry; the error names the closest known zone.
pub(crate) fn check_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
        match crate::diag::did_you_mean(name, names) {
            Some(close) => format!("unknown time zone `{name}`; did you mean `{close}`?"),
            None => format!(
                "unknown time zone `{name}`: expected an IANA name such as `Europe/Paris` or `UTC`"
            ),
        }
    })
}

/// Whether a (valid) schedule fires in the minute that contains `epoch_secs`, read in the
/// IANA zone `timezone` (see the module's rule for daylight-saving changes).
pub fn schedule_due(expr: &str, timezone: &str, epoch_secs: i64) -> bool {
    let Ok(tz) = timezone.parse::<Tz>() else {
        return false;
    };
    let Ok(cron) = expr.parse::<Cron>() else {
        return false;
    };
    let Some(minute) = epoch_secs.checked_sub(epoch_secs.rem_euclid(60)) else {
        return false;
    };
    let Some(at) = DateTime::from_timestamp(minute, 0) else {
        return false;
    };
    due_at(&cron, &at.with_timezone(&tz))
}

fn due_at(cron: &Cron, at: &DateTime<Tz>) -> bool {
    let fixed = cron.determine_job_type() == JobType::FixedTime;
    let wall = at.naive_local();
    if matches_wall(cron, wall) {
        // A wall time that happens twice: a fixed-time cron runs at the first only.
        if fixed && let LocalResult::Ambiguous(first, _) = at.timezone().from_local_datetime(&wall)
        {
            return first == *at;
        }
        return true;
    }
    if !fixed {
        return false;
    }
    // The first minute after a gap runs a fixed-time cron whose time the gap skipped.
    let before = (*at - Duration::minutes(1)).naive_local();
    let skipped = (wall - before).num_minutes() - 1;
    (1..=skipped.min(MAX_GAP_MINUTES)).any(|m| matches_wall(cron, before + Duration::minutes(m)))
}

/// Whether the cron's fields match a wall-clock minute (seconds ignored).
fn matches_wall(cron: &Cron, wall: NaiveDateTime) -> bool {
    use chrono::Datelike;
    let p = &cron.pattern;
    let ok = |r: Result<bool, croner::errors::CronError>| r.unwrap_or(false);
    ok(p.month_match(wall.month()))
        && ok(p.day_match(wall.year(), wall.month(), wall.day()))
        && ok(p.hour_match(wall.hour()))
        && ok(p.minute_match(wall.minute()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every minute from `from` (UTC, inclusive) for `hours`, where the cron is due, as
    /// UTC and wall-clock times.
    fn due_minutes(expr: &str, tz: &str, from: &str, hours: i64) -> Vec<String> {
        let start = DateTime::parse_from_rfc3339(from).unwrap().timestamp();
        let zone: Tz = tz.parse().unwrap();
        (0..hours * 60)
            .map(|m| start + m * 60)
            .filter(|&t| schedule_due(expr, tz, t))
            .map(|t| {
                let at = DateTime::from_timestamp(t, 0).unwrap();
                format!(
                    "{} = {}",
                    at.format("%Y-%m-%dT%H:%MZ"),
                    at.with_timezone(&zone).format("%H:%M %Z")
                )
            })
            .collect()
    }

    #[test]
    fn a_fixed_time_in_the_spring_gap_runs_at_the_first_minute_after_it() {
        // Paris, 2025-03-30: 02:00 CET becomes 03:00 CEST (01:00Z).
        assert_eq!(
            due_minutes("30 2 * * *", "Europe/Paris", "2025-03-29T00:00:00Z", 48),
            [
                "2025-03-29T01:30Z = 02:30 CET",
                "2025-03-30T01:00Z = 03:00 CEST",
            ]
        );
        // Outside the gap, nothing moves.
        assert_eq!(
            due_minutes("@daily", "Europe/Paris", "2025-03-29T00:00:00Z", 48),
            [
                "2025-03-29T23:00Z = 00:00 CET",
                "2025-03-30T22:00Z = 00:00 CEST",
            ]
        );
    }

    #[test]
    fn a_fixed_time_that_happens_twice_in_the_autumn_runs_once() {
        // Paris, 2025-10-26: 03:00 CEST becomes 02:00 CET (01:00Z); 02:30 happens twice.
        assert_eq!(
            due_minutes("30 2 * * *", "Europe/Paris", "2025-10-25T12:00:00Z", 36),
            ["2025-10-26T00:30Z = 02:30 CEST"]
        );
    }

    #[test]
    fn interval_crons_follow_the_wall_clock_at_both_changes() {
        // Spring: 02:xx does not exist, so `@hourly` runs 01:00 then 03:00.
        assert_eq!(
            due_minutes("@hourly", "Europe/Paris", "2025-03-29T23:30:00Z", 3),
            [
                "2025-03-30T00:00Z = 01:00 CET",
                "2025-03-30T01:00Z = 03:00 CEST",
                "2025-03-30T02:00Z = 04:00 CEST",
            ]
        );
        // Autumn: 02:00 happens twice, and so does each of its quarter hours.
        assert_eq!(
            due_minutes("*/30 2 * * *", "Europe/Paris", "2025-10-25T23:30:00Z", 3),
            [
                "2025-10-26T00:00Z = 02:00 CEST",
                "2025-10-26T00:30Z = 02:30 CEST",
                "2025-10-26T01:00Z = 02:00 CET",
                "2025-10-26T01:30Z = 02:30 CET",
            ]
        );
    }

    #[test]
    fn utc_and_other_zones() {
        assert_eq!(
            due_minutes("0 9 * * 1", "America/New_York", "2026-11-30T00:00:00Z", 24),
            ["2026-11-30T14:00Z = 09:00 EST"]
        );
        assert_eq!(
            due_minutes("@monthly", "UTC", "2026-11-30T12:00:00Z", 24),
            ["2026-12-01T00:00Z = 00:00 UTC"]
        );
        assert_eq!(
            due_minutes("@yearly", "Asia/Tokyo", "2026-12-31T00:00:00Z", 24),
            ["2026-12-31T15:00Z = 00:00 JST"]
        );
    }

    #[test]
    fn checks() {
        for ok in [
            "@hourly",
            "@daily",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
            "0 0 29 2 *",
            "0 0 31 2 1",
        ] {
            assert!(check_cron(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            check_cron("0 0 31 2 *").unwrap_err(),
            "it never fires: no date has that day in that month"
        );
        assert_eq!(
            check_cron("0 0 30,31 2 *").unwrap_err().as_str(),
            "it never fires: no date has that day in that month"
        );
        assert!(check_cron("0 0 30 2,3 *").is_ok());
        assert_eq!(
            check_cron("@dayly").unwrap_err(),
            "unknown macro `@dayly`; did you mean `@daily`?"
        );
        assert_eq!(
            check_cron("@reboot").unwrap_err(),
            "unknown macro `@reboot`; expected one of: @hourly, @daily, @weekly, @monthly, @yearly, @annually"
        );
        assert_eq!(
            check_timezone("Europe/Pariss").unwrap_err(),
            "unknown time zone `Europe/Pariss`; did you mean `Europe/Paris`?"
        );
        assert!(check_timezone("UTC").is_ok());
    }
}
