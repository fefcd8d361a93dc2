//! How this tier starts gripmesh for [`crate::common`]'s helpers: the binary, spawned
//! ([`testkit::Gripmesh`]).

pub(crate) use testkit::Gripmesh;

/// `gripmesh standalone` on `127.0.0.1:0` listeners with `args`, once it printed `ready`.
pub(crate) async fn standalone(args: &[&str]) -> Gripmesh {
    Gripmesh::standalone(crate::common::BIN, args).await
}
