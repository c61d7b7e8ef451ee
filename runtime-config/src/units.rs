//! Sizes and durations as people write them.

use std::time::Duration;

/// A size in bytes: `123`, `64Ki`/`64KiB` (×1024), `64K`/`64KB` (×1000),
/// and likewise M, G, T — the Kubernetes quantity suffixes, plus `B` forms.
pub fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| "a size such as 500Mi, 10Gi or 4096".to_string())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KB" => 1_000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        "T" | "TB" => 1_000_000_000_000,
        "Ti" | "TiB" => 1 << 40,
        _ => return Err("a size with a unit of Ki, Mi, Gi, Ti (or K, M, G, T)".to_string()),
    };
    n.checked_mul(factor)
        .ok_or_else(|| "a size below 16 EiB".to_string())
}

/// A ring-buffer size ([`parse_size`]): a power of two from 64 KiB to 1 GiB.
pub fn parse_ring_buffer_size(input: &str) -> Result<u64, String> {
    let n = parse_size(input)?;
    if ring_buffer_size_ok(n) {
        Ok(n)
    } else {
        Err("a power of two between 64Ki and 1Gi, e.g. 16Mi".to_string())
    }
}

pub(crate) fn ring_buffer_size_ok(n: u64) -> bool {
    n.is_power_of_two() && (64 << 10..=1 << 30).contains(&n)
}

/// A duration such as `100ms`, `30s`, `7d`, `1h 30m`.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    humantime::parse_duration(input.trim())
        .map_err(|_| "a duration such as 100ms, 30s, 12h or 7d".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert!(parse_size("10X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999Ti").is_err());
        assert_eq!(parse_ring_buffer_size("16Mi"), Ok(16 << 20));
        assert!(parse_ring_buffer_size("3Mi").is_err());
        assert!(parse_ring_buffer_size("4Ki").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("soon").is_err());
    }
}
