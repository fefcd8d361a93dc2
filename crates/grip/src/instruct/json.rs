//! The `application/grip-instruct` JSON body form of an instruction: `hold` (channels,
//! timeout, keep-alive, meta) and `response`.

use super::{
    ChannelSpec, DEFAULT_HOLD_TIMEOUT_SECS, DEFAULT_KEEP_ALIVE_SECS, HoldMode, Instruct,
    InstructError, InstructResponse, KeepAlive, KeepAliveMode, MAX_FILTERS_PER_CHANNEL,
    MIN_HOLD_TIMEOUT_SECS, MIN_KEEP_ALIVE_SECS,
};
use crate::jsonutil::{self, Obj};
use bytes::Bytes;
use serde_json::Value;
use std::collections::BTreeMap;

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

#[cfg(test)]
mod tests {
    use super::super::tests::ch;
    use super::*;

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
