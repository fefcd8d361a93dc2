//! Subscription filters (Pushpin's `src/handler/filter.cpp`, `format.cpp`, `idformat.cpp`).
//!
//! A channel subscription may name up to [`crate::instruct::MAX_FILTERS_PER_CHANNEL`] filters
//! (`Grip-Channel: c; filter=skip-self`, grip-instruct `"filters"`, `c:subscribe` `"filters"`).
//! For every published item the edge runs the subscription's filters, in order, against the
//! subscription meta (`Grip-Set-Meta`, grip-instruct `meta`, WebSocket `set-meta`), the item's
//! publish meta and the connection's channels:
//!
//! * `skip-self` drops the item when sub meta `user` equals pub meta `sender`;
//! * `skip-users` drops it when sub meta `user` is in the comma list pub meta `skip_users`;
//! * `require-sub` drops it unless the connection is also subscribed to pub meta `require_sub`;
//! * `build-id` renders `%I` / `%(id)I` in the content with an id built from sub meta
//!   `id_format` (`%(channel)s` ⇒ that channel's last id), hex-encoded when sub meta
//!   `id_encoding` is `hex`;
//! * `var-subst` replaces `%(name)s` in the content with sub meta `name`.
//!
//! Unknown names are ignored, as in Pushpin. The first two kinds only decide delivery, so a
//! subscription with only those keeps sharing the rendered message; the content filters
//! produce per-subscriber content. A publish format with `content-filters` only reaches
//! subscriptions whose content filters are exactly that list.

use bytes::Bytes;
use std::collections::BTreeMap;

/// One filter Pushpin 1.41 knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterKind {
    /// Drop when sub meta `user` == pub meta `sender`.
    SkipSelf,
    /// Drop when sub meta `user` is in pub meta `skip_users`.
    SkipUsers,
    /// Drop unless the connection is subscribed to pub meta `require_sub`.
    RequireSub,
    /// Render ids into the content.
    BuildId,
    /// Substitute `%(name)s` with sub meta values.
    VarSubst,
}

/// Every supported filter, in Pushpin's order.
pub const ALL: [FilterKind; 5] = [
    FilterKind::SkipSelf,
    FilterKind::SkipUsers,
    FilterKind::RequireSub,
    FilterKind::BuildId,
    FilterKind::VarSubst,
];

impl FilterKind {
    /// The filter named `name`, if supported.
    pub fn parse(name: &str) -> Option<FilterKind> {
        ALL.into_iter().find(|k| k.name() == name)
    }

    /// The filter's name.
    pub fn name(self) -> &'static str {
        match self {
            FilterKind::SkipSelf => "skip-self",
            FilterKind::SkipUsers => "skip-users",
            FilterKind::RequireSub => "require-sub",
            FilterKind::BuildId => "build-id",
            FilterKind::VarSubst => "var-subst",
        }
    }

    /// True for filters that change message content (Pushpin's `MessageContent` target).
    pub fn changes_content(self) -> bool {
        matches!(self, FilterKind::BuildId | FilterKind::VarSubst)
    }
}

/// The filters of one channel subscription, in order (unknown names dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSet {
    kinds: Vec<FilterKind>,
}

impl FilterSet {
    /// Builds the set from filter names as the origin gave them.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> FilterSet {
        FilterSet {
            kinds: names
                .iter()
                .filter_map(|n| FilterKind::parse(n.as_ref()))
                .collect(),
        }
    }

    /// No filter at all.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// The filters, in order.
    pub fn kinds(&self) -> &[FilterKind] {
        &self.kinds
    }

    /// True when a published `content-filters` list matches this subscription: it must equal
    /// the subscription's content-changing filters, in order (Pushpin's rule). `None` (the
    /// format had no `content-filters`) always matches.
    pub fn accepts_content_filters(&self, wanted: Option<&[String]>) -> bool {
        let Some(wanted) = wanted else { return true };
        let mine = self.kinds.iter().filter(|k| k.changes_content());
        mine.clone().count() == wanted.len() && mine.zip(wanted).all(|(k, w)| k.name() == w)
    }

    /// True when some filter may change content.
    pub fn changes_content(&self) -> bool {
        self.kinds.iter().any(|k| k.changes_content())
    }
}

/// What the filters see besides the content.
#[derive(Debug, Clone, Copy)]
pub struct FilterContext<'a> {
    /// Subscription meta.
    pub sub_meta: &'a BTreeMap<String, String>,
    /// The published item's meta.
    pub pub_meta: &'a BTreeMap<String, String>,
    /// The connection's channels and the last id known on each (`None`: no id yet).
    pub channels: &'a [(&'a str, Option<&'a str>)],
}

/// What to do with an item for one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterOutcome {
    /// Do not deliver.
    Drop,
    /// Deliver the shared content unchanged.
    Unchanged,
    /// Deliver this content instead.
    Content(Bytes),
}

/// A content filter failed (bad directive, missing variable); Pushpin drops the item then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter error: {0}")]
pub struct FilterError(pub String);

/// Runs `filters` over `content`. Stops at the first filter that drops.
pub fn apply(
    filters: &FilterSet,
    ctx: &FilterContext<'_>,
    content: &Bytes,
) -> Result<FilterOutcome, FilterError> {
    let mut changed: Option<Bytes> = None;
    for kind in &filters.kinds {
        let current = changed.as_ref().unwrap_or(content);
        match kind {
            FilterKind::SkipSelf => {
                let user = nonempty(ctx.sub_meta.get("user"));
                let sender = nonempty(ctx.pub_meta.get("sender"));
                if user.is_some() && user == sender {
                    return Ok(FilterOutcome::Drop);
                }
            }
            FilterKind::SkipUsers => {
                if let (Some(user), Some(skip)) = (
                    nonempty(ctx.sub_meta.get("user")),
                    ctx.pub_meta.get("skip_users"),
                ) && skip.split(',').map(str::trim).any(|s| s == user)
                {
                    return Ok(FilterOutcome::Drop);
                }
            }
            FilterKind::RequireSub => {
                if let Some(required) = nonempty(ctx.pub_meta.get("require_sub"))
                    && !ctx.channels.iter().any(|(c, _)| *c == required)
                {
                    return Ok(FilterOutcome::Drop);
                }
            }
            FilterKind::VarSubst => {
                let out = process(current, |directive, arg| {
                    if directive != b's' {
                        return Err(format!("Unknown directive '{}'", directive as char));
                    }
                    let arg = arg.ok_or("Directive 's' requires argument")?;
                    let name = String::from_utf8_lossy(arg);
                    ctx.sub_meta
                        .get(name.as_ref())
                        .map(|v| v.as_bytes().to_vec())
                        .ok_or_else(|| format!("No such variable '{name}'"))
                })
                .map_err(FilterError)?;
                changed = Some(Bytes::from(out));
            }
            FilterKind::BuildId => {
                let out = build_id(ctx, current)?;
                changed = Some(Bytes::from(out));
            }
        }
    }
    Ok(match changed {
        Some(c) if c != *content => FilterOutcome::Content(c),
        _ => FilterOutcome::Unchanged,
    })
}

fn nonempty(v: Option<&String>) -> Option<&str> {
    v.map(String::as_str).filter(|s| !s.is_empty())
}

fn build_id(ctx: &FilterContext<'_>, content: &[u8]) -> Result<Vec<u8>, FilterError> {
    let format = ctx
        .sub_meta
        .get("id_format")
        .ok_or_else(|| FilterError("no sub meta 'id_format'".into()))?;
    // Pushpin renders the default id only when the connection has channels.
    let id: Option<Vec<u8>> = if ctx.channels.is_empty() {
        None
    } else {
        Some(
            process(format.as_bytes(), |directive, arg| {
                if directive != b's' {
                    return Err(format!("Unknown directive '{}'", directive as char));
                }
                let arg = arg.ok_or("Directive 's' requires argument")?;
                let name = String::from_utf8_lossy(arg);
                ctx.channels
                    .iter()
                    .find(|(c, _)| *c == name)
                    .and_then(|(_, id)| *id)
                    .map(|id| id.as_bytes().to_vec())
                    .ok_or_else(|| format!("No such variable '{name}'"))
            })
            .map_err(|e| FilterError(format!("failed to render ID: {e}")))?,
        )
    };
    let hex = match ctx.sub_meta.get("id_encoding").map(String::as_str) {
        None => false,
        Some("hex") => true,
        Some(other) => return Err(FilterError(format!("unsupported encoding: {other}"))),
    };
    process(content, |directive, arg| {
        if directive != b'I' {
            return Err(format!("Unknown directive '{}'", directive as char));
        }
        let id = match arg {
            Some(a) => a.to_vec(),
            None => id
                .clone()
                .ok_or("No ID specified and no default ID in context")?,
        };
        Ok(if hex {
            id.iter()
                .flat_map(|b| format!("{b:02x}").into_bytes())
                .collect()
        } else {
            id
        })
    })
    .map_err(FilterError)
}

/// Pushpin's `Format::process`: `%%` ⇒ `%`, `%X` and `%(arg)X` (with `\` escapes inside the
/// parentheses) ⇒ `handle(X, arg)`; anything else after `%` is an error.
fn process(
    format: &[u8],
    mut handle: impl FnMut(u8, Option<&[u8]>) -> Result<Vec<u8>, String>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(format.len());
    let mut n = 0;
    while n < format.len() {
        let c = format[n];
        if c != b'%' {
            out.push(c);
            n += 1;
            continue;
        }
        let at = n;
        n += 1;
        let Some(&c) = format.get(n) else {
            return Err(format!("Expected directive after '%' at position {at}"));
        };
        if c == b'%' {
            out.push(b'%');
        } else if c == b'(' {
            let field_start = n;
            n += 1;
            let mut arg = Vec::new();
            let mut closed = false;
            while n < format.len() {
                match format[n] {
                    b'\\' => {
                        n += 1;
                        let Some(&e) = format.get(n) else {
                            return Err(format!("Expected character after '\\' at position {n}"));
                        };
                        arg.push(e);
                    }
                    b')' => {
                        closed = true;
                        break;
                    }
                    other => arg.push(other),
                }
                n += 1;
            }
            if !closed {
                return Err(format!(
                    "Unterminated field starting at position {field_start}"
                ));
            }
            n += 1;
            let Some(&d) = format.get(n) else {
                return Err(format!("Expected directive after ')' at position {n}"));
            };
            let v = handle(d, Some(&arg)).map_err(|e| format!("{e} at position {n}"))?;
            out.extend_from_slice(&v);
        } else if c.is_ascii_alphabetic() {
            let v = handle(c, None).map_err(|e| format!("{e} at position {n}"))?;
            out.extend_from_slice(&v);
        } else {
            return Err(format!("Unknown directive '{}' at position {n}", c as char));
        }
        n += 1;
    }
    Ok(out)
}

/// The `Grip-Feature` entries for the filters this build supports.
pub fn feature_names() -> impl Iterator<Item = String> {
    ALL.into_iter().map(|k| format!("filter:{}", k.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn run(
        names: &[&str],
        sub: &[(&str, &str)],
        publ: &[(&str, &str)],
        channels: &[(&str, Option<&str>)],
        content: &str,
    ) -> Result<FilterOutcome, FilterError> {
        let sub = meta(sub);
        let publ = meta(publ);
        let ctx = FilterContext {
            sub_meta: &sub,
            pub_meta: &publ,
            channels,
        };
        apply(
            &FilterSet::from_names(names),
            &ctx,
            &Bytes::copy_from_slice(content.as_bytes()),
        )
    }

    fn content(s: &str) -> FilterOutcome {
        FilterOutcome::Content(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn pushpin_filtertest_skip_self_then_var_subst() {
        let names = ["skip-self", "var-subst"];
        let sub = [("user", "alice")];
        assert_eq!(
            run(&names, &sub, &[], &[], "hello %(user)s"),
            Ok(content("hello alice"))
        );
        assert_eq!(
            run(&names, &sub, &[("sender", "alice")], &[], "hello %(user)s"),
            Ok(FilterOutcome::Drop)
        );
    }

    #[test]
    fn skip_self_needs_both_values() {
        let f = ["skip-self"];
        assert_eq!(
            run(&f, &[("user", "a")], &[("sender", "b")], &[], "x"),
            Ok(FilterOutcome::Unchanged)
        );
        assert_eq!(
            run(&f, &[], &[("sender", "")], &[], "x"),
            Ok(FilterOutcome::Unchanged)
        );
        assert_eq!(
            run(&f, &[("user", "")], &[("sender", "")], &[], "x"),
            Ok(FilterOutcome::Unchanged)
        );
    }

    #[test]
    fn skip_users_and_require_sub() {
        let f = ["skip-users"];
        assert_eq!(
            run(
                &f,
                &[("user", "bob")],
                &[("skip_users", "al, bob ,")],
                &[],
                "x"
            ),
            Ok(FilterOutcome::Drop)
        );
        assert_eq!(
            run(&f, &[("user", "bo")], &[("skip_users", "bob")], &[], "x"),
            Ok(FilterOutcome::Unchanged)
        );
        let f = ["require-sub"];
        let chans = [("a", None), ("b", Some("1"))];
        assert_eq!(
            run(&f, &[], &[("require_sub", "b")], &chans, "x"),
            Ok(FilterOutcome::Unchanged)
        );
        assert_eq!(
            run(&f, &[], &[("require_sub", "c")], &chans, "x"),
            Ok(FilterOutcome::Drop)
        );
        assert_eq!(run(&f, &[], &[], &chans, "x"), Ok(FilterOutcome::Unchanged));
    }

    #[test]
    fn var_subst_errors_and_escapes() {
        let f = ["var-subst"];
        assert_eq!(
            run(&f, &[("a", "1")], &[], &[], "100%% %(a)s"),
            Ok(content("100% 1"))
        );
        assert_eq!(
            run(&f, &[], &[], &[], "%(nope)s"),
            Err(FilterError("No such variable 'nope' at position 7".into()))
        );
        assert!(run(&f, &[], &[], &[], "50%").is_err());
        assert!(run(&f, &[], &[], &[], "%d").is_err());
        assert!(run(&f, &[], &[], &[], "%(x").is_err());
        assert_eq!(
            run(&f, &[("a)b", "v")], &[], &[], "%(a\\)b)s"),
            Ok(content("v"))
        );
        // No directive at all: the shared content is kept.
        assert_eq!(
            run(&f, &[], &[], &[], "plain"),
            Ok(FilterOutcome::Unchanged)
        );
    }

    #[test]
    fn build_id_renders_ids() {
        let f = ["build-id"];
        let chans = [("a", Some("7")), ("b", Some("9"))];
        assert_eq!(
            run(
                &f,
                &[("id_format", "%(a)s-%(b)s")],
                &[],
                &chans,
                "id:%I;%(x)I"
            ),
            Ok(content("id:7-9;x"))
        );
        assert_eq!(
            run(
                &f,
                &[("id_format", "%(a)s"), ("id_encoding", "hex")],
                &[],
                &chans,
                "%I"
            ),
            Ok(content("37"))
        );
        assert!(run(&f, &[], &[], &chans, "%I").is_err(), "no id_format");
        assert!(
            run(&f, &[("id_format", "%(c)s")], &[], &chans, "%I").is_err(),
            "unknown channel"
        );
        assert!(
            run(
                &f,
                &[("id_format", "x"), ("id_encoding", "b64")],
                &[],
                &chans,
                "%I"
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_names_are_ignored_and_content_filters_match_exactly() {
        let set = FilterSet::from_names(&["nope", "skip-self", "var-subst", "build-id"]);
        assert_eq!(
            set.kinds(),
            &[
                FilterKind::SkipSelf,
                FilterKind::VarSubst,
                FilterKind::BuildId
            ]
        );
        assert!(set.accepts_content_filters(None));
        assert!(set.accepts_content_filters(Some(&["var-subst".into(), "build-id".into()])));
        assert!(!set.accepts_content_filters(Some(&["build-id".into(), "var-subst".into()])));
        assert!(!set.accepts_content_filters(Some(&[])));
        assert!(FilterSet::default().accepts_content_filters(Some(&[])));
        assert!(set.changes_content());
        assert!(!FilterSet::from_names(&["skip-self"]).changes_content());
    }
}
