#!/usr/bin/env python3
"""Publish one item to a GRIP proxy with the official `gripcontrol` library.

Usage: publish_gripcontrol.py CONTROL_URI CHANNEL CONTENT [--iss ISS] [--key KEY]
                              [--format stream|response|both] [--id ID] [--prev-id ID]

With --iss and --key the library signs a JWT (claims iss + exp) with KEY and sends it as a
Bearer token; with --key alone it sends `Authorization: Bearer KEY`. Exits 0 when the proxy
accepted the publish, 1 (with the library's error on stderr) otherwise.
"""

import argparse
import sys

from gripcontrol import GripPubControl, HttpResponseFormat, HttpStreamFormat
from pubcontrol import Item


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("control_uri")
    parser.add_argument("channel")
    parser.add_argument("content")
    parser.add_argument("--iss")
    parser.add_argument("--key")
    parser.add_argument("--format", choices=["stream", "response", "both"], default="both")
    parser.add_argument("--id")
    parser.add_argument("--prev-id")
    args = parser.parse_args()

    config = {"control_uri": args.control_uri}
    if args.iss:
        config["control_iss"] = args.iss
    if args.key:
        config["key"] = args.key
    pub = GripPubControl(config)

    formats = []
    if args.format in ("stream", "both"):
        formats.append(HttpStreamFormat(args.content))
    if args.format in ("response", "both"):
        formats.append(HttpResponseFormat(body=args.content))

    try:
        pub.publish(args.channel, Item(formats, args.id, args.prev_id), blocking=True)
    except Exception as e:  # the library raises ValueError on any non-2xx answer
        print(f"publish failed: {e}", file=sys.stderr)
        return 1
    print("published")
    return 0


if __name__ == "__main__":
    sys.exit(main())
