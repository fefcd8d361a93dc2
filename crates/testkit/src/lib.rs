//! Test-only helpers: process launcher, scriptable fake origins, HTTP stream clients.
