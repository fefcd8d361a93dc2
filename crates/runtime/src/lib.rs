//! Process plumbing: signals, drain, tracing and metrics init, the admin server.
