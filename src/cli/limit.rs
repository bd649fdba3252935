//! [`Limit`]: a session time limit as the command's arguments spell it.

use std::fmt;
use std::time::Duration;

/// A session time limit: a duration, or `None` for no limit. It displays as the command's
/// arguments spell it: a whole number in the largest unit that divides it (`90s`, `30m`, `12h`,
/// `7d`), or `off`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use session_archive::cli::Limit;
///
/// assert_eq!(Limit(Some(Duration::from_secs(2 * 60 * 60))).to_string(), "2h");
/// assert_eq!(Limit(None).to_string(), "off");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<Duration>);

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(duration) = self.0 else {
            return f.write_str("off");
        };
        let secs = duration.as_secs();
        let (count, unit) = [(86_400, "d"), (3600, "h"), (60, "m")]
            .into_iter()
            .find(|&(unit, _)| secs != 0 && secs.is_multiple_of(unit))
            .map_or((secs, "s"), |(unit, name)| (secs / unit, name));
        write!(f, "{count}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_spelled_as_the_command_takes_them() {
        let spelled = |secs| Limit(Some(Duration::from_secs(secs))).to_string();
        assert_eq!(spelled(120 * 60), "2h");
        assert_eq!(spelled(90), "90s");
        assert_eq!(spelled(30 * 60), "30m");
        assert_eq!(spelled(7 * 86_400), "7d");
        assert_eq!(spelled(0), "0s");
        assert_eq!(Limit(None).to_string(), "off");
    }
}
