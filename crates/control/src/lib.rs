//! The control tier: publish API (HTTP), publish auth, route store.
