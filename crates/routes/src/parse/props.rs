//! Property values of a route line: the checks shared by condition and target properties
//! (present once, valued or flag, non-empty) and the value forms they use (`yes|no`,
//! `Name:Value` headers).

use std::collections::HashSet;

use crate::lex;

/// Tracks props that may appear once per section.
#[derive(Default)]
pub(crate) struct Seen(HashSet<String>);

impl Seen {
    pub(crate) fn once(&mut self, name: &str) -> Result<(), String> {
        if self.0.insert(name.to_string()) {
            Ok(())
        } else {
            Err(format!("duplicate property '{name}'"))
        }
    }
}

/// The value of a prop that requires one.
pub(crate) fn valued(p: &lex::RawProp) -> Result<&str, String> {
    p.value
        .as_deref()
        .ok_or_else(|| format!("property '{}' requires a value", p.name))
}

/// Checks that a boolean flag was written without a value.
pub(crate) fn flag(p: &lex::RawProp) -> Result<bool, String> {
    match &p.value {
        None => Ok(true),
        Some(_) => Err(format!(
            "property '{}' takes no value (got '{}')",
            p.name,
            p.display()
        )),
    }
}

/// The value of a prop that must not be empty.
pub(crate) fn non_empty(p: &lex::RawProp) -> Result<String, String> {
    let v = valued(p)?;
    if v.is_empty() {
        return Err(format!("property '{}' must not be empty", p.name));
    }
    Ok(v.to_string())
}

/// The error for a property whose value has the wrong form.
pub(crate) fn bad_value(p: &lex::RawProp, expected: &str) -> String {
    format!(
        "invalid value '{}' for '{}' (expected {expected})",
        p.value.as_deref().unwrap_or_default(),
        p.name
    )
}

pub(crate) fn parse_yes_no(p: &lex::RawProp) -> Result<bool, String> {
    let v = valued(p)?;
    if v.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(bad_value(p, "yes or no"))
    }
}

/// `header=Name:Value`: split at the first `:`, value trimmed (empty removes the header).
pub(crate) fn parse_header(p: &lex::RawProp) -> Result<(String, String), String> {
    let v = valued(p)?;
    let Some((name, value)) = v.split_once(':') else {
        return Err(bad_value(p, "Name:Value"));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("empty header name in '{}'", p.display()));
    }
    if !name.bytes().all(is_tchar) {
        return Err(format!("invalid header name '{name}' in '{}'", p.display()));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// RFC 9110 token character.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
