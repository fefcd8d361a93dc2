// Starts Express Gateway with ./config (in-memory store: `db.redis.emulate`), ports and the
// origin from the environment: GW_HTTP_PORT, GW_ADMIN_PORT, GW_BACKEND (http://host:port).
// Used by tests/e2e/gateway.rs.
require('express-gateway')().load(require('path').join(__dirname, 'config')).run();
