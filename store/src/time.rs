//! Naming a moment in a recording, as users type it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::Error;

/// A time as given on the command line:
/// - `latest` — everything recorded so far;
/// - a duration since the recording started: `2m14s`, `1500ms`, `0.5s`;
/// - an RFC 3339 timestamp: `2026-11-21T20:01:55Z`, `…+01:00`;
/// - an event number: `#1234` (that event and all before it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeSpec {
    Latest,
    SinceStart(Duration),
    /// Nanoseconds since the Unix epoch.
    Wall(i64),
    Seq(u64),
}

impl FromStr for TimeSpec {
    type Err = Error;

    fn from_str(input: &str) -> Result<TimeSpec, Error> {
        let s = input.trim();
        let invalid = |reason: String| Error::InvalidTime {
            input: input.to_string(),
            reason,
        };
        if s.eq_ignore_ascii_case("latest") {
            return Ok(TimeSpec::Latest);
        }
        if let Some(n) = s.strip_prefix('#') {
            return n.parse().map(TimeSpec::Seq).map_err(|_| {
                invalid("an event number is '#' followed by digits, e.g. #1234".into())
            });
        }
        if let Some(d) = parse_fractional_seconds(s) {
            return Ok(TimeSpec::SinceStart(d));
        }
        if let Ok(d) = humantime::parse_duration(s) {
            return Ok(TimeSpec::SinceStart(d));
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            let ns = t
                .timestamp_nanos_opt()
                .ok_or_else(|| invalid("timestamp is out of range".into()))?;
            return Ok(TimeSpec::Wall(ns));
        }
        Err(invalid(
            "expected 'latest', a duration since the start (2m14s, 1500ms, 0.5s), \
             an RFC 3339 timestamp (2026-11-21T20:01:55Z) or an event number (#1234)"
                .into(),
        ))
    }
}

/// `0.5s`, `1.25s`: humantime takes only whole units.
fn parse_fractional_seconds(s: &str) -> Option<Duration> {
    let number = s.strip_suffix('s')?;
    if !number.contains('.') {
        return None;
    }
    let secs: f64 = number.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

impl fmt::Display for TimeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeSpec::Latest => f.write_str("latest"),
            TimeSpec::SinceStart(d) => write!(f, "+{}", format_offset(*d)),
            TimeSpec::Wall(ns) => {
                let t = chrono::DateTime::from_timestamp_nanos(*ns);
                write!(
                    f,
                    "{}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                )
            }
            TimeSpec::Seq(n) => write!(f, "#{n}"),
        }
    }
}

/// A time offset as the CLI prints it: `2m14.250s`, `850ms`.
pub fn format_offset(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (mins, rest_ms) = (ms / 60_000, ms % 60_000);
    let secs = format!("{}.{:03}s", rest_ms / 1000, rest_ms % 1000);
    if mins == 0 {
        secs
    } else {
        format!("{mins}m{secs}")
    }
}

/// A resolved moment: an event is part of the state at this moment when its
/// sequence number and timestamp are both within the bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moment {
    pub until_ns: Option<u64>,
    pub until_seq: Option<u64>,
    /// How the user named it, for messages.
    pub label: String,
}

impl Moment {
    pub fn latest() -> Moment {
        Moment {
            until_ns: None,
            until_seq: None,
            label: "latest".into(),
        }
    }

    pub fn includes(&self, seq: u64, time_ns: u64) -> bool {
        self.until_seq.is_none_or(|s| seq <= s) && self.until_ns.is_none_or(|t| time_ns <= t)
    }
}

impl fmt::Display for Moment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("latest".parse::<TimeSpec>().unwrap(), TimeSpec::Latest);
        assert_eq!(
            "2m14s".parse::<TimeSpec>().unwrap(),
            TimeSpec::SinceStart(Duration::from_secs(134))
        );
        assert_eq!(
            "1500ms".parse::<TimeSpec>().unwrap(),
            TimeSpec::SinceStart(Duration::from_millis(1500))
        );
        assert_eq!(
            "0.5s".parse::<TimeSpec>().unwrap(),
            TimeSpec::SinceStart(Duration::from_millis(500))
        );
        assert_eq!("#42".parse::<TimeSpec>().unwrap(), TimeSpec::Seq(42));
        assert_eq!(
            "1970-01-01T00:00:01+01:00".parse::<TimeSpec>().unwrap(),
            TimeSpec::Wall(-3_599_000_000_000)
        );
        for bad in ["", "#x", "yesterday", "-1s", "12"] {
            let err = bad.parse::<TimeSpec>().unwrap_err().to_string();
            assert!(
                err.contains("expected") || err.contains("event number"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn formats_offsets() {
        assert_eq!(format_offset(Duration::from_millis(850)), "850ms");
        assert_eq!(format_offset(Duration::from_millis(134_250)), "2m14.250s");
    }
}
