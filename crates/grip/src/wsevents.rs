//! The `application/websocket-events` codec (WebSocket-over-HTTP).
