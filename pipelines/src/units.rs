//! Durations (`90s`, `30m`, `1h30m`) and sizes (`512m`, `2g`) as written in pipeline files.

use std::time::Duration;

/// Parses `1h30m`, `45s`, `2d`: one or more number-unit pairs, units `s`, `m`, `h`, `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected =
        || format!("expected a duration such as `90s`, `30m` or `1h30m`, found `{text}`");
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
            _ => return Err(expected()),
        };
        let n: u64 = digits.parse().map_err(|_| expected())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(expected)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        return Err(expected());
    }
    Ok(Duration::from_secs(total))
}

/// Parses `512m`, `2g`, `1024k` or plain bytes (binary units, as Docker reads them).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    match num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)) {
        Some(bytes) if bytes >= 6 << 20 => Ok(bytes),
        Some(_) => Err(format!(
            "memory limit `{text}` is below Docker's minimum of 6m"
        )),
        None => Err(format!(
            "expected a size such as `512m` or `2g`, found `{text}`"
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
        for bad in ["", "30", "m", "0s", "1x", "1.5h", "-3m"] {
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
    }
}
