#!/usr/bin/env python3
"""Writes the committed seed corpora (fuzz/seeds/<target>/) from real examples: the Pushpin
Pushpin conformance cases and the parsers' unit tests. Re-run after editing; the
files it writes are committed, the corpora grown from them (fuzz/corpus/) are not."""

import hashlib
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "..", "seeds")


def put(target, items):
    d = os.path.join(SEEDS, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for i, data in enumerate(items):
        if isinstance(data, str):
            data = data.encode()
        name = "seed-%02d-%s" % (i, hashlib.sha1(data).hexdigest()[:8])
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


# instruct_headers: one `name:value` per line; one-letter names are GRIP headers (see target).
put("instruct_headers", [
    "h:stream\nc:test\ny:text/plain\n",
    "h:response\nc:resp\nt:6\nX-Orig:yes\n",
    "h:response\nc:pc; prev-id=1\n",
    "h:stream\nc:m1, m2\n",
    "h:stream\nc:test\ns:202 Accepted Stream\n",
    "c:x\nGrip-Foo:bar\nX-Keep:1\n",
    "h:bogus\n",
    "h:stream\nc:sse\ny:text/event-stream\nk::\\n\\n; format=cstring; timeout=3\n",
    "h:stream\nc:i\nk:ping\\n; format=cstring; timeout=2; mode=interval\n",
    "h:stream\nc:x\nk:x; mode=weird\n",
    "h:stream\nc:b\nk:cGluZwo=; format=base64\n",
    "h:stream\nc:nx\nl:</next>; rel=next; timeout=5\n",
    "h:stream\nc:a; filter=skip-self; filter=\"x;y\", b; prev-id=\"q\\\"z\"\n",
    "h:stream\nc:x\nm:user=alice, role=\"a,b\"\ne:X-A, X-B\n",
    "h:response\nc:x\nt:-3\n",
    "h:stream\nc:a,,b\n",
    "y:application/grip-instruct; charset=utf-8\n",
])

# instruct_json: application/grip-instruct bodies.
put("instruct_json", [
    '{"hold":{"mode":"stream","channels":[{"name":"ji"}],"keep-alive":{"content":"ka\\n","timeout":2}},'
    '"response":{"code":200,"headers":{"Content-Type":"text/plain","X-Inst":"1"},"body":"instruct-start\\n"}}',
    '{"hold":{"mode":"response","channels":[{"name":"a","prev-id":"1","filters":["skip-self"]},{"name":"b"}],"timeout":6,"meta":{"user":"alice"}}}',
    '{"hold":{"mode":"stream","channels":[{"name":"k"}],"keep-alive":{"content-bin":"a2EK","mode":"interval"}}}',
    '{"response":{"code":404,"reason":"Nope","headers":[["X-A","1"],["X-A","2"]],"body-bin":"aGk="}}',
    '{"hold":{"mode":"sideways","channels":[{"name":"x"}]}}',
    '{"hold":{"channels":[]}}',
    '{not json',
    '[1,2]',
    '{"hold":{"mode":"response","channels":[{"name":"x"}],"timeout":1.0e3}}',
])

# publish_json: POST /publish/ bodies.
items = lambda *xs: json.dumps({"items": list(xs)})
put("publish_json", [
    items({"channel": "test", "formats": {"http-stream": {"content": "x\n"}}}),
    items({"channel": "test", "formats": {"http-stream": {"action": "close"}}}),
    items({"channel": "test", "formats": {"http-stream": {"content-bin": "QklOCg=="}}}),
    items({"channel": "resp", "formats": {"http-response": {"code": 201, "reason": "Made",
                                                             "headers": {"X-Pub": "1"}, "body": "pushed\n"}}}),
    items({"channel": "resp", "formats": {"http-response": {"body-bin": "aGk="}}}),
    items({"channel": "hc", "formats": {"http-response": {"action": "hint"}}}),
    items({"channel": "test", "id": "c", "prev-id": "b", "formats": {"http-stream": {"content": "C\n"}}},
          {"channel": "test", "id": "b", "prev-id": "a", "meta": {"sender": "alice"},
           "formats": {"http-stream": {"content": "B\n"}}}),
    items({"channel": "wstest", "formats": {"ws-message": {"content": "pushed-ws"}}}),
    items({"channel": "wstest", "formats": {"ws-message": {"content-bin": "AAEC", "type": "binary"}}}),
    items({"channel": "w", "formats": {"ws-message": {"action": "close", "code": 4001, "reason": "bye"}}}),
    items({"channel": "w", "formats": {"ws-message": {"type": "ping"}}}),
    items({"channel": "test", "http-stream": {"content": "x"}}),
    items({"channel": "m1", "formats": {"http-stream": {"content": "one\n"}}},
          {"channel": "m2", "no-seq": True, "size": 3,
           "formats": {"http-response": {"headers": [["X-A", "1"]], "body": "two\n"}}}),
    '{}', '[]', '{"items":[{"formats":{}}]}', '\xff\xfe garbage',
])

# wsevents_decode: application/websocket-events bodies.
put("wsevents_decode", [
    b"OPEN\r\n",
    b"TEXT 2\r\nhi\r\n",
    b"TEXT 9\r\nm:echo:hi\r\n",
    b'OPEN\r\nTEXT 29\r\nc:{"type":"subscribe","channel":"wstest"}\r\n',
    b"CLOSE c\r\n\x0f\xa0client-bye\r\n",
    b"DISCONNECT\r\n",
    b"BINARY 3\r\n\x00\x01\x02\r\nPING\r\nPONG 1\r\nx\r\nCLOSE\r\n",
    b"TEXT 0\r\n\r\nOPEN 2\r\nab\r\n",
    b"TEXT FFFFFFFFFFFFFFFF\r\n",
    b"TEXT 5\r\nab",
    b"BOGUS\r\n",
])

# wscontrol: bytes after (or with) the `c:` prefix.
put("wscontrol", [
    '{"type":"subscribe","channel":"wstest"}',
    'c:{"type":"subscribe","channel":"f","filters":["skip-self","build-id"]}',
    '{"type":"unsubscribe","channel":"wstest"}',
    '{"type":"detach"}',
    '{"type":"session","id":"s1"}',
    '{"type":"set-meta","name":"user","value":"alice"}',
    '{"type":"set-meta","name":"user"}',
    '{"type":"keep-alive","content":"{}","timeout":30,"mode":"interval"}',
    '{"type":"keep-alive","content-bin":"AAE=","message-type":"ping"}',
    '{"type":"keep-alive"}',
    '{"type":"send-delayed","content":"later","timeout":2,"message-type":"text"}',
    '{"type":"flush-delayed"}',
    '{"type":"weird"}',
    'not json',
])

# routes_parse: routes files.
put("routes_parse", [
    "* 127.0.0.1:8080\n",
    "* test\n",
    "# comment\n\n*,path_beg=/aco/,replace_beg=/,aco 127.0.0.1:8081\n"
    "*,path_beg=/hdr/,replace_beg=/,header=X-Route:yes 127.0.0.1:8081\n",
    "example.com,proto=ws,ssl=yes,id=ws-route api.internal:443,ssl,insecure,host=api.example.com,over_http\n"
    "example.com,proto=http 10.0.0.1:80 10.0.0.2:80\n",
    "*,path_beg=/api/,path_rem=4,as_host=backend:8080,prefix=pfx-,sig_key=base64:c2VjcmV0,sig_iss=me,no_grip,debug 127.0.0.1:9\n",
    "*,authz,authz_fail=open test,sub=feed,sub=other\n[::1]:80 [::1]:8080\n",
    "id=only 127.0.0.1:1\n*,header=\"X-A: b, c\" \"my-host\":80\n",
    "*,jsonp_mode=extend,session,log_level=2 127.0.0.1:1,trust_connect_host\n",
    "* zhttp/tcp://127.0.0.1:1\n",
    "*,unknown=1 test\n",
    "h.example test\nh.example test\n",
])

# path_normalize: request paths, including the issue-13 bypass spellings.
put("path_normalize", [
    "/private/x",
    "/%70rivate/x",
    "/private%2Fx",
    "/%2e/private/x",
    "/./private/x",
    "/public/../private/x",
    "//private//x/",
    "/a/b/../../..",
    "/a%3bb/%7Euser/%25",
    "/private%5Cx",
    "/private\\x",
    "/a%zz",
    "*",
    "relative",
])

# sig_verify: key \0 iss \0 token.
put("sig_verify", [
    b"secret\x00pushpin\x00",
    b"base64:c2VjcmV0\x00gripmesh\x00eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJwdXNocGluIiwiZXhwIjo5OTk5OTk5OTk5fQ.AAAA",
    b"k\x00\x00a.b.c",
    b"changeme\x00iss\x00eyJhbGciOiJub25lIn0.eyJleHAiOjF9.",
])


# bus_payload: protobuf BusItem / RoutesSnapshot (crates/bus/src/payload.rs field numbers).
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(tag, n):
    return varint(tag << 3) + varint(n)


def f_bytes(tag, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(tag << 3 | 2) + varint(len(data)) + data


def pair(name, value):
    return f_bytes(1, name) + f_bytes(2, value)


base = f_varint(1, 1) + f_varint(2, 1_700_000_000_000_000_000) + f_bytes(3, "test")
put("bus_payload", [
    base + f_bytes(9, f_bytes(2, "x\n")),
    base + f_bytes(4, "b") + f_bytes(5, "a") + f_bytes(6, pair("sender", "alice")) + f_varint(7, 1)
    + f_bytes(8, f_varint(2, 201) + f_bytes(3, "Made") + f_bytes(4, pair("X-Pub", "1")) + f_bytes(5, "pushed\n")),
    base + f_bytes(9, f_varint(1, 1)) + f_bytes(10, f_varint(1, 1) + f_varint(4, 4001) + f_bytes(5, "bye")),
    base + f_bytes(10, f_varint(2, 1) + f_bytes(3, b"\x00\x01")),
    base + f_bytes(10, f_varint(1, 2)) + f_bytes(8, f_varint(1, 1)),
    f_varint(1, 2) + f_bytes(3, "newer"),
    # RoutesSnapshot
    f_varint(1, 1) + f_varint(2, 1_700_000_000_000) + f_bytes(3, "* test\n"),
    b"\xff\xff\xff",
])
