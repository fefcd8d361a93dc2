//! Small helpers for reading loosely typed JSON with Pushpin-style error texts
//! (`<parent> does not contain '<key>'`, `<parent> contains '<key>' with wrong type`).
//!
//! JSON `null` is treated as "absent" for optional fields, like Pushpin (Qt turns `null` into an
//! invalid variant, which its getters treat as missing).

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A JSON object.
pub(crate) type Obj = Map<String, Value>;

/// Standard-alphabet base64 that accepts input with or without `=` padding.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes standard base64 (padding optional, surrounding ASCII whitespace ignored).
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    BASE64_LENIENT.decode(text.trim()).ok()
}

/// The value of `key`, with JSON `null` treated as absent.
pub(crate) fn get<'a>(obj: &'a Obj, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// True when `key` is present and not `null`.
pub(crate) fn has(obj: &Obj, key: &str) -> bool {
    get(obj, key).is_some()
}

fn wrong_type(pn: &str, key: &str) -> String {
    format!("{pn} contains '{key}' with wrong type")
}

/// `<pn> contains '<key>' with invalid value`.
pub(crate) fn invalid_value(pn: &str, key: &str) -> String {
    format!("{pn} contains '{key}' with invalid value")
}

/// `<pn> does not contain '<key>'`.
pub(crate) fn missing(pn: &str, key: &str) -> String {
    format!("{pn} does not contain '{key}'")
}

/// Optional string field.
pub(crate) fn opt_str<'a>(obj: &'a Obj, pn: &str, key: &str) -> Result<Option<&'a str>, String> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(wrong_type(pn, key)),
    }
}

/// Required string field.
pub(crate) fn req_str<'a>(obj: &'a Obj, pn: &str, key: &str) -> Result<&'a str, String> {
    opt_str(obj, pn, key)?.ok_or_else(|| missing(pn, key))
}

/// Optional object field.
pub(crate) fn opt_obj<'a>(obj: &'a Obj, pn: &str, key: &str) -> Result<Option<&'a Obj>, String> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(wrong_type(pn, key)),
    }
}

/// Optional list field.
pub(crate) fn opt_list<'a>(
    obj: &'a Obj,
    pn: &str,
    key: &str,
) -> Result<Option<&'a Vec<Value>>, String> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(wrong_type(pn, key)),
    }
}

/// Required list field.
pub(crate) fn req_list<'a>(obj: &'a Obj, pn: &str, key: &str) -> Result<&'a Vec<Value>, String> {
    opt_list(obj, pn, key)?.ok_or_else(|| missing(pn, key))
}

/// Optional integer field. Integral floats (`200.0`) are accepted; integers too large for `i64`
/// saturate (every caller range-checks afterwards).
pub(crate) fn opt_int(obj: &Obj, pn: &str, key: &str) -> Result<Option<i64>, String> {
    let Some(v) = get(obj, key) else {
        return Ok(None);
    };
    let Value::Number(n) = v else {
        return Err(wrong_type(pn, key));
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    if n.as_u64().is_some() {
        return Ok(Some(i64::MAX));
    }
    match n.as_f64() {
        // `as` saturates, which is what we want for out-of-range values.
        Some(f) if f.is_finite() && f.fract() == 0.0 => Ok(Some(f as i64)),
        _ => Err(wrong_type(pn, key)),
    }
}

/// Optional non-negative integer field (`<pn> contains '<key>' with invalid value` when negative).
pub(crate) fn opt_uint(obj: &Obj, pn: &str, key: &str) -> Result<Option<u64>, String> {
    match opt_int(obj, pn, key)? {
        None => Ok(None),
        Some(i) => u64::try_from(i)
            .map(Some)
            .map_err(|_| invalid_value(pn, key)),
    }
}

/// Optional boolean field.
pub(crate) fn opt_bool(obj: &Obj, pn: &str, key: &str) -> Result<Option<bool>, String> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong_type(pn, key)),
    }
}

/// An object of string values (`meta`): `'meta' contains '<k>' with wrong type` otherwise.
pub(crate) fn string_map(obj: &Obj, name: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        match v {
            Value::String(s) => {
                out.insert(k.clone(), s.clone());
            }
            _ => return Err(format!("'{name}' contains '{k}' with wrong type")),
        }
    }
    Ok(out)
}

/// A list of strings (`filters`, `content-filters`); `err` when an element is not a string.
pub(crate) fn string_list(list: &[Value], err: &str) -> Result<Vec<String>, String> {
    list.iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(err.to_owned()),
        })
        .collect()
}

/// HTTP headers given as an object (`{"Name": "value"}`) or a list of `[name, value]` pairs.
pub(crate) fn headers(v: &Value, pn: &str) -> Result<Vec<(String, String)>, String> {
    match v {
        Value::Array(list) => {
            let mut out = Vec::with_capacity(list.len());
            for el in list {
                let Value::Array(pair) = el else {
                    return Err("headers contains element with wrong type".to_owned());
                };
                let [name, value] = pair.as_slice() else {
                    return Err("headers contains list with wrong number of elements".to_owned());
                };
                let Value::String(name) = name else {
                    return Err("header contains name element with wrong type".to_owned());
                };
                let Value::String(value) = value else {
                    return Err("header contains value element with wrong type".to_owned());
                };
                out.push((name.clone(), value.clone()));
            }
            Ok(out)
        }
        Value::Object(map) => {
            let mut out = Vec::with_capacity(map.len());
            for (k, v) in map {
                let Value::String(s) = v else {
                    return Err(format!("headers contains '{k}' with wrong type"));
                };
                out.push((k.clone(), s.clone()));
            }
            Ok(out)
        }
        _ => Err(wrong_type(pn, "headers")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Obj {
        match v {
            Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn base64_padding_optional() {
        assert_eq!(decode_base64("aGk="), Some(b"hi".to_vec()));
        assert_eq!(decode_base64("aGk"), Some(b"hi".to_vec()));
        assert_eq!(decode_base64("a!b"), None);
    }

    #[test]
    fn ints() {
        let o = obj(
            json!({"a": 5, "b": 5.0, "c": 5.5, "d": "5", "e": 18446744073709551615u64, "f": null}),
        );
        assert_eq!(opt_int(&o, "p", "a"), Ok(Some(5)));
        assert_eq!(opt_int(&o, "p", "b"), Ok(Some(5)));
        assert_eq!(
            opt_int(&o, "p", "c"),
            Err("p contains 'c' with wrong type".to_owned())
        );
        assert_eq!(
            opt_int(&o, "p", "d"),
            Err("p contains 'd' with wrong type".to_owned())
        );
        assert_eq!(opt_int(&o, "p", "e"), Ok(Some(i64::MAX)));
        assert_eq!(opt_int(&o, "p", "f"), Ok(None));
        assert_eq!(opt_int(&o, "p", "zz"), Ok(None));
    }

    #[test]
    fn headers_forms() {
        assert_eq!(
            headers(&json!([["A", "1"], ["A", "2"]]), "x"),
            Ok(vec![("A".into(), "1".into()), ("A".into(), "2".into())])
        );
        assert_eq!(
            headers(&json!({"B": "2", "A": "1"}), "x"),
            Ok(vec![("A".into(), "1".into()), ("B".into(), "2".into())])
        );
        assert_eq!(
            headers(&json!([["A"]]), "x"),
            Err("headers contains list with wrong number of elements".to_owned())
        );
        assert_eq!(
            headers(&json!("A"), "x"),
            Err("x contains 'headers' with wrong type".to_owned())
        );
        assert_eq!(
            headers(&json!({"A": 1}), "x"),
            Err("headers contains 'A' with wrong type".to_owned())
        );
    }
}
