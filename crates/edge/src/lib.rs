//! The edge tier: client listener, origin proxying, holds, subscriber registry.
