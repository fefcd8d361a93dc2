//! How this tier starts gripmesh for [`crate::common`]'s helpers: in process
//! ([`crate::sandbox::Sandbox`]).

pub(crate) use crate::sandbox::Sandbox as Gripmesh;

/// `gripmesh standalone` on `127.0.0.1:0` listeners with `args`, started.
pub(crate) async fn standalone(args: &[&str]) -> Gripmesh {
    Gripmesh::standalone(args).await
}
