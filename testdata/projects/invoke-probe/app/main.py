"""One handler for the `ocilambda invoke` tests; the event's "action" picks what it does:
"probe" (default) reports what the function sees, "count" how often this process ran,
"raise" fails, "sleep" sleeps event["seconds"], "allocate" fills event["mb"] MiB,
"read" returns the text of event["path"], "connect" what event["host"]:event["port"]
answers first.
PROBE_INIT=raise|exit fails the init. app/bootstrap.py is a hand-written custom runtime
for the same image."""

import os
import socket
import time

if os.environ.get("PROBE_INIT") == "raise":
    raise RuntimeError("failing on purpose during init")
if os.environ.get("PROBE_INIT") == "exit":
    os._exit(3)

_calls = 0


def _writable(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return True
    except OSError:
        return False


def _connect(host, port):
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            return {"connected": True, "reply": s.recv(64).decode(errors="replace")}
    except OSError as e:
        return {"connected": False, "error": str(e)}


def _read(path):
    try:
        with open(path, "rb") as f:
            return {"text": f.read().decode(errors="replace")}
    except OSError as e:
        return {"error": str(e)}


def handler(event, context):
    global _calls
    _calls += 1
    action = event.get("action", "probe")
    if action == "raise":
        raise ValueError("something went wrong on purpose")
    if action == "sleep":
        print("sleeping %ss" % event["seconds"], flush=True)
        time.sleep(event["seconds"])
        return {"slept": event["seconds"]}
    if action == "allocate":
        block = b"x" * (event["mb"] * 1024 * 1024)
        return {"allocated": len(block)}
    if action == "connect":
        return _connect(event["host"], event["port"])
    if action == "read":
        return _read(event["path"])
    if action == "count":
        return {"calls": _calls, "pid": os.getpid()}
    return {
        "calls": _calls,
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "remaining_ms": context.get_remaining_time_in_millis(),
        "function_arn": context.invoked_function_arn,
        "request_id": context.aws_request_id,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "tmp_writable": _writable("/tmp/probe"),
        "task_writable": _writable("/var/task/probe"),
        "whiteout_removed": not os.path.exists("/etc/ocilambda-fixture/removed-by-whiteout"),
        "kept": os.path.exists("/etc/ocilambda-fixture/kept"),
        "opaque": sorted(os.listdir("/opt/ocilambda-fixture/opaque")),
        "client_context_custom": getattr(context.client_context, "custom", None),
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
    }
