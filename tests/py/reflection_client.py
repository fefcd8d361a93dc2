#!/usr/bin/env python3
"""What `grpcurl` does against gripmesh's gRPC listener, with no .proto files: server reflection
(grpcio-reflection's client). Used by tests/e2e/reflection.rs.

    reflection_client.py list ADDR [--v1]      the advertised services, one JSON list on stdout
                                             (v1alpha by default, as grpcio-reflection does;
                                             --v1 asks grpc.reflection.v1, grpcurl's first try)
    reflection_client.py describe ADDR SYMBOL  the methods of service SYMBOL as JSON
    reflection_client.py call ADDR METHOD JSON [--token T]
                                             a unary call of METHOD (`pkg.Service/Method`) with
                                             the request given in the protobuf JSON mapping,
                                             types resolved only through reflection (like
                                             `grpcurl -d JSON ADDR METHOD`); prints the reply
"""

import argparse
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

TIMEOUT = 20.0
V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def list_v1(channel):
    # v1 and v1alpha messages are the same on the wire; only the method path differs.
    call = channel.stream_stream(
        V1_METHOD,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    req = reflection_pb2.ServerReflectionRequest(list_services="")
    for resp in call(iter([req]), timeout=TIMEOUT):
        return sorted(s.name for s in resp.list_services_response.service)
    return []


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list")
    p.add_argument("addr")
    p.add_argument("--v1", action="store_true")
    p = sub.add_parser("describe")
    p.add_argument("addr")
    p.add_argument("symbol")
    p = sub.add_parser("call")
    p.add_argument("addr")
    p.add_argument("method")
    p.add_argument("json")
    p.add_argument("--token")
    args = ap.parse_args()

    channel = grpc.insecure_channel(args.addr)
    try:
        if args.cmd == "list":
            if args.v1:
                print(json.dumps(list_v1(channel)))
            else:
                db = ProtoReflectionDescriptorDatabase(channel)
                print(json.dumps(sorted(db.get_services())))
            return 0
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        if args.cmd == "describe":
            svc = pool.FindServiceByName(args.symbol)
            print(json.dumps({m.name: [m.input_type.full_name, m.output_type.full_name] for m in svc.methods}))
            return 0
        service, method = args.method.split("/")
        m = pool.FindServiceByName(service).FindMethodByName(method)
        req_cls = message_factory.GetMessageClass(m.input_type)
        reply_cls = message_factory.GetMessageClass(m.output_type)
        req = json_format.Parse(args.json, req_cls())
        call = channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=req_cls.SerializeToString,
            response_deserializer=reply_cls.FromString,
        )
        metadata = [("authorization", f"Bearer {args.token}")] if args.token else None
        reply = call(req, timeout=TIMEOUT, metadata=metadata)
        print(json_format.MessageToJson(reply, indent=None))
        return 0
    except grpc.RpcError as err:
        print(json.dumps({"error": err.code().name, "message": err.details()}))
        return 1


if __name__ == "__main__":
    sys.exit(main())
