//! `--history GLOB=SIZE[/AGE]`: which channels keep history, how many items and how long.

use std::time::Duration;

/// Default AGE when a rule gives none.
pub(super) const DEFAULT_AGE: Duration = Duration::from_secs(300);
/// Largest SIZE accepted (items kept per channel).
pub(super) const MAX_SIZE: u32 = 1_000_000;
/// Largest AGE accepted.
pub(super) const MAX_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

/// How much history one channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Items kept.
    pub size: u32,
    /// How long an item is kept.
    pub age: Duration,
}

/// One `GLOB=SIZE[/AGE]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    glob: String,
    limits: Limits,
}

/// The ordered rules; the first matching glob wins. Empty: no channel has history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPolicy {
    rules: Vec<Rule>,
}

/// A rule that cannot be used; the message names the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(String);

impl HistoryPolicy {
    /// Parses flag values, each one or more comma-separated rules.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<HistoryPolicy, PolicyError> {
        let mut rules = Vec::new();
        for value in values {
            for rule in value.as_ref().split(',').map(str::trim) {
                if rule.is_empty() {
                    continue;
                }
                rules.push(parse_rule(rule)?);
            }
        }
        Ok(HistoryPolicy { rules })
    }

    /// True when no channel has history.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The limits of `channel`, if it has history.
    pub fn lookup(&self, channel: &str) -> Option<Limits> {
        self.rules
            .iter()
            .find(|r| glob_match(r.glob.as_bytes(), channel.as_bytes()))
            .map(|r| r.limits)
    }

    /// The largest SIZE and the largest AGE over all rules (what the store must keep).
    pub fn max_limits(&self) -> Option<Limits> {
        let size = self.rules.iter().map(|r| r.limits.size).max()?;
        let age = self.rules.iter().map(|r| r.limits.age).max()?;
        Some(Limits { size, age })
    }
}

fn parse_rule(rule: &str) -> Result<Rule, PolicyError> {
    let bad = |why: &str| PolicyError(format!("--history {rule:?}: {why}"));
    let (glob, spec) = rule
        .rsplit_once('=')
        .ok_or_else(|| bad("expected GLOB=SIZE[/AGE]"))?;
    if glob.is_empty() {
        return Err(bad("empty channel glob"));
    }
    let (size, age) = match spec.split_once('/') {
        Some((s, a)) => (s, Some(a)),
        None => (spec, None),
    };
    let size: u32 = size
        .trim()
        .parse()
        .map_err(|_| bad("SIZE must be a whole number of items"))?;
    if size == 0 || size > MAX_SIZE {
        return Err(bad(&format!("SIZE must be 1..={MAX_SIZE}")));
    }
    let age = match age {
        None => DEFAULT_AGE,
        Some(a) => parse_age(a.trim()).ok_or_else(|| {
            bad("AGE must be a positive number with a unit s, m, h or d (at most 365d)")
        })?,
    };
    Ok(Rule {
        glob: glob.to_owned(),
        limits: Limits { size, age },
    })
}

/// `90s`, `5m`, `1h`, `7d`.
fn parse_age(s: &str) -> Option<Duration> {
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let secs = n.checked_mul(match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    })?;
    let age = Duration::from_secs(secs);
    (secs > 0 && age <= MAX_AGE).then_some(age)
}

/// `*` matches any run of characters (including none); everything else matches itself.
fn glob_match(glob: &[u8], s: &[u8]) -> bool {
    // Iterative matcher with one backtrack point: linear in practice, no recursion.
    let (mut g, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if g < glob.len() && glob[g] == b'*' {
            star = Some((g, i));
            g += 1;
        } else if g < glob.len() && glob[g] == s[i] {
            g += 1;
            i += 1;
        } else if let Some((sg, si)) = star {
            g = sg + 1;
            i = si + 1;
            star = Some((sg, si + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins_and_defaults_apply() {
        let p = HistoryPolicy::parse(&["trades*=1000/1h", "*=100"]).expect("valid");
        assert_eq!(
            p.lookup("trades.btc"),
            Some(Limits {
                size: 1000,
                age: Duration::from_secs(3600)
            })
        );
        assert_eq!(
            p.lookup("chat"),
            Some(Limits {
                size: 100,
                age: DEFAULT_AGE
            })
        );
        let p = HistoryPolicy::parse(&["a*b=5/90s, x=1/7d"]).expect("valid");
        assert_eq!(p.lookup("ab").map(|l| l.size), Some(5));
        assert_eq!(p.lookup("a-long-b").map(|l| l.size), Some(5));
        assert_eq!(p.lookup("a-long-c"), None);
        assert_eq!(
            p.lookup("x").map(|l| l.age),
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            p.max_limits(),
            Some(Limits {
                size: 5,
                age: Duration::from_secs(7 * 86_400)
            })
        );
        assert!(HistoryPolicy::parse::<&str>(&[]).expect("empty").is_empty());
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "trades",
            "=5",
            "t=0",
            "t=abc",
            "t=5/",
            "t=5/5",
            "t=5/0s",
            "t=5/3w",
            "t=5/400d",
            "t=-1",
            "t=5/99999999999999999999d",
            "t=2000000",
        ] {
            assert!(HistoryPolicy::parse(&[bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*", b"a"));
        assert!(glob_match(b"*c", b"abc"));
        assert!(glob_match(b"a*c*e", b"abcde"));
        assert!(!glob_match(b"a*c", b"abd"));
        assert!(!glob_match(b"abc", b"ab"));
        assert!(glob_match(b"a.b", b"a.b"));
    }
}
