//! The syntax shared by `Grip-*` header values: comma lists outside quotes, `;` parameters
//! with optional quoting, non-negative integers and the `cstring` escapes of keep-alive data.

/// Parses a (possibly signed) decimal integer that must not be negative.
pub(super) fn parse_non_negative(text: &str) -> Result<u64, &'static str> {
    let text = text.trim();
    let digits = text.strip_prefix('+').unwrap_or(text);
    if let Some(neg) = digits.strip_prefix('-') {
        return if !neg.is_empty() && neg.bytes().all(|b| b.is_ascii_digit()) {
            Err("has invalid value")
        } else {
            Err("is not an integer")
        };
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not an integer");
    }
    digits.parse::<u64>().map_err(|_| "is out of range")
}

/// Splits a header value on commas outside double quotes and trims each part. A single empty
/// part after a trailing comma is dropped (as Pushpin does); other empty parts are kept so the
/// caller can reject them.
pub(super) fn split_list(value: &str) -> Result<Vec<&str>, &'static str> {
    let bytes = value.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_quote {
            if c == b'\\' {
                i += 1;
                if i >= bytes.len() {
                    return Err("unterminated quoted string");
                }
            } else if c == b'"' {
                in_quote = false;
            }
        } else if c == b'"' {
            in_quote = true;
        } else if c == b',' {
            parts.push(value[start..i].trim());
            start = i + 1;
        }
        i += 1;
    }
    if in_quote {
        return Err("unterminated quoted string");
    }
    let last = value[start..].trim();
    if parts.is_empty() || !last.is_empty() {
        parts.push(last);
    }
    Ok(parts)
}

/// Parsed `name=value` parameters, in order (names borrowed from the header value).
pub(super) type Params<'a> = Vec<(&'a str, String)>;

/// One list entry `first[; name[=value]]...`: the text before the first `;` (trimmed, not
/// parsed) and the parameters after it.
pub(super) fn parse_entry(entry: &str) -> Result<(&str, Params<'_>), &'static str> {
    match entry.find(';') {
        Some(i) => Ok((entry[..i].trim(), parse_param_list(&entry[i + 1..])?)),
        None => Ok((entry.trim(), Vec::new())),
    }
}

/// Parses `name[=value][; name[=value]]...`. Values may be `"quoted"` (with `\` escapes, and
/// then may contain `;`); unquoted values are trimmed. Empty names without a value are skipped.
pub(super) fn parse_param_list(mut rest: &str) -> Result<Params<'_>, &'static str> {
    let mut out = Vec::new();
    while !rest.trim().is_empty() {
        let Some(at) = rest.find(['=', ';']) else {
            out.push((rest.trim(), String::new()));
            break;
        };
        let name = rest[..at].trim();
        if rest.as_bytes()[at] == b';' {
            if !name.is_empty() {
                out.push((name, String::new()));
            }
            rest = &rest[at + 1..];
            continue;
        }
        let after = rest[at + 1..].trim_start();
        if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut end = None;
            let mut chars = quoted.char_indices();
            while let Some((j, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e)) => value.push(e),
                        None => return Err("unterminated quoted string"),
                    },
                    '"' => {
                        end = Some(j + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or("unterminated quoted string")?;
            let tail = &quoted[end..];
            // Like Pushpin, anything between the closing quote and the next `;` is ignored.
            rest = match tail.find(';') {
                Some(k) => &tail[k + 1..],
                None => "",
            };
            out.push((name, value));
        } else {
            let (value, next) = match after.find(';') {
                Some(k) => (&after[..k], &after[k + 1..]),
                None => (after, ""),
            };
            out.push((name, value.trim().to_owned()));
            rest = next;
        }
    }
    Ok(out)
}

pub(super) fn param<'p>(params: &'p [(&str, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Decodes the `cstring` keep-alive format: `\\`, `\r`, `\n`, `\t` and `\xHH`. A trailing lone
/// backslash or a bad `\x` escape fails; any other escaped character is dropped together with
/// its backslash, as Pushpin does.
pub(super) fn unescape_cstring(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let esc = *b.get(i + 1)?;
        i += 2;
        match esc {
            b'\\' => out.push(b'\\'),
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'x' => {
                let hi = hex_val(*b.get(i)?)?;
                let lo = hex_val(*b.get(i + 1)?)?;
                out.push((hi << 4) | lo);
                i += 2;
            }
            _ => {}
        }
    }
    Some(out)
}

pub(super) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
