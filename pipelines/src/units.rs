//! Durations (`90s`, `30m`, `1h30m`) and sizes (`512m`, `2g`) as written in pipeline files.

use std::time::Duration;

/// Longest duration accepted, 30 days: any duration read here can be added to an instant
/// or a timestamp without overflow, and no run is meant to be longer.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);

/// Largest memory size accepted, 1 TiB: it fits Docker's signed 64-bit byte counts.
pub const MAX_MEMORY: u64 = 1 << 40;

/// Parses `1h30m`, `45s`, `2d`: one or more number-unit pairs, units `s`, `m`, `h`, `d`,
/// at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_up_to(text, MAX_DURATION).map_err(|e| match e {
        DurationError::Malformed => {
            format!("expected a duration such as `90s`, `30m` or `1h30m`, found `{text}`")
        }
        DurationError::TooLong => {
            format!("duration `{text}` is longer than the longest accepted, 30d")
        }
    })
}

/// Why [`parse_duration_up_to`] refused a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationError {
    /// Not number-unit pairs, or zero.
    Malformed,
    /// Longer than the limit (also: too many digits for 64 bits).
    TooLong,
}

/// [`parse_duration`]'s syntax with another limit than [`MAX_DURATION`] (settings such as
/// retention ages are longer than any run).
pub fn parse_duration_up_to(text: &str, max: Duration) -> Result<Duration, DurationError> {
    let max = max.as_secs();
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(DurationError::Malformed),
        };
        if digits.is_empty() {
            return Err(DurationError::Malformed);
        }
        // Digits too many for 64 bits are a number too large, not a malformed one.
        total = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .and_then(|s| total.checked_add(s))
            .filter(|&t| t <= max)
            .ok_or(DurationError::TooLong)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        return Err(DurationError::Malformed);
    }
    Ok(Duration::from_secs(total))
}

/// Parses `512m`, `2g`, `1024k` or plain bytes (binary units, as Docker reads them), from
/// Docker's minimum of 6m to [`MAX_MEMORY`].
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "expected a size such as `512m` or `2g`, found `{text}`"
        ));
    }
    match num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)) {
        Some(bytes) if bytes > MAX_MEMORY => Err(format!(
            "memory limit `{text}` is larger than the largest accepted, 1024g"
        )),
        Some(bytes) if bytes >= 6 << 20 => Ok(bytes),
        Some(_) => Err(format!(
            "memory limit `{text}` is below Docker's minimum of 6m"
        )),
        None => Err(format!(
            "memory limit `{text}` is larger than the largest accepted, 1024g"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("30d"), Ok(MAX_DURATION));
        for bad in ["", "30", "m", "0s", "1x", "1.5h", "-3m", "h5", "30d1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("2G"), Ok(2 << 30));
        assert_eq!(parse_memory("1gb"), Ok(1 << 30));
        assert_eq!(parse_memory("8388608"), Ok(8 << 20));
        assert!(parse_memory("1k").is_err());
        assert!(parse_memory("lots").is_err());
        assert_eq!(parse_memory("1024g"), Ok(MAX_MEMORY));
        for bad in ["1025g", "+512m", "-1g", "18446744073709551615", "g", ""] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }
}
