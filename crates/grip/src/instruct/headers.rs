//! The `Grip-*` header form of an instruction: `Grip-Hold`, `Grip-Channel`, `Grip-Timeout`,
//! `Grip-Keep-Alive`, `Grip-Status`, `Grip-Link`, `Grip-Set-Meta` and `Grip-Expose-Headers`.

use super::hvalue::{
    param, parse_entry, parse_non_negative, parse_param_list, split_list, unescape_cstring,
};
use super::{
    ChannelSpec, DEFAULT_HOLD_TIMEOUT_SECS, DEFAULT_KEEP_ALIVE_SECS,
    DEFAULT_NEXT_LINK_TIMEOUT_SECS, HoldMode, Instruct, InstructError, KeepAlive, KeepAliveMode,
    MAX_FILTERS_PER_CHANNEL, MIN_HOLD_TIMEOUT_SECS, MIN_KEEP_ALIVE_SECS, NextLink, StatusOverride,
};
use crate::jsonutil;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use std::collections::BTreeMap;

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
    use super::super::tests::{ch, hm};
    use super::*;
    use crate::instruct::parse_json;

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
}
