//! GRIP WebSocket control messages (`c:` prefix).
