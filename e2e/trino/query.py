#!/usr/bin/env python3
"""Run one SQL statement against Trino's REST API (/v1/statement) and print the rows.

Usage: query.py SERVER CATALOG SCHEMA SQL      (SQL "-" reads it from stdin)

Rows go to stdout, one a line, columns separated by a tab, no header, in the layout of
`trino-cli --output-format TSV` (checked type by type in `bash e2e/trino.sh selftest`): NULL is
an empty field (NULL inside arrays, maps and rows), tab/newline/backslash escaped as \t \n \\,
doubles as Java prints them (1.0E20), varbinary as hex bytes ("61 62"), rows as {x=1, y=a}. On a failed query the error ("Query <id> failed: <message>", like the cli)
goes to stderr and the exit status is 1; on a transport error the status is 2.

Only the standard library: no dependency to install. Talks to the given server only.
"""
import base64
import decimal
import json
import os
import math
import sys
import time
import urllib.error
import urllib.request


def fmt(value, sig=None):
    """Render one JSON value the way trino-cli's TSV output does (sig: the column's typeSignature)."""
    if value is None:
        return ""
    return escape(render(value, sig))


def escape(text):
    # TSV escaping as in the cli: backslash, tab and newline are escaped.
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _args(sig):
    return (sig or {}).get("arguments") or []


def render(value, sig=None):
    raw = (sig or {}).get("rawType")
    if value is None:
        return "NULL"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if raw == "varbinary" and isinstance(value, str):
        return " ".join(f"{b:02x}" for b in base64.b64decode(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return java_double(value)
    if isinstance(value, str) and raw in ("double", "real"):
        return value  # "NaN", "Infinity", "-Infinity" arrive as strings
    if isinstance(value, list):
        args = _args(sig)
        if raw == "row":
            parts = []
            for i, v in enumerate(value):
                field = args[i]["value"] if i < len(args) else {}
                name = (field.get("fieldName") or {}).get("name")
                text = render(v, field.get("typeSignature"))
                parts.append(f"{name}={text}" if name else text)
            return "{" + ", ".join(parts) + "}"
        elem = args[0]["value"] if args and args[0].get("kind") == "TYPE" else None
        return "[" + ", ".join(render(v, elem) for v in value) + "]"
    if isinstance(value, dict):
        args = _args(sig)
        ksig = args[0]["value"] if len(args) > 0 else None
        vsig = args[1]["value"] if len(args) > 1 else None
        return "{" + ", ".join(f"{render(k, ksig)}={render(v, vsig)}" for k, v in value.items()) + "}"
    return str(value)


def java_double(x):
    """Java's Double.toString for a finite double (what the cli prints for DOUBLE and REAL).

    Both Java (17+) and Python pick the shortest digits that round-trip; only the layout differs.
    """
    if x == 0:
        return "-0.0" if math.copysign(1, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    _, digits, exp = decimal.Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, digits)).rstrip("0") or "0"
    # value = 0.d1d2d3... * 10^point
    point = len("".join(map(str, decimal.Decimal(repr(abs(x))).as_tuple()[1]))) + exp
    a = abs(x)
    if 1e-3 <= a < 1e7:
        if point <= 0:
            return sign + "0." + "0" * (-point) + digits
        whole, frac = digits[:point].ljust(point, "0"), digits[point:]
        return sign + whole + "." + (frac or "0")
    return sign + digits[0] + "." + (digits[1:] or "0") + "E" + str(point - 1)


def main():
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    server, catalog, schema, sql = sys.argv[1:]
    if sql == "-":
        sql = sys.stdin.read()
    headers = {
        "X-Trino-User": "e2e",
        "X-Trino-Source": "pinot-proxy-e2e",
        "Content-Type": "text/plain; charset=utf-8",
        # as the cli: time/timestamp values keep their declared precision
        "X-Trino-Client-Capabilities": "PATH,PARAMETRIC_DATETIME,SESSION_AUTHORIZATION",
    }
    if catalog:
        headers["X-Trino-Catalog"] = catalog
    if schema:
        headers["X-Trino-Schema"] = schema
    req = urllib.request.Request(server.rstrip("/") + "/v1/statement",
                                 data=sql.encode("utf-8"), headers=headers, method="POST")
    out = sys.stdout
    sigs = []
    deadline = time.monotonic() + float(os.environ.get("TRINO_QUERY_TIMEOUT", "300"))
    while True:
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as e:
            if e.code in (502, 503, 504) and time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            print(f"HTTP {e.code} from Trino: {e.read().decode('utf-8', 'replace')[:2000]}",
                  file=sys.stderr)
            return 2
        except OSError as e:
            print(f"cannot reach Trino at {server}: {e}", file=sys.stderr)
            return 2
        if body.get("columns") and not sigs:
            sigs = [c.get("typeSignature") for c in body["columns"]]
        for row in body.get("data") or []:
            out.write("\t".join(fmt(v, sigs[i] if i < len(sigs) else None)
                                for i, v in enumerate(row)) + "\n")
        err = body.get("error")
        if err:
            out.flush()
            print(f"Query {body.get('id')} failed: {err.get('message')}", file=sys.stderr)
            if err.get("errorName"):
                print(f"errorName={err.get('errorName')} errorType={err.get('errorType')}",
                      file=sys.stderr)
            return 1
        nxt = body.get("nextUri")
        if not nxt:
            return 0
        if time.monotonic() > deadline:
            print(f"Query {body.get('id')} timed out on the client side", file=sys.stderr)
            try:
                urllib.request.urlopen(urllib.request.Request(nxt, method="DELETE"), timeout=10)
            except OSError:
                pass
            return 1
        req = urllib.request.Request(nxt, headers={"X-Trino-User": "e2e"}, method="GET")


if __name__ == "__main__":
    sys.exit(main())
