"""A custom runtime written the way people write them against Lambda's documentation:
http.client, header names read case-sensitively as Lambda sends them (a runtime that does
`headers["Lambda-Runtime-Aws-Request-Id"]` on a plain dict). It answers each event with
what it saw of the Runtime API: the header lines as received, and the answers to calls
Lambda refuses (an unknown request id before answering; a second answer after, which it
prints to its log since the invocation is answered by then)."""

import http.client
import json
import os
import sys

host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
PREFIX = "/2018-06-01/runtime"


def call(method, path, body=None):
    conn = http.client.HTTPConnection(host, int(port))
    conn.request(method, PREFIX + path, body=body)
    resp = conn.getresponse()
    data = resp.read()
    # getheaders() keeps the names as they came over the wire.
    headers = dict(resp.getheaders())
    conn.close()
    return resp.status, headers, data


while True:
    status, headers, event = call("GET", "/invocation/next")
    request_id = headers["Lambda-Runtime-Aws-Request-Id"]  # KeyError if not canonical
    bogus = call("POST", "/invocation/not-%s/response" % request_id, b"{}")
    answer = {
        "status": status,
        "headers": headers,
        "event": json.loads(event),
        "unknown_id": {"status": bogus[0], "body": bogus[2].decode()},
    }
    done = call("POST", "/invocation/%s/response" % request_id, json.dumps(answer).encode())
    again = call("POST", "/invocation/%s/response" % request_id, b"{}")
    print(
        "second answer: %d %s / first: %d %s"
        % (again[0], again[2].decode().strip(), done[0], done[2].decode().strip()),
        file=sys.stderr,
        flush=True,
    )
