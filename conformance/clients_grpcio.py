"""grpc-c (Python grpcio) client of conformance/clients.sh.

    python clients_grpcio.py STUBS_DIR MODE=HOST:PORT... 

MODE is direct (the upstream itself), plaintext or tls (pinot-proxy). Environment:
UPSTREAM (host:port, asked for call outcomes), FORWARD_PORT (the upstream's port, sent as
forward-port), CA_FILE (the proxy's certificate, for tls). Prints one line per check:
"RESULT grpcio MODE CHECK PASS|FAIL detail".
"""

import hashlib
import os
import queue
import sys
import time
import uuid

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
import clients_pb2 as pb  # noqa: E402
import clients_pb2_grpc as pb_grpc  # noqa: E402

MAX = 64 << 20
OPTIONS = [("grpc.max_receive_message_length", MAX), ("grpc.max_send_message_length", MAX)]
WAIT = 10  # seconds: the bound on every call that is not meant to hang
STATUS_MESSAGE = "conformance: 100% not OK, ünïcödé ✓ \t%41"
BIN_VALUES = [bytes(range(256)), b"\x00", b"\xff\xfe\x00\x01 trail=ing,comma"]


class Fail(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Fail(what)


def call_md(call_id=None, extra=()):
    md = [("forward-host", "127.0.0.1"), ("forward-port", os.environ["FORWARD_PORT"])]
    if call_id:
        md.append(("x-call-id", call_id))
    return md + list(extra)


def outcome(call_id, wait_ms=5000):
    with grpc.insecure_channel(os.environ["UPSTREAM"]) as ch:
        stub = pb_grpc.EchoStub(ch)
        return stub.Outcome(pb.OutcomeReq(call_id=call_id, wait_ms=wait_ms), timeout=WAIT).outcome


def md_values(md, key):
    return [v for k, v in (md or ()) if k == key]


def t_trailers_only(stub):
    try:
        resp = stub.Unary(pb.Req(status_code=grpc.StatusCode.FAILED_PRECONDITION.value[0],
                                  status_message=STATUS_MESSAGE),
                          metadata=call_md(), timeout=WAIT)
        raise Fail(f"expected FAILED_PRECONDITION, got OK with {len(resp.payload)} bytes")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.FAILED_PRECONDITION and e.details() == STATUS_MESSAGE,
              f"got {e.code()} {e.details()!r}, expected FAILED_PRECONDITION {STATUS_MESSAGE!r}")


def t_status_after_messages(stub):
    call = stub.ServerStream(pb.Req(count=3, size=100,
                                    status_code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                                    status_message=STATUS_MESSAGE),
                             metadata=call_md(), timeout=WAIT)
    got = []
    try:
        for resp in call:
            got.append(resp.payload)
        raise Fail(f"expected RESOURCE_EXHAUSTED, got OK after {len(got)} messages")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and e.details() == STATUS_MESSAGE,
              f"got {e.code()} {e.details()!r} after {len(got)} messages, "
              f"expected RESOURCE_EXHAUSTED {STATUS_MESSAGE!r}")
    check(len(got) == 3, f"{len(got)} messages before the status, expected 3")
    digest = md_values(call.trailing_metadata(), "x-digest")
    check(digest == [hashlib.sha256(b"".join(got)).hexdigest()],
          f"digest of the messages {hashlib.sha256(b''.join(got)).hexdigest()}, trailer {digest}")


def t_binary_metadata(stub):
    resp, call = stub.Unary.with_call(
        pb.Req(payload=b"md"), metadata=call_md(extra=[("x-echo-bin", v) for v in BIN_VALUES]),
        timeout=WAIT)
    head = md_values(call.initial_metadata(), "x-head-bin")
    trail = md_values(call.trailing_metadata(), "x-trail-bin")
    check(head == BIN_VALUES, f"headers x-head-bin {head!r}, expected {BIN_VALUES!r}")
    check(trail == BIN_VALUES, f"trailers x-trail-bin {trail!r}, expected {BIN_VALUES!r}")
    check(resp.payload == b"md", "payload changed")


def t_large_message(stub):
    payload = os.urandom(8 << 20)
    resp = stub.Unary(pb.Req(payload=payload), metadata=call_md(), timeout=30)
    check(len(resp.payload) == len(payload), f"{len(resp.payload)} bytes back, sent {len(payload)}")
    check(resp.payload == payload, "8 MiB came back with different bytes")


def t_server_stream(stub):
    n = 1000
    call = stub.ServerStream(pb.Req(count=n, size=32768), metadata=call_md(), timeout=60)
    digest, count, total = hashlib.sha256(), 0, 0
    for resp in call:
        digest.update(resp.payload)
        count += 1
        total += len(resp.payload)
    want = md_values(call.trailing_metadata(), "x-digest")
    check(count == n, f"{count} messages, expected {n}")
    check(want == [digest.hexdigest()],
          f"SHA-256 of the {total} bytes received {digest.hexdigest()}, upstream sent {want}")


def t_client_stream(stub):
    msgs = [os.urandom(size) for size in (0, 1, 5, 16384, 100000, 1 << 20) * 20]
    resp, call = stub.ClientStream.with_call(iter([pb.Req(payload=m) for m in msgs]),
                                             metadata=call_md(), timeout=60)
    want = hashlib.sha256(b"".join(msgs)).digest()
    check(resp.payload == want, f"upstream digest {resp.payload.hex()}, sent {want.hex()}")
    count = md_values(call.trailing_metadata(), "x-count")
    check(count == [str(len(msgs))], f"x-count {count}, expected {len(msgs)}")


def t_bidi(stub):
    # Ping-pong: each message is sent only once the previous echo came back, so nothing
    # may be held back on the way.
    q = queue.Queue()

    def requests():
        while True:
            item = q.get(timeout=WAIT)
            if item is None:
                return
            yield pb.Req(payload=item)

    call = stub.Bidi(requests(), metadata=call_md(), timeout=60)
    for i in range(100):
        payload = os.urandom(1 + i * 997)
        q.put(payload)
        resp = next(call)
        check(resp.payload == payload, f"echo {i} differs")
    q.put(None)
    rest = list(call)
    check(not rest, f"{len(rest)} messages after the last echo")
    check(call.code() == grpc.StatusCode.OK, f"status {call.code()}")


def t_deadline(stub):
    call_id = str(uuid.uuid4())
    started = time.monotonic()
    try:
        stub.Unary(pb.Req(hold_ms=20000), metadata=call_md(call_id), timeout=0.5)
        raise Fail("expected DEADLINE_EXCEEDED, got OK")
    except grpc.RpcError as e:
        took = time.monotonic() - started
        # Direct, the upstream's own timer (from the same grpc-timeout) can reset the stream
        # just before grpc-c's fires, and grpc-c reports that reset as CANCELLED. Through the
        # proxy the caller must see DEADLINE_EXCEEDED whichever timer wins.
        upstream_won = (MODE == "direct" and e.code() == grpc.StatusCode.CANCELLED
                        and "error code 8" in (e.details() or ""))
        check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED or upstream_won,
              f"got {e.code()} {e.details()!r}, expected DEADLINE_EXCEEDED")
        check(took < 5, f"DEADLINE_EXCEEDED after {took:.1f} s for a 0.5 s deadline")
    seen = outcome(call_id)
    check(seen in ("cancelled", "deadline"), f"upstream says the call ended {seen!r}")


def t_cancel(stub):
    call_id = str(uuid.uuid4())
    call = stub.ServerStream(pb.Req(count=1, size=10, hold_ms=20000),
                             metadata=call_md(call_id), timeout=30)
    next(call)  # the call has reached the upstream
    call.cancel()
    seen = outcome(call_id)
    check(seen == "cancelled", f"upstream says the call ended {seen!r}, expected 'cancelled'")


CHECKS = [
    ("trailers-only-status", t_trailers_only),
    ("status-after-messages", t_status_after_messages),
    ("binary-metadata", t_binary_metadata),
    ("large-message", t_large_message),
    ("server-stream", t_server_stream),
    ("client-stream", t_client_stream),
    ("bidi", t_bidi),
    ("deadline", t_deadline),
    ("cancel", t_cancel),
]


def channel(mode, target):
    if mode == "tls":
        with open(os.environ["CA_FILE"], "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        return grpc.secure_channel(target, creds, options=OPTIONS)
    return grpc.insecure_channel(target, options=OPTIONS)


MODE = ""  # the mode being checked: direct, plaintext or tls


def main():
    global MODE
    for arg in sys.argv[2:]:
        mode, target = arg.split("=", 1)
        MODE = mode
        with channel(mode, target) as ch:
            stub = pb_grpc.EchoStub(ch)
            for name, fn in CHECKS:
                started = time.monotonic()
                try:
                    fn(stub)
                    result, detail = "PASS", ""
                except Fail as e:
                    result, detail = "FAIL", str(e)
                except grpc.RpcError as e:
                    result, detail = "FAIL", f"{e.code()} {e.details()!r}"
                except Exception as e:  # noqa: BLE001: any surprise is this check's failure
                    result, detail = "FAIL", f"{type(e).__name__}: {e}"
                took = time.monotonic() - started
                detail = detail.replace("\n", " ")
                print(f"RESULT grpcio {mode} {name} {result} ({took:.2f} s) {detail}".rstrip(),
                      flush=True)


main()
