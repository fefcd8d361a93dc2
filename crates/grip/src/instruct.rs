//! GRIP instructions from an origin response: `Grip-*` headers and the
//! `application/grip-instruct` JSON body.

use crate::jsonutil::{self, Obj};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use std::collections::BTreeMap;

/// Default response-hold timeout in seconds (`Grip-Timeout` absent).
pub const DEFAULT_HOLD_TIMEOUT_SECS: u64 = 55;
/// Smallest response-hold timeout; smaller values are raised to this.
pub const MIN_HOLD_TIMEOUT_SECS: u64 = 5;
/// Default keep-alive period in seconds.
pub const DEFAULT_KEEP_ALIVE_SECS: u64 = 55;
/// Largest number of filters one channel subscription may carry.
pub const MAX_FILTERS_PER_CHANNEL: usize = 5;
/// Smallest keep-alive period; smaller values (including 0) are raised to this.
pub const MIN_KEEP_ALIVE_SECS: u64 = 1;
/// Default `Grip-Link: <url>; rel=next` inactivity timeout in seconds.
pub const DEFAULT_NEXT_LINK_TIMEOUT_SECS: u64 = 120;
/// The Content-Type of a JSON instruct body.
pub const INSTRUCT_CONTENT_TYPE: &str = "application/grip-instruct";

/// How the edge holds the client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldMode {
    /// Long-poll: park the request, answer once with a published `http-response` or on timeout.
    Response,
    /// Stream: send the initial response now and append every published `http-stream` item.
    Stream,
}

/// One channel the held request subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Channel name as the origin gave it (the route prefix is applied by the edge).
    pub name: String,
    /// Id of the last item the origin knows on this channel.
    pub prev_id: Option<String>,
    /// Filter names (at most [`MAX_FILTERS_PER_CHANNEL`]).
    pub filters: Vec<String>,
}

/// Keep-alive mode for stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveMode {
    /// Send only after `timeout` seconds without any write (the timer restarts on every write).
    Idle,
    /// Send every `timeout` seconds regardless of other traffic.
    Interval,
}

/// Keep-alive data for stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepAlive {
    /// Bytes to send (already decoded from raw / cstring / base64). Never empty.
    pub content: Bytes,
    /// Period in seconds (≥ 1).
    pub timeout_secs: u64,
    /// Idle or interval.
    pub mode: KeepAliveMode,
}

/// `Grip-Status` override for the client-facing status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusOverride {
    /// Status code, 0–999.
    pub code: u16,
    /// Reason phrase; `None` means the standard phrase.
    pub reason: Option<String>,
}

/// `Grip-Link: <url>; rel=next[; timeout=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextLink {
    /// Absolute or relative URL, as given between `<` and `>`.
    pub url: String,
    /// Seconds of inactivity on all channels after which the link is fetched (default 120).
    pub timeout_secs: u64,
}

/// The response the client gets, when given by a JSON instruct body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructResponse {
    /// Status code (default 200).
    pub code: u16,
    /// Reason phrase (`None`: standard phrase).
    pub reason: Option<String>,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body (from `body` or base64 `body-bin`).
    pub body: Bytes,
}

/// Parsed GRIP instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruct {
    /// `None` when the response carries Grip headers but no hold.
    pub hold: Option<HoldMode>,
    /// Channels, in order, de-duplicated by name (first wins).
    pub channels: Vec<ChannelSpec>,
    /// Response-hold timeout in seconds, already defaulted and clamped (≥ 5).
    pub timeout_secs: u64,
    /// Stream keep-alive.
    pub keep_alive: Option<KeepAlive>,
    /// `Grip-Status`.
    pub status: Option<StatusOverride>,
    /// `Grip-Link` with `rel=next`.
    pub next_link: Option<NextLink>,
    /// `Grip-Link` with `rel=gone` (Pushpin 1.41): the URL the edge POSTs to when the client's
    /// connection ends.
    pub gone_link: Option<String>,
    /// `Grip-Set-Meta` / JSON `meta`.
    pub meta: BTreeMap<String, String>,
    /// `Grip-Expose-Headers`: when `Some`, only these response headers reach the client.
    pub expose_headers: Option<Vec<String>>,
    /// JSON instruct `response` object (replaces the origin's own status, headers and body).
    pub response: Option<InstructResponse>,
}

/// Why instructions were rejected. The edge answers 502 for all of them; the text is for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstructError {
    /// A header had a value that does not parse.
    #[error("invalid {header} header: {reason}")]
    Header {
        /// The header name.
        header: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The JSON instruct body is not acceptable.
    #[error("invalid grip-instruct body: {0}")]
    Json(String),
}

/// True when an origin response carries GRIP instructions: any header whose name starts with
/// `Grip-` (any case) or a Content-Type (parameters stripped) of `application/grip-instruct`.
pub fn is_grip_response(headers: &HeaderMap) -> bool {
    // `HeaderName`s are stored lowercase.
    headers
        .keys()
        .any(|name| name.as_str().starts_with("grip-"))
        || is_instruct_body(headers)
}

/// True when the Content-Type (parameters stripped, any case) is `application/grip-instruct`,
/// i.e. the body must be parsed with [`parse_json`].
pub fn is_instruct_body(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(INSTRUCT_CONTENT_TYPE)
        })
}

/// Parses the `Grip-*` headers of an origin response.
///
/// Follows Pushpin 1.36 (`Instruct::fromResponse`): `Grip-Hold`, `Grip-Timeout`,
/// `Grip-Keep-Alive` and `Grip-Status` use the first header of that name; `Grip-Channel`,
/// `Grip-Link`, `Grip-Set-Meta` and `Grip-Expose-Headers` use every header, each split on commas
/// outside double quotes. Parameters are `;`-separated `name=value` pairs (names compared without
/// case, surrounding whitespace ignored, values optionally `"quoted"` with `\` escapes). Unknown
/// `Grip-*` headers are ignored. [`Instruct::response`] is always `None` here.
pub fn parse_headers(headers: &HeaderMap) -> Result<Instruct, InstructError> {
    let hold = match first_header(headers, "grip-hold", "Grip-Hold")? {
        None => None,
        Some("response") => Some(HoldMode::Response),
        Some("stream") => Some(HoldMode::Stream),
        Some(_) => {
            return Err(herr(
                "Grip-Hold",
                "Grip-Hold must be set to either 'response' or 'stream'",
            ));
        }
    };

    let mut channels: Vec<ChannelSpec> = Vec::new();
    for value in headers.get_all("grip-channel") {
        let value = header_str(value, "Grip-Channel")?;
        for entry in split_list(value).map_err(|e| herr("Grip-Channel", e))? {
            let spec = parse_channel_entry(entry)?;
            if !channels.iter().any(|c| c.name == spec.name) {
                channels.push(spec);
            }
        }
    }

    let timeout_secs = match first_header(headers, "grip-timeout", "Grip-Timeout")? {
        None => DEFAULT_HOLD_TIMEOUT_SECS,
        Some(v) => {
            parse_non_negative(v).map_err(|e| herr("Grip-Timeout", format!("Grip-Timeout {e}")))?
        }
    }
    .clamp(MIN_HOLD_TIMEOUT_SECS, crate::MAX_DURATION_SECS);

    let keep_alive = match first_header(headers, "grip-keep-alive", "Grip-Keep-Alive")? {
        None => None,
        Some(v) => Some(parse_keep_alive(v)?),
    };

    let status = match first_header(headers, "grip-status", "Grip-Status")? {
        // Pushpin ignores an empty Grip-Status.
        None | Some("") => None,
        Some(v) => Some(parse_status(v)?),
    };

    let mut next_link = None;
    let mut gone_link = None;
    for value in headers.get_all("grip-link") {
        let value = header_str(value, "Grip-Link")?;
        for entry in split_list(value).map_err(|e| herr("Grip-Link", e))? {
            // Like Pushpin, the last entry of each `rel` wins.
            match parse_link_entry(entry)? {
                Some(Link::Next(link)) => next_link = Some(link),
                Some(Link::Gone(url)) => gone_link = Some(url),
                None => {}
            }
        }
    }

    let mut meta = BTreeMap::new();
    for value in headers.get_all("grip-set-meta") {
        let value = header_str(value, "Grip-Set-Meta")?;
        let entries = split_list(value).map_err(|e| herr("Grip-Set-Meta", e))?;
        for entry in entries {
            let params = parse_param_list(entry).map_err(|e| herr("Grip-Set-Meta", e))?;
            match params.into_iter().next() {
                Some((name, value)) if !name.is_empty() => {
                    meta.insert(name.to_owned(), value);
                }
                _ => return Err(herr("Grip-Set-Meta", "Grip-Set-Meta cannot be empty")),
            }
        }
    }

    let mut expose: Vec<String> = Vec::new();
    for value in headers.get_all("grip-expose-headers") {
        let value = header_str(value, "Grip-Expose-Headers")?;
        for entry in split_list(value).map_err(|e| herr("Grip-Expose-Headers", e))? {
            if !entry.is_empty() {
                expose.push(entry.to_owned());
            }
        }
    }
    // Pushpin: an empty list means "no filtering".
    let expose_headers = (!expose.is_empty()).then_some(expose);

    Ok(Instruct {
        hold,
        channels,
        timeout_secs,
        keep_alive,
        status,
        next_link,
        gone_link,
        meta,
        expose_headers,
        response: None,
    })
}

/// Parses an `application/grip-instruct` body.
///
/// Error texts follow Pushpin's (`hold contains 'timeout' with wrong type`, ...). Deliberate
/// differences: a `hold` whose `channels` list is empty is rejected, channels are de-duplicated
/// by name (first wins) and limited to [`MAX_FILTERS_PER_CHANNEL`] filters, an unknown
/// `keep-alive.mode` is rejected, and a bad `content-bin`/`body-bin` base64 is an error (Pushpin
/// silently decodes garbage). A `keep-alive` object without `content`/`content-bin` (or with
/// empty content) disables keep-alives, as in Pushpin.
pub fn parse_json(body: &[u8]) -> Result<Instruct, InstructError> {
    parse_json_inner(body).map_err(InstructError::Json)
}

fn parse_json_inner(body: &[u8]) -> Result<Instruct, String> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|_| "failed to parse application/grip-instruct content as JSON".to_owned())?;
    let Value::Object(root) = doc else {
        return Err("instruct must be an object".to_owned());
    };

    let mut out = Instruct {
        hold: None,
        channels: Vec::new(),
        timeout_secs: DEFAULT_HOLD_TIMEOUT_SECS,
        keep_alive: None,
        status: None,
        next_link: None,
        gone_link: None,
        meta: BTreeMap::new(),
        expose_headers: None,
        response: None,
    };

    if let Some(hold) = jsonutil::opt_obj(&root, "instruct", "hold")? {
        parse_json_hold(hold, &mut out)?;
    }
    if let Some(resp) = jsonutil::opt_obj(&root, "instruct", "response")? {
        out.response = Some(parse_json_response(resp)?);
    }
    Ok(out)
}

fn parse_json_hold(hold: &Obj, out: &mut Instruct) -> Result<(), String> {
    let pn = "hold";
    out.hold = Some(match jsonutil::opt_str(hold, pn, "mode")? {
        None | Some("response") => HoldMode::Response,
        Some("stream") => HoldMode::Stream,
        Some(_) => {
            return Err("hold 'mode' must be set to either 'response' or 'stream'".to_owned());
        }
    });

    let vchannels = jsonutil::req_list(hold, pn, "channels")?;
    if vchannels.is_empty() {
        return Err("hold contains 'channels' with no entries".to_owned());
    }
    for vchannel in vchannels {
        let Value::Object(ch) = vchannel else {
            return Err("channel is not an object".to_owned());
        };
        let cpn = "channel";
        let name = jsonutil::req_str(ch, cpn, "name")?;
        if name.is_empty() {
            return Err(jsonutil::invalid_value(cpn, "name"));
        }
        let prev_id = jsonutil::opt_str(ch, cpn, "prev-id")?.map(str::to_owned);
        let filters = match jsonutil::opt_list(ch, cpn, "filters")? {
            None => Vec::new(),
            Some(list) => jsonutil::string_list(list, "filters contains value with wrong type")?,
        };
        if filters.len() > MAX_FILTERS_PER_CHANNEL {
            return Err(format!("too many filters for channel '{name}'"));
        }
        if !out.channels.iter().any(|c| c.name == name) {
            out.channels.push(ChannelSpec {
                name: name.to_owned(),
                prev_id,
                filters,
            });
        }
    }

    if let Some(t) = jsonutil::opt_uint(hold, pn, "timeout")? {
        out.timeout_secs = t.clamp(MIN_HOLD_TIMEOUT_SECS, crate::MAX_DURATION_SECS);
    }

    if let Some(ka) = jsonutil::opt_obj(hold, pn, "keep-alive")? {
        let kpn = "keep-alive";
        let content: Option<Vec<u8>> = if let Some(b64) = jsonutil::opt_str(ka, kpn, "content-bin")?
        {
            Some(jsonutil::decode_base64(b64).ok_or_else(|| {
                "keep-alive contains 'content-bin' with invalid base64".to_owned()
            })?)
        } else {
            jsonutil::opt_str(ka, kpn, "content")?.map(|s| s.as_bytes().to_vec())
        };
        let timeout_secs = jsonutil::opt_uint(ka, kpn, "timeout")?
            .unwrap_or(DEFAULT_KEEP_ALIVE_SECS)
            .clamp(MIN_KEEP_ALIVE_SECS, crate::MAX_DURATION_SECS);
        let mode = match jsonutil::opt_str(ka, kpn, "mode")? {
            None | Some("") | Some("idle") => KeepAliveMode::Idle,
            Some("interval") => KeepAliveMode::Interval,
            Some(_) => return Err("keep-alive contains 'mode' with unknown value".to_owned()),
        };
        out.keep_alive = content.filter(|c| !c.is_empty()).map(|c| KeepAlive {
            content: Bytes::from(c),
            timeout_secs,
            mode,
        });
    }

    if let Some(meta) = jsonutil::opt_obj(hold, pn, "meta")? {
        out.meta = jsonutil::string_map(meta, "meta")?;
    }
    Ok(())
}

fn parse_json_response(resp: &Obj) -> Result<InstructResponse, String> {
    let pn = "response";
    let code = match jsonutil::opt_int(resp, pn, "code")? {
        None => 200,
        Some(c) => u16::try_from(c)
            .ok()
            .filter(|c| *c <= 999)
            .ok_or_else(|| jsonutil::invalid_value(pn, "code"))?,
    };
    let reason = jsonutil::opt_str(resp, pn, "reason")?
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    let headers = match jsonutil::get(resp, "headers") {
        None => Vec::new(),
        Some(v) => jsonutil::headers(v, pn)?,
    };
    let body = if let Some(b64) = jsonutil::opt_str(resp, pn, "body-bin")? {
        Bytes::from(
            jsonutil::decode_base64(b64)
                .ok_or_else(|| "response contains 'body-bin' with invalid base64".to_owned())?,
        )
    } else {
        match jsonutil::opt_str(resp, pn, "body")? {
            Some(s) => Bytes::copy_from_slice(s.as_bytes()),
            None => Bytes::new(),
        }
    };
    Ok(InstructResponse {
        code,
        reason,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// Header helpers

fn herr(header: &'static str, reason: impl Into<String>) -> InstructError {
    InstructError::Header {
        header,
        reason: reason.into(),
    }
}

fn header_str<'a>(value: &'a HeaderValue, header: &'static str) -> Result<&'a str, InstructError> {
    std::str::from_utf8(value.as_bytes()).map_err(|_| herr(header, "value is not valid UTF-8"))
}

/// The first header named `name` (lowercase) as UTF-8 text.
fn first_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
    display: &'static str,
) -> Result<Option<&'a str>, InstructError> {
    headers
        .get(name)
        .map(|v| header_str(v, display))
        .transpose()
}

/// Parses a (possibly signed) decimal integer that must not be negative.
fn parse_non_negative(text: &str) -> Result<u64, &'static str> {
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
fn split_list(value: &str) -> Result<Vec<&str>, &'static str> {
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
type Params<'a> = Vec<(&'a str, String)>;

/// One list entry `first[; name[=value]]...`: the text before the first `;` (trimmed, not
/// parsed) and the parameters after it.
fn parse_entry(entry: &str) -> Result<(&str, Params<'_>), &'static str> {
    match entry.find(';') {
        Some(i) => Ok((entry[..i].trim(), parse_param_list(&entry[i + 1..])?)),
        None => Ok((entry.trim(), Vec::new())),
    }
}

/// Parses `name[=value][; name[=value]]...`. Values may be `"quoted"` (with `\` escapes, and
/// then may contain `;`); unquoted values are trimmed. Empty names without a value are skipped.
fn parse_param_list(mut rest: &str) -> Result<Params<'_>, &'static str> {
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

fn param<'p>(params: &'p [(&str, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn parse_channel_entry(entry: &str) -> Result<ChannelSpec, InstructError> {
    let (name, params) = parse_entry(entry).map_err(|e| herr("Grip-Channel", e))?;
    if name.is_empty() {
        return Err(herr(
            "Grip-Channel",
            "failed to parse Grip-Channel: empty entry",
        ));
    }
    let prev_id = param(&params, "prev-id").map(str::to_owned);
    let filters: Vec<String> = params
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("filter"))
        .map(|(_, v)| v.clone())
        .collect();
    if filters.len() > MAX_FILTERS_PER_CHANNEL {
        return Err(herr(
            "Grip-Channel",
            format!("too many filters for channel '{name}'"),
        ));
    }
    Ok(ChannelSpec {
        name: name.to_owned(),
        prev_id,
        filters,
    })
}

fn parse_keep_alive(value: &str) -> Result<KeepAlive, InstructError> {
    const H: &str = "Grip-Keep-Alive";
    let (data, params) = parse_entry(value).map_err(|e| herr(H, e))?;
    if data.is_empty() {
        return Err(herr(H, "Grip-Keep-Alive cannot be empty"));
    }
    let mode = match param(&params, "mode") {
        None | Some("") | Some("idle") => KeepAliveMode::Idle,
        Some("interval") => KeepAliveMode::Interval,
        Some(m) => return Err(herr(H, format!("no such Grip-Keep-Alive mode '{m}'"))),
    };
    let timeout_secs = match param(&params, "timeout") {
        None => DEFAULT_KEEP_ALIVE_SECS,
        Some(t) => {
            parse_non_negative(t).map_err(|e| herr(H, format!("Grip-Keep-Alive timeout {e}")))?
        }
    }
    .clamp(MIN_KEEP_ALIVE_SECS, crate::MAX_DURATION_SECS);
    let content = match param(&params, "format") {
        None | Some("") | Some("raw") => data.as_bytes().to_vec(),
        Some("cstring") => unescape_cstring(data)
            .ok_or_else(|| herr(H, "failed to parse Grip-Keep-Alive cstring format"))?,
        Some("base64") => jsonutil::decode_base64(data)
            .ok_or_else(|| herr(H, "failed to parse Grip-Keep-Alive base64 format"))?,
        Some(f) => return Err(herr(H, format!("no such Grip-Keep-Alive format '{f}'"))),
    };
    if content.is_empty() {
        return Err(herr(H, "Grip-Keep-Alive cannot be empty"));
    }
    Ok(KeepAlive {
        content: Bytes::from(content),
        timeout_secs,
        mode,
    })
}

/// Decodes the `cstring` keep-alive format: `\\`, `\r`, `\n`, `\t` and `\xHH`. A trailing lone
/// backslash or a bad `\x` escape fails; any other escaped character is dropped together with
/// its backslash, as Pushpin does.
fn unescape_cstring(text: &str) -> Option<Vec<u8>> {
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

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn parse_status(value: &str) -> Result<StatusOverride, InstructError> {
    let (code, reason) = match value.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (value, ""),
    };
    let code = code
        .parse::<u16>()
        .ok()
        .filter(|c| *c <= 999)
        .ok_or_else(|| herr("Grip-Status", "Grip-Status contains invalid status code"))?;
    Ok(StatusOverride {
        code,
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
    })
}

/// A `Grip-Link` entry the edge acts on.
enum Link {
    Next(NextLink),
    Gone(String),
}

/// One `Grip-Link` entry. `Ok(None)` for entries without parameters or with a `rel` other than
/// `next` and `gone`.
fn parse_link_entry(entry: &str) -> Result<Option<Link>, InstructError> {
    const H: &str = "Grip-Link";
    let (link, params) = parse_entry(entry).map_err(|e| herr(H, e))?;
    if params.is_empty() {
        return Ok(None);
    }
    let url = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix('>'))
        .filter(|u| !u.is_empty())
        .ok_or_else(|| herr(H, "failed to parse Grip-Link value"))?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(herr(H, "Grip-Link contains invalid link"));
    }
    match param(&params, "rel") {
        Some("next") => {}
        Some("gone") => return Ok(Some(Link::Gone(url.to_owned()))),
        _ => return Ok(None),
    }
    let timeout_secs = match param(&params, "timeout") {
        None => DEFAULT_NEXT_LINK_TIMEOUT_SECS,
        Some(t) => parse_non_negative(t).map_err(|e| herr(H, format!("Grip-Link timeout {e}")))?,
    }
    .clamp(1, crate::MAX_DURATION_SECS);
    Ok(Some(Link::Next(NextLink {
        url: url.to_owned(),
        timeout_secs,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn ok(pairs: &[(&str, &str)]) -> Instruct {
        parse_headers(&hm(pairs)).expect("should parse")
    }

    fn err(pairs: &[(&str, &str)]) -> InstructError {
        parse_headers(&hm(pairs)).expect_err("should fail")
    }

    fn err_header(pairs: &[(&str, &str)]) -> &'static str {
        match err(pairs) {
            InstructError::Header { header, .. } => header,
            e => panic!("unexpected {e:?}"),
        }
    }

    fn ch(name: &str) -> ChannelSpec {
        ChannelSpec {
            name: name.into(),
            prev_id: None,
            filters: vec![],
        }
    }

    // ---- detection

    #[test]
    fn detects_grip_headers_any_case() {
        assert!(is_grip_response(&hm(&[("Grip-Hold", "stream")])));
        assert!(is_grip_response(&hm(&[("GRIP-FOO", "bar")])));
        assert!(is_grip_response(&hm(&[("grip-channel", "x")])));
        assert!(!is_grip_response(&hm(&[("X-Grip-Foo", "bar")])));
        assert!(!is_grip_response(&hm(&[("Gripx", "bar")])));
        assert!(!is_grip_response(&hm(&[("Content-Type", "text/plain")])));
        assert!(!is_grip_response(&HeaderMap::new()));
    }

    #[test]
    fn detects_instruct_content_type() {
        assert!(is_grip_response(&hm(&[(
            "Content-Type",
            "application/grip-instruct"
        )])));
        assert!(is_grip_response(&hm(&[(
            "Content-Type",
            "Application/GRIP-Instruct; charset=utf-8"
        )])));
        assert!(is_instruct_body(&hm(&[(
            "Content-Type",
            " application/grip-instruct ;x=y"
        )])));
        assert!(!is_grip_response(&hm(&[(
            "Content-Type",
            "application/grip-instructx"
        )])));
        assert!(!is_instruct_body(&hm(&[("Grip-Hold", "stream")])));
    }

    // ---- Grip-Hold

    #[test]
    fn hold_modes() {
        assert_eq!(
            ok(&[("Grip-Hold", "response")]).hold,
            Some(HoldMode::Response)
        );
        assert_eq!(ok(&[("Grip-Hold", "stream")]).hold, Some(HoldMode::Stream));
        let none = ok(&[("Grip-Channel", "x")]);
        assert_eq!(none.hold, None);
        assert_eq!(none.response, None);
    }

    #[test]
    fn conformance_11_invalid_hold() {
        let e = err(&[("Grip-Hold", "bogus"), ("Grip-Channel", "x")]);
        assert_eq!(
            e.to_string(),
            "invalid Grip-Hold header: Grip-Hold must be set to either 'response' or 'stream'"
        );
        assert_eq!(err_header(&[("Grip-Hold", "Stream")]), "Grip-Hold");
        assert_eq!(err_header(&[("Grip-Hold", "")]), "Grip-Hold");
    }

    #[test]
    fn non_utf8_value_is_error() {
        let mut h = HeaderMap::new();
        h.insert(
            "grip-channel",
            HeaderValue::from_bytes(b"ab\xffc").expect("value"),
        );
        match parse_headers(&h) {
            Err(InstructError::Header { header, reason }) => {
                assert_eq!(header, "Grip-Channel");
                assert!(reason.contains("UTF-8"));
            }
            other => panic!("unexpected {other:?}"),
        }
        // Valid UTF-8 beyond ASCII is fine.
        let mut h = HeaderMap::new();
        h.insert(
            "grip-channel",
            HeaderValue::from_bytes("caf\u{e9}".as_bytes()).expect("value"),
        );
        assert_eq!(
            parse_headers(&h).expect("ok").channels,
            vec![ch("caf\u{e9}")]
        );
    }

    #[test]
    fn unknown_grip_headers_ignored() {
        let i = ok(&[("Grip-Foo", "bar"), ("Grip-Channel", "x")]);
        assert_eq!(i.channels, vec![ch("x")]);
        assert_eq!(i.hold, None);
        assert_eq!(i.timeout_secs, 55);
        assert_eq!(i.keep_alive, None);
        assert_eq!(i.status, None);
        assert_eq!(i.next_link, None);
        assert!(i.meta.is_empty());
        assert_eq!(i.expose_headers, None);
    }

    // ---- Grip-Channel

    #[test]
    fn conformance_3_stream_hold_basic() {
        let i = ok(&[
            ("Grip-Hold", "stream"),
            ("Grip-Channel", "test"),
            ("Content-Type", "text/plain"),
        ]);
        assert_eq!(i.hold, Some(HoldMode::Stream));
        assert_eq!(i.channels, vec![ch("test")]);
    }

    #[test]
    fn conformance_5_multi_channel() {
        let i = ok(&[("Grip-Hold", "stream"), ("Grip-Channel", "m1, m2")]);
        assert_eq!(i.channels, vec![ch("m1"), ch("m2")]);
    }

    #[test]
    fn channels_from_repeated_headers_and_lists() {
        let i = ok(&[
            ("Grip-Channel", "a,b"),
            ("Grip-Channel", "c"),
            ("grip-channel", " d ,e "),
        ]);
        let names: Vec<_> = i.channels.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn channel_params() {
        let i = ok(&[(
            "Grip-Channel",
            "a; prev-id=1; filter=skip-self ;filter=build-id, b;prev-id=\"x;y,z\";filter = \"q\\\"r\"",
        )]);
        assert_eq!(
            i.channels,
            vec![
                ChannelSpec {
                    name: "a".into(),
                    prev_id: Some("1".into()),
                    filters: vec!["skip-self".into(), "build-id".into()],
                },
                ChannelSpec {
                    name: "b".into(),
                    prev_id: Some("x;y,z".into()),
                    filters: vec!["q\"r".into()],
                },
            ]
        );
        // Parameter names are case-insensitive; unknown parameters are ignored.
        let i = ok(&[("Grip-Channel", "c; Prev-ID=7; foo=bar; FILTER=f")]);
        assert_eq!(i.channels[0].prev_id.as_deref(), Some("7"));
        assert_eq!(i.channels[0].filters, vec!["f".to_owned()]);
    }

    #[test]
    fn duplicate_channels_first_wins() {
        let i = ok(&[("Grip-Channel", "a; prev-id=1, b, a; prev-id=2")]);
        assert_eq!(i.channels.len(), 2);
        assert_eq!(i.channels[0].name, "a");
        assert_eq!(i.channels[0].prev_id.as_deref(), Some("1"));
        assert_eq!(i.channels[1].name, "b");
    }

    #[test]
    fn empty_channel_entries_are_errors() {
        assert_eq!(err_header(&[("Grip-Channel", "a,,b")]), "Grip-Channel");
        assert_eq!(err_header(&[("Grip-Channel", "")]), "Grip-Channel");
        assert_eq!(err_header(&[("Grip-Channel", ", a")]), "Grip-Channel");
        assert_eq!(
            err_header(&[("Grip-Channel", "; prev-id=1")]),
            "Grip-Channel"
        );
        // A trailing comma is tolerated, as in Pushpin.
        assert_eq!(ok(&[("Grip-Channel", "a,")]).channels, vec![ch("a")]);
    }

    #[test]
    fn unterminated_quote_is_error() {
        assert_eq!(
            err_header(&[("Grip-Channel", "a; prev-id=\"x")]),
            "Grip-Channel"
        );
    }

    #[test]
    fn too_many_filters() {
        let five = "a; filter=1; filter=2; filter=3; filter=4; filter=5";
        assert_eq!(ok(&[("Grip-Channel", five)]).channels[0].filters.len(), 5);
        let six = format!("{five}; filter=6");
        let e = err(&[("Grip-Channel", &six)]);
        assert_eq!(
            e.to_string(),
            "invalid Grip-Channel header: too many filters for channel 'a'"
        );
    }

    // ---- Grip-Timeout

    #[test]
    fn conformance_14_timeout_clamp_default() {
        assert_eq!(ok(&[("Grip-Hold", "response")]).timeout_secs, 55);
        assert_eq!(ok(&[("Grip-Timeout", "1")]).timeout_secs, 5);
        assert_eq!(ok(&[("Grip-Timeout", "0")]).timeout_secs, 5);
        assert_eq!(ok(&[("Grip-Timeout", "5")]).timeout_secs, 5);
        assert_eq!(ok(&[("Grip-Timeout", "6")]).timeout_secs, 6);
        assert_eq!(ok(&[("Grip-Timeout", " 120 ")]).timeout_secs, 120);
    }

    /// Durations from the origin are clamped to [`crate::MAX_DURATION_SECS`], so a deadline
    /// built from them cannot overflow (`Grip-Timeout: 2^64-1` once panicked the task).
    #[test]
    fn durations_from_the_origin_are_clamped() {
        let max = crate::MAX_DURATION_SECS;
        let huge = u64::MAX.to_string();
        assert_eq!(ok(&[("Grip-Timeout", &huge)]).timeout_secs, max);
        let ka = ok(&[("Grip-Keep-Alive", &format!("x; timeout={huge}"))]);
        assert_eq!(ka.keep_alive.expect("ka").timeout_secs, max);
        let link = ok(&[("Grip-Link", &format!("</n>; rel=next; timeout={huge}"))]);
        assert_eq!(link.next_link.expect("link").timeout_secs, max);
        let link = ok(&[("Grip-Link", "</n>; rel=next; timeout=0")]);
        assert_eq!(link.next_link.expect("link").timeout_secs, 1);
        let json = format!(
            r#"{{"hold":{{"mode":"stream","timeout":{huge},"channels":[{{"name":"a"}}],"keep-alive":{{"content":"k","timeout":{huge}}}}}}}"#
        );
        let i = parse_json(json.as_bytes()).expect("json");
        assert_eq!(i.timeout_secs, max);
        assert_eq!(i.keep_alive.expect("ka").timeout_secs, max);
    }

    #[test]
    fn bad_timeouts() {
        for v in ["-1", "abc", "1.5", "", "1 2", "99999999999999999999999"] {
            assert_eq!(err_header(&[("Grip-Timeout", v)]), "Grip-Timeout", "{v:?}");
        }
        assert_eq!(
            err(&[("Grip-Timeout", "-3")]).to_string(),
            "invalid Grip-Timeout header: Grip-Timeout has invalid value"
        );
    }

    // ---- Grip-Keep-Alive

    #[test]
    fn keep_alive_raw_defaults() {
        let ka = ok(&[("Grip-Keep-Alive", "ping")]).keep_alive.expect("ka");
        assert_eq!(
            ka,
            KeepAlive {
                content: Bytes::from_static(b"ping"),
                timeout_secs: 55,
                mode: KeepAliveMode::Idle,
            }
        );
        let ka = ok(&[("Grip-Keep-Alive", "x y; format=raw; timeout=7; mode=idle")])
            .keep_alive
            .expect("ka");
        assert_eq!(ka.content, Bytes::from_static(b"x y"));
        assert_eq!(ka.timeout_secs, 7);
    }

    #[test]
    fn conformance_21_keep_alive_idle_cstring() {
        let ka = ok(&[
            ("Grip-Hold", "stream"),
            ("Content-Type", "text/event-stream"),
            ("Grip-Keep-Alive", r":\n\n; format=cstring; timeout=3"),
        ])
        .keep_alive
        .expect("ka");
        assert_eq!(ka.content, Bytes::from_static(b":\n\n"));
        assert_eq!(ka.timeout_secs, 3);
        assert_eq!(ka.mode, KeepAliveMode::Idle);
    }

    #[test]
    fn conformance_22_keep_alive_interval() {
        let ka = ok(&[(
            "Grip-Keep-Alive",
            r"ping\n; format=cstring; timeout=2; mode=interval",
        )])
        .keep_alive
        .expect("ka");
        assert_eq!(ka.content, Bytes::from_static(b"ping\n"));
        assert_eq!(ka.timeout_secs, 2);
        assert_eq!(ka.mode, KeepAliveMode::Interval);
    }

    #[test]
    fn conformance_23_keep_alive_bad_mode() {
        let e = err(&[("Grip-Keep-Alive", "x; mode=weird")]);
        assert_eq!(
            e.to_string(),
            "invalid Grip-Keep-Alive header: no such Grip-Keep-Alive mode 'weird'"
        );
    }

    #[test]
    fn keep_alive_cstring_escapes() {
        let ka = ok(&[(
            "Grip-Keep-Alive",
            r"a\\b\r\n\t\x41\x7a\x7A\qz; format=cstring",
        )])
        .keep_alive
        .expect("ka");
        // `\q` is dropped, as Pushpin does.
        assert_eq!(ka.content, Bytes::from_static(b"a\\b\r\n\tAzzz"));
        for bad in [r"abc\", r"\x4", r"\xZZ", r"\x"] {
            let v = format!("{bad}; format=cstring");
            assert_eq!(
                err(&[("Grip-Keep-Alive", &v)]).to_string(),
                "invalid Grip-Keep-Alive header: failed to parse Grip-Keep-Alive cstring format",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keep_alive_base64() {
        let ka = ok(&[("Grip-Keep-Alive", "OgoK; format=base64")])
            .keep_alive
            .expect("ka");
        assert_eq!(ka.content, Bytes::from_static(b":\n\n"));
        assert_eq!(
            err_header(&[("Grip-Keep-Alive", "!!!; format=base64")]),
            "Grip-Keep-Alive"
        );
    }

    #[test]
    fn keep_alive_errors() {
        assert_eq!(
            err(&[("Grip-Keep-Alive", "; timeout=3")]).to_string(),
            "invalid Grip-Keep-Alive header: Grip-Keep-Alive cannot be empty"
        );
        assert_eq!(
            err(&[("Grip-Keep-Alive", "")]).to_string(),
            "invalid Grip-Keep-Alive header: Grip-Keep-Alive cannot be empty"
        );
        assert_eq!(
            err(&[("Grip-Keep-Alive", "x; format=hex")]).to_string(),
            "invalid Grip-Keep-Alive header: no such Grip-Keep-Alive format 'hex'"
        );
        for t in ["abc", "-1", "", "2s"] {
            let v = format!("x; timeout={t}");
            assert_eq!(
                err_header(&[("Grip-Keep-Alive", &v)]),
                "Grip-Keep-Alive",
                "{t:?}"
            );
        }
    }

    #[test]
    fn keep_alive_zero_timeout_raised_to_one() {
        let ka = ok(&[("Grip-Keep-Alive", "x; timeout=0")])
            .keep_alive
            .expect("ka");
        assert_eq!(ka.timeout_secs, 1);
    }

    #[test]
    fn keep_alive_data_may_contain_commas() {
        let ka = ok(&[("Grip-Keep-Alive", "a,b; timeout=5")])
            .keep_alive
            .expect("ka");
        assert_eq!(ka.content, Bytes::from_static(b"a,b"));
    }

    // ---- Grip-Status

    #[test]
    fn conformance_9_grip_status() {
        let i = ok(&[
            ("Grip-Hold", "stream"),
            ("Grip-Status", "202 Accepted Stream"),
        ]);
        assert_eq!(
            i.status,
            Some(StatusOverride {
                code: 202,
                reason: Some("Accepted Stream".into()),
            })
        );
        assert_eq!(
            ok(&[("Grip-Status", "404")]).status,
            Some(StatusOverride {
                code: 404,
                reason: None,
            })
        );
        assert_eq!(ok(&[("Grip-Status", "0")]).status.map(|s| s.code), Some(0));
        assert_eq!(
            ok(&[("Grip-Status", "999 X")]).status.map(|s| s.code),
            Some(999)
        );
    }

    #[test]
    fn bad_status() {
        for v in ["1000", "-1", "abc", "20x OK", "65536"] {
            assert_eq!(
                err(&[("Grip-Status", v)]).to_string(),
                "invalid Grip-Status header: Grip-Status contains invalid status code",
                "{v:?}"
            );
        }
    }

    // ---- Grip-Link

    #[test]
    fn next_link() {
        let i = ok(&[("Grip-Link", "</next>; rel=next; timeout=5")]);
        assert_eq!(
            i.next_link,
            Some(NextLink {
                url: "/next".into(),
                timeout_secs: 5,
            })
        );
        let i = ok(&[("Grip-Link", "<http://o/x?a=1>; rel=\"next\"")]);
        assert_eq!(
            i.next_link,
            Some(NextLink {
                url: "http://o/x?a=1".into(),
                timeout_secs: 120,
            })
        );
    }

    #[test]
    fn link_other_rels_and_bare_entries_ignored() {
        let i = ok(&[("Grip-Link", "</gone>; rel=gone, </n>; rel=next, </bare>")]);
        assert_eq!(i.next_link.map(|l| l.url), Some("/n".to_owned()));
        assert_eq!(i.gone_link.as_deref(), Some("/gone"));
        let i = ok(&[("Grip-Link", "<http://o/g?x=1>; rel=gone")]);
        assert_eq!(
            (i.next_link, i.gone_link.as_deref()),
            (None, Some("http://o/g?x=1"))
        );
        assert_eq!(
            err_header(&[("Grip-Link", "</a b>; rel=gone")]),
            "Grip-Link"
        );
        assert_eq!(ok(&[("Grip-Link", "</x>; rel=prev")]).next_link, None);
        // No parameters at all: ignored even when not in <...>.
        assert_eq!(ok(&[("Grip-Link", "nonsense")]).next_link, None);
    }

    #[test]
    fn link_errors() {
        assert_eq!(
            err(&[("Grip-Link", "/next; rel=next")]).to_string(),
            "invalid Grip-Link header: failed to parse Grip-Link value"
        );
        assert_eq!(err_header(&[("Grip-Link", "<>; rel=next")]), "Grip-Link");
        assert_eq!(
            err_header(&[("Grip-Link", "</a b>; rel=next")]),
            "Grip-Link"
        );
        assert_eq!(
            err_header(&[("Grip-Link", "</n>; rel=next; timeout=x")]),
            "Grip-Link"
        );
        assert_eq!(
            err_header(&[("Grip-Link", "</n>; rel=next; timeout=-5")]),
            "Grip-Link"
        );
    }

    // ---- Grip-Set-Meta

    #[test]
    fn set_meta() {
        let i = ok(&[
            ("Grip-Set-Meta", "user=alice, id_format=\"a,b\""),
            ("Grip-Set-Meta", "x = 1"),
        ]);
        let expect: BTreeMap<String, String> =
            [("user", "alice"), ("id_format", "a,b"), ("x", "1")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        assert_eq!(i.meta, expect);
    }

    #[test]
    fn set_meta_empty_is_error() {
        for v in ["", "a=1,,b=2", "=x"] {
            assert_eq!(
                err(&[("Grip-Set-Meta", v)]).to_string(),
                "invalid Grip-Set-Meta header: Grip-Set-Meta cannot be empty",
                "{v:?}"
            );
        }
    }

    // ---- Grip-Expose-Headers

    #[test]
    fn expose_headers() {
        let i = ok(&[
            ("Grip-Expose-Headers", "Content-Type, X-A"),
            ("Grip-Expose-Headers", "X-B"),
        ]);
        assert_eq!(
            i.expose_headers,
            Some(vec!["Content-Type".into(), "X-A".into(), "X-B".into()])
        );
        assert_eq!(ok(&[("Grip-Expose-Headers", "")]).expose_headers, None);
    }

    // ---- JSON instruct

    fn jok(body: &str) -> Instruct {
        parse_json(body.as_bytes()).expect("should parse")
    }

    fn jerr(body: &str) -> String {
        match parse_json(body.as_bytes()) {
            Err(InstructError::Json(m)) => m,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn conformance_25_json_instruct() {
        let i = jok(
            r#"{"hold":{"mode":"stream","channels":[{"name":"ji"}],"keep-alive":{"content":"ka\n","timeout":2}},"response":{"code":200,"headers":{"Content-Type":"text/plain","X-Inst":"1"},"body":"instruct-start\n"}}"#,
        );
        assert_eq!(i.hold, Some(HoldMode::Stream));
        assert_eq!(i.channels, vec![ch("ji")]);
        assert_eq!(
            i.keep_alive,
            Some(KeepAlive {
                content: Bytes::from_static(b"ka\n"),
                timeout_secs: 2,
                mode: KeepAliveMode::Idle,
            })
        );
        assert_eq!(i.timeout_secs, 55);
        assert_eq!(
            i.response,
            Some(InstructResponse {
                code: 200,
                reason: None,
                headers: vec![
                    ("Content-Type".into(), "text/plain".into()),
                    ("X-Inst".into(), "1".into()),
                ],
                body: Bytes::from_static(b"instruct-start\n"),
            })
        );
    }

    #[test]
    fn json_full_hold() {
        let i = jok(
            r#"{"hold":{"channels":[{"name":"a","prev-id":"p","filters":["skip-self"]},{"name":"b"},{"name":"a"}],
                "timeout":2,"keep-alive":{"content-bin":"OgoK","timeout":0,"mode":"interval"},
                "meta":{"user":"alice"}}}"#,
        );
        assert_eq!(i.hold, Some(HoldMode::Response));
        assert_eq!(
            i.channels,
            vec![
                ChannelSpec {
                    name: "a".into(),
                    prev_id: Some("p".into()),
                    filters: vec!["skip-self".into()],
                },
                ch("b"),
            ]
        );
        assert_eq!(i.timeout_secs, 5);
        assert_eq!(
            i.keep_alive,
            Some(KeepAlive {
                content: Bytes::from_static(b":\n\n"),
                timeout_secs: 1,
                mode: KeepAliveMode::Interval,
            })
        );
        assert_eq!(i.meta.get("user").map(String::as_str), Some("alice"));
        assert_eq!(i.response, None);
        assert_eq!(i.status, None);
        assert_eq!(i.next_link, None);
        assert_eq!(i.expose_headers, None);
    }

    #[test]
    fn json_keep_alive_defaults_and_without_content() {
        let i = jok(
            r#"{"hold":{"mode":"stream","channels":[{"name":"a"}],"keep-alive":{"content":"x"}}}"#,
        );
        let ka = i.keep_alive.expect("ka");
        assert_eq!(ka.timeout_secs, 55);
        assert_eq!(ka.mode, KeepAliveMode::Idle);
        let i = jok(
            r#"{"hold":{"mode":"stream","channels":[{"name":"a"}],"keep-alive":{"timeout":3}}}"#,
        );
        assert_eq!(i.keep_alive, None);
    }

    #[test]
    fn json_without_hold() {
        let i = jok(
            r#"{"response":{"body-bin":"aGk=","code":201,"reason":"Made","headers":[["A","1"],["A","2"]]}}"#,
        );
        assert_eq!(i.hold, None);
        assert!(i.channels.is_empty());
        assert_eq!(
            i.response,
            Some(InstructResponse {
                code: 201,
                reason: Some("Made".into()),
                headers: vec![("A".into(), "1".into()), ("A".into(), "2".into())],
                body: Bytes::from_static(b"hi"),
            })
        );
        let i = jok("{}");
        assert_eq!(i.hold, None);
        assert_eq!(i.response, None);
        assert_eq!(i.timeout_secs, 55);
    }

    #[test]
    fn json_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "nope",
                "failed to parse application/grip-instruct content as JSON",
            ),
            ("[]", "instruct must be an object"),
            (r#"{"hold":1}"#, "instruct contains 'hold' with wrong type"),
            (r#"{"hold":{}}"#, "hold does not contain 'channels'"),
            (
                r#"{"hold":{"channels":[]}}"#,
                "hold contains 'channels' with no entries",
            ),
            (
                r#"{"hold":{"channels":{}}}"#,
                "hold contains 'channels' with wrong type",
            ),
            (
                r#"{"hold":{"mode":"x","channels":[{"name":"a"}]}}"#,
                "hold 'mode' must be set to either 'response' or 'stream'",
            ),
            (
                r#"{"hold":{"mode":1,"channels":[{"name":"a"}]}}"#,
                "hold contains 'mode' with wrong type",
            ),
            (r#"{"hold":{"channels":["a"]}}"#, "channel is not an object"),
            (
                r#"{"hold":{"channels":[{}]}}"#,
                "channel does not contain 'name'",
            ),
            (
                r#"{"hold":{"channels":[{"name":""}]}}"#,
                "channel contains 'name' with invalid value",
            ),
            (
                r#"{"hold":{"channels":[{"name":"a","prev-id":1}]}}"#,
                "channel contains 'prev-id' with wrong type",
            ),
            (
                r#"{"hold":{"channels":[{"name":"a","filters":[1]}]}}"#,
                "filters contains value with wrong type",
            ),
            (
                r#"{"hold":{"channels":[{"name":"a","filters":["1","2","3","4","5","6"]}]}}"#,
                "too many filters for channel 'a'",
            ),
            (
                r#"{"hold":{"channels":[{"name":"a"}],"timeout":"5"}}"#,
                "hold contains 'timeout' with wrong type",
            ),
            (
                r#"{"hold":{"channels":[{"name":"a"}],"timeout":-1}}"#,
                "hold contains 'timeout' with invalid value",
            ),
            (
                r#"{"hold":{"channels":[{"name":"a"}],"keep-alive":"x"}}"#,
                "hold contains 'keep-alive' with wrong type",
            ),
            (
                r#"{"hold":{"channels":[{"name":"a"}],"keep-alive":{"content":1}}}"#,
                "keep-alive contains 'content' with wrong type",
            ),
            (
                r#"{"hold":{"channels":[{"name":"a"}],"keep-alive":{"content-bin":"!!"}}}"#,
                "keep-alive contains 'content-bin' with invalid base64",
            ),
            (
                r#"{"hold":{"channels":[{"name":"a"}],"keep-alive":{"content":"x","timeout":-2}}}"#,
                "keep-alive contains 'timeout' with invalid value",
            ),
            (
                r#"{"hold":{"channels":[{"name":"a"}],"keep-alive":{"content":"x","mode":"x"}}}"#,
                "keep-alive contains 'mode' with unknown value",
            ),
            (
                r#"{"hold":{"channels":[{"name":"a"}],"meta":[]}}"#,
                "hold contains 'meta' with wrong type",
            ),
            (
                r#"{"hold":{"channels":[{"name":"a"}],"meta":{"k":1}}}"#,
                "'meta' contains 'k' with wrong type",
            ),
            (
                r#"{"response":"x"}"#,
                "instruct contains 'response' with wrong type",
            ),
            (
                r#"{"response":{"code":"200"}}"#,
                "response contains 'code' with wrong type",
            ),
            (
                r#"{"response":{"code":1000}}"#,
                "response contains 'code' with invalid value",
            ),
            (
                r#"{"response":{"code":-1}}"#,
                "response contains 'code' with invalid value",
            ),
            (
                r#"{"response":{"reason":5}}"#,
                "response contains 'reason' with wrong type",
            ),
            (
                r#"{"response":{"headers":"x"}}"#,
                "response contains 'headers' with wrong type",
            ),
            (
                r#"{"response":{"headers":[["a"]]}}"#,
                "headers contains list with wrong number of elements",
            ),
            (
                r#"{"response":{"body":1}}"#,
                "response contains 'body' with wrong type",
            ),
            (
                r#"{"response":{"body-bin":"*"}}"#,
                "response contains 'body-bin' with invalid base64",
            ),
        ];
        for (body, expect) in cases {
            assert_eq!(jerr(body), *expect, "body {body}");
        }
        assert_eq!(
            parse_json(b"[]").expect_err("err").to_string(),
            "invalid grip-instruct body: instruct must be an object"
        );
    }
}
