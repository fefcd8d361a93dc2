#!/usr/bin/env python3
"""A chat room origin written with the third-party `gripcontrol` library, the way
django-grip / serve-grip chat apps are: every client's message is published to the room with
`meta.sender`, and each connection subscribes with the `skip-self` filter so a sender does not
get its own message back.

Used by tests/e2e/parity_filters.rs against gripmesh and against Pushpin.

    chat_origin_gripcontrol.py CONTROL_URI [--channel ROOM] [--port PORT]

WebSocket-over-HTTP on 127.0.0.1 (PORT, default ephemeral; prints `listening PORT`). The user is the
`user` query parameter of the client's URL.

* OPEN  -> OPEN, `set-meta user=<user>`, `subscribe ROOM` with `filters: ["skip-self"]`
          (control messages built with `gripcontrol.websocket_control_message`)
* TEXT  -> publishes `<user>: <text>` to ROOM as a ws-message with meta `sender=<user>`
          (`gripcontrol.GripPubControl`), and answers nothing
* CLOSE -> the same CLOSE back
"""

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import gripcontrol
from gripcontrol import GripPubControl, WebSocketEvent, WebSocketMessageFormat
from pubcontrol import Item

EVENTS = "application/websocket-events"


def make_handler(control_uri, channel):
    pub = GripPubControl({"control_uri": control_uri})

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
            user = parse_qs(urlparse(self.path).query).get("user", ["anonymous"])[0]
            try:
                events = gripcontrol.decode_websocket_events(body)
            except ValueError as e:
                self.reply(400, "text/plain", ("bad events: %s\n" % e).encode())
                return
            out = []
            for event in events:
                if event.type == "OPEN":
                    out.append(WebSocketEvent("OPEN"))
                    set_meta = gripcontrol.websocket_control_message(
                        "set-meta", {"name": "user", "value": user}
                    )
                    out.append(WebSocketEvent("TEXT", "c:" + set_meta))
                    subscribe = gripcontrol.websocket_control_message(
                        "subscribe", {"channel": channel, "filters": ["skip-self"]}
                    )
                    out.append(WebSocketEvent("TEXT", "c:" + subscribe))
                elif event.type == "TEXT":
                    text = (event.content or b"").decode("utf-8", "replace")
                    pub.publish(
                        channel,
                        Item(
                            WebSocketMessageFormat("%s: %s" % (user, text)),
                            meta={"sender": user},
                        ),
                    )
                elif event.type == "CLOSE":
                    out.append(WebSocketEvent("CLOSE", event.content))
            self.reply(
                200,
                EVENTS,
                gripcontrol.encode_websocket_events(out),
                extra=[("Sec-WebSocket-Extensions", "grip")],
            )

        def log_message(self, format, *args):
            sys.stderr.write("[chat-origin] " + (format % args) + "\n")

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("control_uri")
    parser.add_argument("--channel", default="room")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(
        ("127.0.0.1", args.port), make_handler(args.control_uri, args.channel)
    )
    server.daemon_threads = True
    print("listening %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
