#!/usr/bin/env python3
"""A WebSocket-over-HTTP origin written with the third-party `gripcontrol` library.

Used by the Rust end-to-end tests (tests/e2e/ws_py.rs) to prove that an origin built with the
official Python GRIP helpers works unchanged behind gripmesh.

    ws_origin_gripcontrol.py CHANNEL [--sig-key KEY]

Listens on 127.0.0.1 (ephemeral port) and prints `listening PORT` once ready. Every POST is a
batch of websocket-events (decoded with `gripcontrol.decode_websocket_events`):

* OPEN  -> OPEN + a `subscribe` control message for CHANNEL (`gripcontrol.websocket_control_message`)
* TEXT  -> the same text back with the GRIP message prefix `m:`
* CLOSE -> the same CLOSE back
* anything else -> nothing

Responses carry `Sec-WebSocket-Extensions: grip` and are encoded with
`gripcontrol.encode_websocket_events`. With `--sig-key`, requests whose `Grip-Sig` does not
validate (`gripcontrol.validate_sig`) are refused with 403.
"""

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gripcontrol
from gripcontrol import WebSocketEvent

EVENTS = "application/websocket-events"


def make_handler(channel, sig_key):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status, content_type, body, extra=()):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""

            if sig_key is not None:
                token = self.headers.get("Grip-Sig")
                if not token or not gripcontrol.validate_sig(token, sig_key):
                    self.reply(403, "text/plain", b"invalid Grip-Sig\n")
                    return

            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if content_type != EVENTS:
                self.reply(400, "text/plain", b"expected websocket-events\n")
                return

            try:
                events = gripcontrol.decode_websocket_events(body)
            except ValueError as e:
                self.reply(400, "text/plain", ("bad events: %s\n" % e).encode())
                return

            out = []
            for event in events:
                if event.type == "OPEN":
                    out.append(WebSocketEvent("OPEN"))
                    subscribe = gripcontrol.websocket_control_message(
                        "subscribe", {"channel": channel}
                    )
                    out.append(WebSocketEvent("TEXT", "c:" + subscribe))
                elif event.type == "TEXT":
                    out.append(WebSocketEvent("TEXT", b"m:" + (event.content or b"")))
                elif event.type == "CLOSE":
                    out.append(WebSocketEvent("CLOSE", event.content))

            self.reply(
                200,
                EVENTS,
                gripcontrol.encode_websocket_events(out),
                extra=[("Sec-WebSocket-Extensions", "grip")],
            )

        def log_message(self, format, *args):
            sys.stderr.write("[py-origin] " + (format % args) + "\n")

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("channel")
    parser.add_argument("--sig-key", default=None)
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(args.channel, args.sig_key))
    server.daemon_threads = True
    print("listening %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
