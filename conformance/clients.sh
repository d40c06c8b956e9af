#!/usr/bin/env bash
# Client conformance: real gRPC client stacks other than tonic (grpc-c through Python grpcio,
# grpc-go, grpc-java with Netty) call an upstream Echo service (conformance/clients.proto,
# served by conformance/grpc-go/upstream) directly and through the real pinot-proxy binary,
# plaintext (h2c) and TLS, and check that each sees exactly what the upstream sent: statuses
# (trailers-only and after messages) with their messages, binary metadata in headers and
# trailers, an 8 MiB message, a long server stream (SHA-256 of everything received against
# the upstream's), client streaming, ping-pong bidi, a client deadline (DEADLINE_EXCEEDED, and
# the upstream sees its call end) and a client cancel (the upstream sees CANCEL).
#
#   bash conformance/clients.sh [STACK...]     (stacks: grpcio grpc-go grpc-java; default all)
#
# Environment:
#   PROXY_BIN       proxy binary to test (default: cargo build --release --locked, then
#                   target/release/pinot-proxy)
#   PINOT_PROXY_CACHE  where the venv is kept (default ~/.cache/pinot-proxy)
#   KEEP_TMP=1      keep the run directory (configs, logs) and print its path
#
# Versions are pinned in conformance/clients-requirements.txt (grpcio), conformance/grpc-go/
# go.mod and go.sum (grpc-go) and conformance/grpc-java/pom.xml (grpc-java).
# Prints "RESULT STACK MODE CHECK PASS|FAIL" per check (MODE: direct, the upstream itself,
# which proves the check; plaintext and tls, through the proxy), then
# "clients: N passed, N failed"; exits non-zero on any failure or missing result.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CACHE=${PINOT_PROXY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pinot-proxy}
VENV=$CACHE/venv
GO=/usr/local/go/bin/go
[[ -x $GO ]] || GO=$(command -v go || echo go)
MODES=(direct plaintext tls)
CHECKS=(trailers-only-status status-after-messages binary-metadata large-message server-stream
    client-stream bidi deadline cancel)
# Checks one stack makes through the proxy only: "STACK CHECK".
PROXY_CHECKS=("grpc-go same-metadata" "grpc-go proxy-deadline")
CLIENT_TIMEOUT=150 # seconds: the bound on one stack's whole run

STACKS=("$@")
((${#STACKS[@]})) || STACKS=(grpcio grpc-go grpc-java)
for stack in "${STACKS[@]}"; do
    [[ $stack == grpcio || $stack == grpc-go || $stack == grpc-java ]] ||
        { echo "usage: $0 [grpcio] [grpc-go] [grpc-java]" >&2; exit 2; }
done

SUITE=clients
# shellcheck source=lib.sh
source "$HERE/lib.sh"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pinot-proxy-clients.XXXXXX")
PIDS=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${KEEP_TMP:-0} == 1 ]]; then log "run directory kept: $TMP"; else rm -rf "$TMP"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools
install_python() {
    local want
    want=$(grep -E '^grpcio==' "$HERE/clients-requirements.txt" | cut -d= -f3)
    if [[ -x $VENV/bin/python ]] &&
        "$VENV/bin/python" -c "import grpc, grpc_tools, sys; sys.exit(grpc.__version__ != '$want')" 2>/dev/null; then
        log "grpcio $want: $VENV (cached)"
    else
        python3 -m venv "$VENV" || die "python3 -m venv failed: apt-get install python3-venv"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/clients-requirements.txt"
        log "grpcio $want: installed into $VENV"
    fi
    mkdir -p "$TMP/py"
    "$VENV/bin/python" -m grpc_tools.protoc -I"$HERE" --python_out="$TMP/py" \
        --grpc_python_out="$TMP/py" "$HERE/clients.proto"
}

# The upstream and the grpc-go client test, built from the pinned module (Go's build cache
# makes a rebuild a link).
build_go() {
    local flags=(-trimpath -buildvcs=false)
    GOTOOLCHAIN=local GOFLAGS=-mod=readonly "$GO" build -C "$HERE/grpc-go" "${flags[@]}" \
        -o "$TMP/upstream" ./upstream
    if want grpc-go; then
        GOTOOLCHAIN=local GOFLAGS=-mod=readonly "$GO" test -C "$HERE/grpc-go" "${flags[@]}" \
            -c -o "$TMP/grpc-go.test" ./client
    fi
}

# The grpc-java client: its pinned dependencies (and protoc) copied from Maven, the messages
# generated from clients.proto, ClientsCheck.java compiled with javac.
build_java() {
    local lib=$TMP/java/lib
    mkdir -p "$lib" "$TMP/java/src" "$TMP/java/classes"
    mvn -B -q -f "$HERE/grpc-java/pom.xml" dependency:copy-dependencies -DoutputDirectory="$lib" \
        >"$TMP/mvn.log" 2>&1 || { tail -n 40 "$TMP/mvn.log" >&2; die "grpc-java: mvn could not fetch the dependencies"; }
    local protoc=("$lib"/protoc-*.exe)
    chmod +x "${protoc[0]}"
    "${protoc[0]}" -I"$HERE" --java_out="$TMP/java/src" "$HERE/clients.proto"
    JAVA_CP="$TMP/java/classes:$(printf '%s:' "$lib"/*.jar)"
    find "$TMP/java/src" -name '*.java' -print0 |
        xargs -0 javac -nowarn -encoding UTF-8 -cp "$JAVA_CP" -d "$TMP/java/classes" \
            "$HERE/grpc-java/ClientsCheck.java"
}

want() {
    local s
    for s in "${STACKS[@]}"; do [[ $s == "$1" ]] && return 0; done
    return 1
}

# wait_port NAME PID PORT: bounded poll (10 s) until PORT accepts; gives up at once if PID exits.
wait_port() {
    local name=$1 pid=$2 port=$3 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { cat "$TMP/$name.log" >&2; die "$name exited before accepting on $port"; }
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    cat "$TMP/$name.log" >&2
    die "$name not accepting on 127.0.0.1:$port within 10 s"
}

start_upstream() {
    local i
    "$TMP/upstream" -port-file "$TMP/upstream.port" >"$TMP/upstream.log" 2>&1 &
    PIDS+=($!)
    # Bounded poll (10 s) for the port file, written once it listens.
    for ((i = 0; i < 100; i++)); do
        [[ -s $TMP/upstream.port ]] && break
        kill -0 "${PIDS[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    [[ -s $TMP/upstream.port ]] || { cat "$TMP/upstream.log" >&2; die "the upstream did not start"; }
    UPSTREAM_PORT=$(<"$TMP/upstream.port")
    wait_port upstream "${PIDS[-1]}" "$UPSTREAM_PORT"
    log "upstream: 127.0.0.1:$UPSTREAM_PORT"
}

# start_proxy MODE: a proxy for MODE (plaintext or tls) on a free port, in PORT_<MODE>.
start_proxy() {
    local mode=$1 config=$TMP/$1.toml port
    port=$(free_port)
    cat >"$config" <<EOF
[server]
listen = "127.0.0.1:$port"
drain_delay_ms = 0
shutdown_grace_ms = 2000
[servers]
allow = ["127.0.0.1"]
ports = [$UPSTREAM_PORT]
EOF
    if [[ $mode == tls ]]; then
        cat >>"$config" <<EOF
[server.tls]
cert_file = "$TMP/tls.crt"
key_file = "$TMP/tls.key"
EOF
    fi
    "$PROXY_BIN" --config "$config" --check >"$TMP/check-$mode.log" 2>&1 ||
        { cat "$TMP/check-$mode.log" >&2; die "$config: rejected by --check"; }
    RUST_LOG=${RUST_LOG:-info} "$PROXY_BIN" --config "$config" >"$TMP/proxy-$mode.log" 2>&1 &
    PIDS+=($!)
    wait_port "proxy-$mode" "${PIDS[-1]}" "$port"
    printf -v "PORT_$mode" %s "$port"
    log "proxy $mode: 127.0.0.1:$port"
}

# run_stack STACK: runs the stack's client over every mode, bounded by CLIENT_TIMEOUT; its
# RESULT lines go to results.txt.
run_stack() {
    local stack=$1 targets=(direct="127.0.0.1:$UPSTREAM_PORT" plaintext="127.0.0.1:$PORT_plaintext"
        tls="127.0.0.1:$PORT_tls") cmd status=0
    case $stack in
    grpcio) cmd=("$VENV/bin/python" "$HERE/clients_grpcio.py" "$TMP/py" "${targets[@]}") ;;
    grpc-go) cmd=("$TMP/grpc-go.test" -test.v -test.timeout="${CLIENT_TIMEOUT}s" -test.run=TestClients) ;;
    grpc-java) cmd=(java -cp "$JAVA_CP" ClientsCheck "${targets[@]}") ;;
    esac
    UPSTREAM=127.0.0.1:$UPSTREAM_PORT FORWARD_PORT=$UPSTREAM_PORT CA_FILE=$TMP/tls.crt \
        TARGETS="${targets[*]}" timeout -k 5 "$CLIENT_TIMEOUT" "${cmd[@]}" \
        >"$TMP/$stack.out" 2>&1 </dev/null || status=$?
    grep '^RESULT ' "$TMP/$stack.out" >>"$TMP/results.txt" || true
    if ((status != 0)); then
        log "$stack: the client exited with status $status; its last lines:"
        grep -v '^RESULT ' "$TMP/$stack.out" | tail -n 20 | sed 's/^/    /'
    fi
}

# report: one line per (stack, mode, check), a missing result counting as a failure.
report() {
    local stack mode check line passed=0 failed=0
    for stack in "${STACKS[@]}"; do
        for mode in "${MODES[@]}"; do
            local checks=("${CHECKS[@]}") extra
            for extra in "${PROXY_CHECKS[@]}"; do
                [[ $mode != direct && $extra == "$stack "* ]] && checks+=("${extra#* }")
            done
            for check in "${checks[@]}"; do
                line=$(grep -m1 "^RESULT $stack $mode $check " "$TMP/results.txt" || true)
                if [[ -z $line ]]; then
                    line="RESULT $stack $mode $check FAIL (no result: the client did not get to it)"
                fi
                echo "${line#RESULT }"
                if [[ $line == "RESULT $stack $mode $check PASS"* ]]; then
                    passed=$((passed + 1))
                else
                    failed=$((failed + 1))
                fi
            done
        done
    done
    echo "clients: $passed passed, $failed failed"
    ((failed == 0))
}

log "run directory: $TMP"
: >"$TMP/results.txt"
phase python install_python
phase go build_go
if want grpc-java; then phase java build_java; fi
phase build-proxy build_proxy
phase certificate make_cert
phase upstream start_upstream
phase proxies eval 'start_proxy plaintext; start_proxy tls'
for stack in "${STACKS[@]}"; do
    phase "$stack" run_stack "$stack"
done
report || { log "FAIL (client output, proxy and upstream logs: KEEP_TMP=1)"; exit 1; }
