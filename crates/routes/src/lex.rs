//! Line lexer: splits one routes-file line into sections and each section into its value and
//! properties, honouring double quotes, `\"`/`\\` escapes and `#` comments.
//!
//! Quoting is tracked per character, so a quoted `,`, `=`, `#` or space is always literal, and
//! a quote may cover any part of a section (`header="X-A: b, c"` and `"my host":80` both work).

/// One property of a section: `name` or `name=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawProp {
    pub(crate) name: String,
    /// `None` when written without `=`; `Some("")` for `name=`.
    pub(crate) value: Option<String>,
}

impl RawProp {
    /// The property as written (unquoted), for error messages.
    pub(crate) fn display(&self) -> String {
        match &self.value {
            Some(v) => format!("{}={}", self.name, v),
            None => self.name.clone(),
        }
    }
}

/// One whitespace-separated section: `value[,prop[=val]]...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawSection {
    /// Empty when the first comma-separated part contains an unquoted `=` (it is then a prop).
    pub(crate) value: String,
    pub(crate) props: Vec<RawProp>,
}

impl RawSection {
    /// The section as written (unquoted), for error messages.
    pub(crate) fn display(&self) -> String {
        let mut out = self.value.clone();
        for (i, p) in self.props.iter().enumerate() {
            if i > 0 || !self.value.is_empty() {
                out.push(',');
            }
            out.push_str(&p.display());
        }
        out
    }
}

/// A character and whether it came from inside double quotes.
#[derive(Debug, Clone, Copy)]
struct Ch {
    c: char,
    quoted: bool,
}

fn text(chars: &[Ch]) -> String {
    chars.iter().map(|ch| ch.c).collect()
}

fn find_unquoted(chars: &[Ch], c: char) -> Option<usize> {
    chars.iter().position(|ch| !ch.quoted && ch.c == c)
}

/// Splits a line into sections. An empty result means a blank or comment-only line.
pub(crate) fn split_line(line: &str) -> Result<Vec<RawSection>, String> {
    let mut sections = Vec::new();
    let mut current: Vec<Ch> = Vec::new();
    // A section made only of `""` has no characters but still exists.
    let mut started = false;
    let mut in_quote = false;
    let mut it = line.chars();

    while let Some(c) = it.next() {
        if c.is_control() && c != '\t' {
            return Err(format!("control character {c:?} in line"));
        }
        if in_quote {
            match c {
                '"' => in_quote = false,
                '\\' => match it.next() {
                    Some(e @ ('"' | '\\')) => current.push(Ch { c: e, quoted: true }),
                    Some(e) => return Err(format!("invalid escape '\\{e}' in quoted value")),
                    None => return Err("unterminated quote".to_string()),
                },
                _ => current.push(Ch { c, quoted: true }),
            }
            continue;
        }
        match c {
            ' ' | '\t' => {
                if started {
                    sections.push(split_section(&current)?);
                    current.clear();
                    started = false;
                }
            }
            '#' => break,
            '"' => {
                in_quote = true;
                started = true;
            }
            _ => {
                current.push(Ch { c, quoted: false });
                started = true;
            }
        }
    }
    if in_quote {
        return Err("unterminated quote".to_string());
    }
    if started {
        sections.push(split_section(&current)?);
    }
    Ok(sections)
}

fn split_section(chars: &[Ch]) -> Result<RawSection, String> {
    let mut parts: Vec<&[Ch]> = Vec::new();
    let mut rest = chars;
    while let Some(i) = find_unquoted(rest, ',') {
        parts.push(&rest[..i]);
        rest = &rest[i + 1..];
    }
    parts.push(rest);

    let mut parts = parts.into_iter();
    let mut value = String::new();
    let mut props = Vec::new();
    if let Some(first) = parts.next() {
        if find_unquoted(first, '=').is_some() {
            // Pushpin: an `=` in the value means the value is empty and this part is a prop.
            props.push(split_prop(first, text(chars))?);
        } else {
            value = text(first);
        }
    }
    for part in parts {
        props.push(split_prop(part, text(chars))?);
    }
    Ok(RawSection { value, props })
}

fn split_prop(part: &[Ch], section: String) -> Result<RawProp, String> {
    let (name, value) = match find_unquoted(part, '=') {
        Some(i) => (text(&part[..i]), Some(text(&part[i + 1..]))),
        None => (text(part), None),
    };
    if name.is_empty() {
        return Err(format!("empty property name in '{section}'"));
    }
    Ok(RawProp { name, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(name: &str, value: Option<&str>) -> RawProp {
        RawProp {
            name: name.to_string(),
            value: value.map(str::to_string),
        }
    }

    fn split(line: &str) -> Vec<RawSection> {
        match split_line(line) {
            Ok(s) => s,
            Err(e) => panic!("split_line({line:?}) failed: {e}"),
        }
    }

    #[test]
    fn blank_and_comment_lines_are_empty() {
        assert!(split("").is_empty());
        assert!(split("   \t ").is_empty());
        assert!(split("# just a comment").is_empty());
        assert!(split("   # indented comment").is_empty());
    }

    #[test]
    fn sections_split_on_spaces_and_tabs() {
        let s = split("*,path_beg=/a \t 127.0.0.1:80,over_http   test # trailing");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].value, "*");
        assert_eq!(s[0].props, vec![prop("path_beg", Some("/a"))]);
        assert_eq!(s[1].value, "127.0.0.1:80");
        assert_eq!(s[1].props, vec![prop("over_http", None)]);
        assert_eq!(s[2].value, "test");
        assert!(s[2].props.is_empty());
    }

    #[test]
    fn comment_ends_unquoted_token() {
        let s = split("*,path_beg=/a#b c");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].props, vec![prop("path_beg", Some("/a"))]);
    }

    #[test]
    fn quoted_values_keep_spaces_commas_hashes_and_equals() {
        let s = split(r#"*,header="X-A: b, c # d=e",id="x y" h:1"#);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].props,
            vec![
                prop("header", Some("X-A: b, c # d=e")),
                prop("id", Some("x y")),
            ]
        );
    }

    #[test]
    fn escapes_in_quotes() {
        let s = split(r#"*,id="a\"b\\c" h:1"#);
        assert_eq!(s[0].props, vec![prop("id", Some(r#"a"b\c"#))]);
    }

    #[test]
    fn quoted_value_and_empty_quoted_prop_value() {
        let s = split(r#""*",prefix="" h:1"#);
        assert_eq!(s[0].value, "*");
        assert_eq!(s[0].props, vec![prop("prefix", Some(""))]);
        let s = split(r#""" h:1"#);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].value, "");
    }

    #[test]
    fn equals_in_first_part_means_empty_value() {
        let s = split("id=foo,path_beg=/x h:1");
        assert_eq!(s[0].value, "");
        assert_eq!(
            s[0].props,
            vec![prop("id", Some("foo")), prop("path_beg", Some("/x"))]
        );
        // A quoted `=` does not count.
        let s = split(r#""a=b",aco h:1"#);
        assert_eq!(s[0].value, "a=b");
    }

    #[test]
    fn prop_value_may_contain_equals() {
        let s = split("*,sig_key=base64:YWJj== h:1");
        assert_eq!(s[0].props, vec![prop("sig_key", Some("base64:YWJj=="))]);
    }

    #[test]
    fn errors() {
        let cases = [
            (r#"*,id="abc h:1"#, "unterminated quote"),
            (r#"*,id="abc\"#, "unterminated quote"),
            (r#"*,id="a\nb" h:1"#, "'\\n'"),
            ("*,,aco h:1", "empty property name"),
            ("*,aco, h:1", "'*,aco,'"),
            ("*,=x h:1", "empty property name"),
            ("*\u{1} h:1", "control character"),
        ];
        for (line, needle) in cases {
            match split_line(line) {
                Ok(s) => panic!("{line:?} should fail, got {s:?}"),
                Err(e) => assert!(e.contains(needle), "{line:?}: {e:?} lacks {needle:?}"),
            }
        }
    }
}
