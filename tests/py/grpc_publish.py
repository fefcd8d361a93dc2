#!/usr/bin/env python3
"""A gRPC client of gripmesh's control tier, used by tests/e2e/grpc.rs as a non-Rust client.

The stubs are generated at run time from the repository's proto/gripmesh/v1/*.proto with
`python -m grpc_tools.protoc` into a temporary directory, so the test always exercises the
contract as written.

Usage (ADDR is host:port of the gRPC listener; every command accepts --token T, sent as the
`authorization: Bearer T` metadata):

    grpc_publish.py publish ADDR CHANNEL CONTENT     unary Publish: http-stream content + ws text
    grpc_publish.py publish-json ADDR JSON           unary Publish of a PublishRequest in the
                                                     protobuf JSON mapping (bytes are base64)
    grpc_publish.py stream ADDR CHANNEL N            PublishStream of N requests; request i
                                                     carries content "msg-<i>\\n"
    grpc_publish.py routes-put ADDR FILE             RouteService.Put with FILE's text
    grpc_publish.py routes-list ADDR                 RouteService.List
    grpc_publish.py routes-watch ADDR N              the first N tables of RouteService.Watch

Results are printed as JSON lines on stdout. An RPC error prints
`{"error": "<STATUS_CODE_NAME>", "message": "..."}` on stdout, the code name on stderr, and
exits with status 1. Usage errors exit with 2.
"""

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO_DIR = os.path.join(ROOT, "proto")
PROTOS = ["gripmesh/v1/publish.proto", "gripmesh/v1/routes.proto"]
TIMEOUT = 20.0


def load_stubs():
    """Generates the Python stubs into a temporary directory and imports them."""
    out = tempfile.mkdtemp(prefix="gripmesh-grpc-py-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *PROTOS,
    ]
    gen = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if gen.returncode != 0:
        sys.stderr.write(f"protoc failed ({gen.returncode}):\n{gen.stdout}{gen.stderr}")
        sys.exit(3)
    sys.path.insert(0, out)
    # Namespace packages: gripmesh/v1 has no __init__.py, which Python 3 imports fine.
    from gripmesh.v1 import publish_pb2, publish_pb2_grpc, routes_pb2, routes_pb2_grpc

    return publish_pb2, publish_pb2_grpc, routes_pb2, routes_pb2_grpc


def emit(obj):
    print(json.dumps(obj), flush=True)


def reply_dict(reply):
    return {
        "request_index": reply.request_index,
        "accepted": reply.accepted,
        "error": reply.error,
        "error_code": reply.error_code,
        "items": [{"channel": r.channel, "id": r.id, "seq": r.seq} for r in reply.items],
    }


def table_dict(table):
    return {
        "version": table.version,
        "text": table.text,
        "routes": [{"id": r.id, "line": r.line} for r in table.routes],
    }


def main():
    parser = argparse.ArgumentParser(description="gripmesh gRPC test client")
    parser.add_argument("--token", help="publish token (sent as `authorization: Bearer T`)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish")
    p.add_argument("addr")
    p.add_argument("channel")
    p.add_argument("content")
    p = sub.add_parser("publish-json")
    p.add_argument("addr")
    p.add_argument("request_json")
    p = sub.add_parser("stream")
    p.add_argument("addr")
    p.add_argument("channel")
    p.add_argument("count", type=int)
    p = sub.add_parser("routes-put")
    p.add_argument("addr")
    p.add_argument("file")
    p = sub.add_parser("routes-list")
    p.add_argument("addr")
    p = sub.add_parser("routes-watch")
    p.add_argument("addr")
    p.add_argument("count", type=int)
    # --token is accepted before or after the subcommand.
    for name, action in sub.choices.items():
        action.add_argument("--token", dest="sub_token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    token = getattr(args, "sub_token", None) or args.token

    import grpc
    from google.protobuf import json_format

    publish_pb2, publish_pb2_grpc, routes_pb2, routes_pb2_grpc = load_stubs()
    metadata = [("authorization", f"Bearer {token}")] if token else []

    with grpc.insecure_channel(args.addr) as channel:
        publisher = publish_pb2_grpc.PublisherStub(channel)
        routes = routes_pb2_grpc.RouteServiceStub(channel)
        try:
            if args.command == "publish":
                item = publish_pb2.Item(
                    channel=args.channel,
                    http_stream=publish_pb2.HttpStreamFormat(content=args.content.encode()),
                    ws_message=publish_pb2.WsMessageFormat(text=args.content),
                )
                reply = publisher.Publish(
                    publish_pb2.PublishRequest(items=[item]),
                    metadata=metadata,
                    timeout=TIMEOUT,
                )
                emit(reply_dict(reply))
            elif args.command == "publish-json":
                req = json_format.Parse(args.request_json, publish_pb2.PublishRequest())
                reply = publisher.Publish(req, metadata=metadata, timeout=TIMEOUT)
                emit(reply_dict(reply))
            elif args.command == "stream":

                def requests():
                    for i in range(args.count):
                        content = f"msg-{i}\n"
                        yield publish_pb2.PublishRequest(
                            items=[
                                publish_pb2.Item(
                                    channel=args.channel,
                                    http_stream=publish_pb2.HttpStreamFormat(
                                        content=content.encode()
                                    ),
                                    ws_message=publish_pb2.WsMessageFormat(text=content),
                                )
                            ]
                        )

                for reply in publisher.PublishStream(
                    requests(), metadata=metadata, timeout=TIMEOUT * 3
                ):
                    emit(reply_dict(reply))
            elif args.command == "routes-put":
                with open(args.file, encoding="utf-8") as f:
                    text = f.read()
                table = routes.Put(
                    routes_pb2.PutRoutesRequest(text=text), metadata=metadata, timeout=TIMEOUT
                )
                emit(table_dict(table))
            elif args.command == "routes-list":
                table = routes.List(
                    routes_pb2.ListRoutesRequest(), metadata=metadata, timeout=TIMEOUT
                )
                emit(table_dict(table))
            elif args.command == "routes-watch":
                seen = 0
                call = routes.Watch(
                    routes_pb2.WatchRoutesRequest(), metadata=metadata, timeout=TIMEOUT
                )
                for table in call:
                    emit(table_dict(table))
                    seen += 1
                    if seen >= args.count:
                        call.cancel()
                        break
        except grpc.RpcError as err:
            code = err.code()
            name = code.name if code is not None else "UNKNOWN"
            emit({"error": name, "message": err.details() or ""})
            sys.stderr.write(f"rpc error: {name}: {err.details()}\n")
            sys.exit(1)


if __name__ == "__main__":
    main()
