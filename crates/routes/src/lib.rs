//! Pushpin `routes` files: parsing, validation and request matching.
//!
//! One route per line: `CONDITION TARGET [TARGET...]`, `#` comments, blank lines ignored. Each
//! section is `value[,prop[=val]]...`; values may be double-quoted with `\"` and `\\` escapes.
//! A file with any error is rejected whole; the error names the line and the reason.
//!
//! See [`RouteTable::parse`] for what is accepted, [`RouteTable::resolve`] for matching and
//! [`Route::rewrite_path`] for path rewriting.

mod lex;
mod parse;
pub mod path;
mod route;
mod table;

pub use route::{JsonpConfig, Proto, Route, RouteRequest, Target, TargetAddr};
pub use table::RouteTable;

/// A parse error: the 1-based line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RoutesError {
    /// 1-based line number.
    pub line: usize,
    /// Human-readable reason, naming the offending section or property.
    pub reason: String,
}

#[cfg(test)]
mod test_util;
