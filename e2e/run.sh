#!/usr/bin/env bash
# End-to-end suite: real Trino and a real two-server Apache Pinot cluster, with pinot-proxy
# between them. See README "Testing against real Trino and Pinot".
#
#   bash e2e/run.sh            fetch what is missing, start everything, run every check
#
# Prints a table (check, result, seconds) and exits non-zero when any check fails. Every
# process it starts is stopped by PID on exit, also when interrupted. Versions: e2e/versions.sh.
set -uo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$E2E_DIR")
export E2E_RUN_DIR=${E2E_RUN_DIR:-$E2E_DIR/.cache/run}
# 2 million rows over 8 segments: a full scan moves about 110 MiB through the proxy.
export E2E_ROWS=${E2E_ROWS:-2000000}
PROXY_BIN=${PROXY_BIN:-$ROOT/target/release/pinot-proxy}

# shellcheck source=versions.sh
source "$E2E_DIR/versions.sh"
# shellcheck source=pinot.sh
source "$E2E_DIR/pinot.sh"
# shellcheck source=trino.sh
source "$E2E_DIR/trino.sh"

log() { echo "[e2e] $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

RESULTS=()
FAILED=0
# check NAME FUNCTION [ARGS...]: runs one check, records its result and time.
check() {
    local name=$1 started output status
    shift
    started=$(now)
    log "check: $name"
    output=$("$@" 2>&1)
    status=$?
    if ((status == 0)); then
        RESULTS+=("$name|PASS|$(since "$started")|${output##*$'\n'}")
    else
        FAILED=$((FAILED + 1))
        RESULTS+=("$name|FAIL|$(since "$started")|${output//$'\n'/ / }")
        log "FAIL $name: $output"
    fi
}

print_results() {
    local row name result secs detail passed=0
    printf '\n%-34s %-6s %8s  %s\n' check result seconds detail
    printf '%-34s %-6s %8s  %s\n' ---------------------------------- ------ -------- ------
    for row in "${RESULTS[@]}"; do
        IFS='|' read -r name result secs detail <<<"$row"
        printf '%-34s %-6s %8s  %.320s\n' "$name" "$result" "$secs" "$detail"
        [[ $result == PASS ]] && passed=$((passed + 1))
    done
    echo
    echo "e2e: $passed passed, $FAILED failed"
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    log "stopping everything this run started"
    trino_stop >/dev/null 2>&1
    pinot_down >/dev/null 2>&1
    if [[ -f $E2E_RUN_DIR/pids ]]; then
        local pid
        while read -r pid; do
            [[ -n $pid ]] && kill "$pid" 2>/dev/null
        done <"$E2E_RUN_DIR/pids"
        sleep_until_gone 10 $(cat "$E2E_RUN_DIR/pids")
        while read -r pid; do
            [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null
        done <"$E2E_RUN_DIR/pids"
    fi
    exit "$status"
}

# sleep_until_gone SECONDS PID...: waits (polling) until the processes have exited.
sleep_until_gone() {
    local deadline=$((SECONDS + $1)) pid alive
    shift
    while ((SECONDS < deadline)); do
        alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive == 0)) && return 0
        sleep 0.2
    done
    return 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port PORT SECONDS PID: polls until 127.0.0.1:PORT accepts, or the process dies.
wait_port() {
    local deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# proxy_start NAME: starts pinot-proxy with $E2E_RUN_DIR/proxy-NAME.toml (whose listen port
# is @PORT@), exports PROXY_PORT_NAME, logs to proxy-NAME.log.
proxy_start() {
    local name=$1 port pid config=$E2E_RUN_DIR/proxy-$1.toml
    port=$(free_port)
    sed -i "s/@PORT@/$port/" "$config"
    "$PROXY_BIN" --config "$config" --check >&2 || return 1
    RUST_LOG=info "$PROXY_BIN" --config "$config" >"$E2E_RUN_DIR/proxy-$name.log" 2>&1 &
    pid=$!
    echo "$pid" >>"$E2E_RUN_DIR/pids"
    if ! wait_port "$port" 30 "$pid"; then
        log "proxy $name did not start:"
        tail -n 20 "$E2E_RUN_DIR/proxy-$name.log" >&2
        return 1
    fi
    local var=PROXY_PORT_${name^^}
    var=${var//-/_}
    printf -v "$var" '%s' "$port"
    export "${var?}"
}

# The servers' section every proxy shares: the two servers' addresses only.
servers_section() {
    cat <<EOF
[servers]
allow = ["$PINOT_SERVER1_HOST", "$PINOT_SERVER2_HOST"]
ports = [$PINOT_GRPC_PORT]
EOF
}

write_proxy_configs() {
    # Plain h2c, no authentication: the pinot_proxy catalog.
    cat >"$E2E_RUN_DIR/proxy-plain.toml" <<EOF
[server]
listen = "127.0.0.1:@PORT@"
$(servers_section)
[controller]
urls = ["$PINOT_CONTROLLER_URL"]
[broker]
urls = ["$PINOT_BROKER_URL"]
EOF
    # TLS on the listening port: the pinot_tls catalog.
    cat >"$E2E_RUN_DIR/proxy-tls.toml" <<EOF
[server]
listen = "127.0.0.1:@PORT@"
[server.tls]
cert_file = "$E2E_RUN_DIR/tls/proxy.crt"
key_file = "$E2E_RUN_DIR/tls/proxy.key"
$(servers_section)
[controller]
urls = ["$PINOT_CONTROLLER_URL"]
[broker]
urls = ["$PINOT_BROKER_URL"]
EOF
    # REST callers must authenticate: the pinot_auth and pinot_badpass catalogs.
    cat >"$E2E_RUN_DIR/proxy-auth.toml" <<EOF
[server]
listen = "127.0.0.1:@PORT@"
$(servers_section)
[auth]
grpc = "none"
rest = "required"
[[auth.users]]
username = "trino"
password_sha256 = "$(printf '%s\n' e2e-secret | "$PROXY_BIN" token hash)"
[controller]
urls = ["$PINOT_CONTROLLER_URL"]
[broker]
urls = ["$PINOT_BROKER_URL"]
EOF
}

# make_tls: a test CA, a certificate for 127.0.0.1 signed by it, and Trino's PKCS12 truststore.
make_tls() {
    local dir=$E2E_RUN_DIR/tls
    mkdir -p "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pinot-proxy e2e CA" \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null || return 1
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$dir/proxy.key" -out "$dir/proxy.csr" 2>/dev/null || return 1
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$dir/ext.cnf"
    openssl x509 -req -in "$dir/proxy.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/ext.cnf" -out "$dir/proxy.crt" 2>/dev/null ||
        return 1
    rm -f "$dir/truststore.p12"
    "$TRINO_JAVA_HOME/bin/keytool" -importcert -noprompt -alias e2e-ca -file "$dir/ca.crt" \
        -keystore "$dir/truststore.p12" -storetype PKCS12 -storepass e2e-trust >/dev/null 2>&1
}

# make_client_cert: a client certificate for Trino signed by the test CA, as a PKCS12 keystore.
make_client_cert() {
    local dir=$E2E_RUN_DIR/tls
    openssl req -newkey rsa:2048 -nodes -subj "/CN=trino" \
        -keyout "$dir/trino.key" -out "$dir/trino.csr" 2>/dev/null || return 1
    printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >"$dir/client-ext.cnf"
    openssl x509 -req -in "$dir/trino.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/client-ext.cnf" -out "$dir/trino.crt" 2>/dev/null ||
        return 1
    openssl pkcs12 -export -in "$dir/trino.crt" -inkey "$dir/trino.key" -name trino \
        -passout pass:e2e-keys -out "$dir/trino.p12" 2>/dev/null
}

# Pinot with basic auth on controller, broker and servers. Trino sends Pinot no credentials of
# its own: one proxy (REST) replaces Trino's proxy credentials with Pinot's for the controller
# and broker; a second (gRPC, TLS with client certificates) adds Pinot's to every Submit.
write_pinot_auth_configs() {
    local users
    users=$(printf '[[auth.users]]\nusername = "trino"\npassword_sha256 = "%s"\n' \
        "$(printf '%s\n' e2e-secret | "$PROXY_BIN" token hash)")
    cat >"$E2E_RUN_DIR/proxy-inject-rest.toml" <<EOF
[server]
listen = "127.0.0.1:@PORT@"
$(servers_section)
[auth]
grpc = "none"
rest = "required"
$users
[controller]
urls = ["$PINOT_CONTROLLER_URL"]
[controller.auth]
username = "$PINOT_USER"
password_env = "E2E_PINOT_PASSWORD"
[broker]
urls = ["$PINOT_BROKER_URL"]
[broker.auth]
username = "$PINOT_USER"
password_env = "E2E_PINOT_PASSWORD"
EOF
    cat >"$E2E_RUN_DIR/proxy-inject-grpc.toml" <<EOF
[server]
listen = "127.0.0.1:@PORT@"
[server.tls]
cert_file = "$E2E_RUN_DIR/tls/proxy.crt"
key_file = "$E2E_RUN_DIR/tls/proxy.key"
client_ca_file = "$E2E_RUN_DIR/tls/ca.crt"
$(servers_section)
[servers.auth]
username = "$PINOT_USER"
password_env = "E2E_PINOT_PASSWORD"
[auth]
grpc = "client-cert"
rest = "required"
$users
EOF
}

write_pinot_auth_catalogs() {
    trino_catalog pinot_direct <<EOF
connector.name=pinot
pinot.controller-urls=$PINOT_CONTROLLER_URL
pinot.grpc.port=$PINOT_GRPC_PORT
$(rest_credentials "$PINOT_USER" "$PINOT_PASSWORD")
EOF
    local catalog grpc
    for catalog in pinot_inject pinot_noinject; do
        if [[ $catalog == pinot_inject ]]; then
            grpc="pinot.grpc.proxy-uri=127.0.0.1:$PROXY_PORT_INJECT_GRPC
pinot.grpc.use-plain-text=false
pinot.grpc.tls.truststore-type=PKCS12
pinot.grpc.tls.truststore-path=$E2E_RUN_DIR/tls/truststore.p12
pinot.grpc.tls.truststore-password=e2e-trust
pinot.grpc.tls.keystore-type=PKCS12
pinot.grpc.tls.keystore-path=$E2E_RUN_DIR/tls/trino.p12
pinot.grpc.tls.keystore-password=e2e-keys"
        else
            # The REST proxy forwards Submit as Trino sent it: without Pinot credentials.
            grpc="pinot.grpc.proxy-uri=127.0.0.1:$PROXY_PORT_INJECT_REST"
        fi
        trino_catalog "$catalog" <<EOF
connector.name=pinot
pinot.controller-urls=http://127.0.0.1:$PROXY_PORT_INJECT_REST
pinot.proxy.enabled=true
pinot.grpc.port=$PINOT_GRPC_PORT
$grpc
$(rest_credentials "trino" "e2e-secret")
EOF
    done
}

# rest_credentials USER PASSWORD: the catalog properties for Trino's controller and broker
# Basic credentials.
rest_credentials() {
    local component
    for component in controller broker; do
        printf 'pinot.%s.authentication.type=PASSWORD\n' "$component"
        printf 'pinot.%s.authentication.user=%s\n' "$component" "$1"
        printf 'pinot.%s.authentication.password=%s\n' "$component" "$2"
    done
}

write_catalogs() {
    trino_catalog pinot_direct <<EOF
connector.name=pinot
pinot.controller-urls=$PINOT_CONTROLLER_URL
pinot.grpc.port=$PINOT_GRPC_PORT
EOF
    trino_catalog pinot_proxy <<EOF
connector.name=pinot
pinot.controller-urls=http://127.0.0.1:$PROXY_PORT_PLAIN
pinot.proxy.enabled=true
pinot.grpc.proxy-uri=127.0.0.1:$PROXY_PORT_PLAIN
pinot.grpc.port=$PINOT_GRPC_PORT
EOF
    trino_catalog pinot_tls <<EOF
connector.name=pinot
pinot.controller-urls=https://127.0.0.1:$PROXY_PORT_TLS
pinot.proxy.enabled=true
pinot.grpc.proxy-uri=127.0.0.1:$PROXY_PORT_TLS
pinot.grpc.port=$PINOT_GRPC_PORT
pinot.grpc.use-plain-text=false
pinot.grpc.tls.truststore-type=PKCS12
pinot.grpc.tls.truststore-path=$E2E_RUN_DIR/tls/truststore.p12
pinot.grpc.tls.truststore-password=e2e-trust
EOF
    local password
    for catalog in pinot_auth pinot_badpass; do
        password=e2e-secret
        [[ $catalog == pinot_badpass ]] && password=wrong-secret
        trino_catalog "$catalog" <<EOF
connector.name=pinot
pinot.controller-urls=http://127.0.0.1:$PROXY_PORT_AUTH
pinot.proxy.enabled=true
pinot.grpc.proxy-uri=127.0.0.1:$PROXY_PORT_AUTH
pinot.grpc.port=$PINOT_GRPC_PORT
$(rest_credentials "trino" "$password")
EOF
    done
    write_truststore_flags
}

# Trino's REST client to an https controller URL trusts the JVM's trust store.
write_truststore_flags() {
    echo "-Djavax.net.ssl.trustStore=$E2E_RUN_DIR/tls/truststore.p12" >>"$(_trino_run_dir)/etc/jvm.config"
    echo "-Djavax.net.ssl.trustStorePassword=e2e-trust" >>"$(_trino_run_dir)/etc/jvm.config"
    echo "-Djavax.net.ssl.trustStoreType=PKCS12" >>"$(_trino_run_dir)/etc/jvm.config"
}

# wait_catalogs CATALOG...: a freshly started Trino refuses queries on a catalog
# (NO_NODES_AVAILABLE) until its node has announced it; polls, bounded, until each one runs.
wait_catalogs() {
    local catalog deadline=$((SECONDS + 60)) err
    for catalog in "$@"; do
        until err=$(trino_query "$catalog" "SELECT count(*) FROM information_schema.schemata" 2>&1 >/dev/null); do
            if [[ $err != *NO_NODES_AVAILABLE* ]] || ((SECONDS >= deadline)); then
                log "catalog $catalog is not usable: $err"
                return 1
            fi
            sleep 0.2
        done
    done
}

# ---- checks ------------------------------------------------------------------------------

# same CATALOG... -- SQL: runs SQL through each catalog; fails unless every output is the same
# (sorted) and, with EXPECT set, equal to it. Prints the output.
same() {
    local sql=${*: -1} first="" out catalog
    for catalog in "${@:1:$#-1}"; do
        out=$(trino_query "$catalog" "$sql" | sort) || { echo "$catalog: query failed: $sql"; return 1; }
        if [[ -z $first ]]; then
            first=$out
            [[ -n ${EXPECT:-} && $out != "$EXPECT" ]] && {
                echo "$catalog: got [$out], expected [$EXPECT]"
                return 1
            }
        elif [[ $out != "$first" ]]; then
            echo "$catalog differs: [$out] vs [$first]"
            return 1
        fi
    done
    echo "${first//$'\n'/; }" | cut -c1-160
}

check_show_tables() { EXPECT=e2e same pinot_direct pinot_proxy "SHOW TABLES"; }

check_describe() {
    local out
    out=$(same pinot_direct pinot_proxy "DESCRIBE e2e") || { echo "$out"; return 1; }
    for column in id i_int l_long d_double s_string tags; do
        [[ $out == *"$column"* ]] || { echo "no column $column in: $out"; return 1; }
    done
    echo "$out"
}

# An aggregation Trino pushes to the broker (POST /query/sql through the proxy).
check_broker_aggregation() {
    local before after
    before=$(grep -c 'path=/query/sql' "$E2E_RUN_DIR/proxy-plain.log")
    EXPECT="$E2E_ROWS	$E2E_SUM_L_LONG	$E2E_MAX_L_LONG" same pinot_direct pinot_proxy \
        "SELECT count(*), sum(l_long), max(l_long) FROM e2e" || return 1
    after=$(grep -c 'path=/query/sql' "$E2E_RUN_DIR/proxy-plain.log")
    ((after > before)) || { echo "no broker query went through the proxy"; return 1; }
    echo "rows $E2E_ROWS, broker queries through the proxy: $((after - before))"
}

# Submit lines of a proxy log since line FROM: "calls targets bytes_out".
submit_stats() {
    tail -n +"$(($2 + 1))" "$1" | grep 'PinotQueryServer/Submit' | grep ' call' | python3 -c '
import re, sys
calls, targets, out = 0, set(), 0
for line in sys.stdin:
    t = re.search(r"target=(\S+)", line)
    b = re.search(r"bytes_out=(\d+)", line)
    s = re.search(r"grpc.status=\"?(\w+)", line)
    if t and b:
        calls += 1
        targets.add(t.group(1).strip(chr(34)).split(":")[0])
        out += int(b.group(1))
print(calls, ",".join(sorted(targets)), out)'
}

# Doubles are compared as exact integers (every d_double is a multiple of 1/4).
SCAN_SQL="SELECT count(*), sum(id), sum(i_int), sum(l_long), CAST(sum(d_double) * 4 AS BIGINT), \
sum(length(s_string)), sum(cardinality(tags)), sum(x_long) FROM e2e"

scan_expected() {
    python3 -c "
n = $E2E_ROWS
length = sum(len('name-%d' % (i % 100)) for i in range(100)) * (n // 100) + \
    sum(len('name-%d' % i) for i in range(n % 100))
print(n, n * (n - 1) // 2, $E2E_SUM_I_INT, 7 * n * (n - 1) // 2, n * (n - 1) // 2, length, 2 * n, 13 * n * (n - 1) // 2, sep='\t')"
}

# A scan Trino reads from the servers over gRPC: all rows, from both servers, through the proxy.
check_grpc_scan() {
    local from stats calls targets bytes expected
    from=$(wc -l <"$E2E_RUN_DIR/proxy-plain.log")
    expected=$(scan_expected)
    EXPECT=$expected same pinot_direct pinot_proxy "$SCAN_SQL" || return 1
    read -r calls targets bytes <<<"$(submit_stats "$E2E_RUN_DIR/proxy-plain.log" "$from")"
    [[ $targets == *"$PINOT_SERVER1_HOST"* && $targets == *"$PINOT_SERVER2_HOST"* ]] ||
        { echo "Submit calls did not reach both servers: [$targets]"; return 1; }
    ((bytes >= 100 * 1024 * 1024)) || { echo "only $bytes bytes through the proxy"; return 1; }
    ((E2E_ROWS >= 1000000)) || { echo "only $E2E_ROWS rows"; return 1; }
    echo "$E2E_ROWS rows, $calls Submit calls to $targets, $((bytes / 1024 / 1024)) MiB"
}

# Filter and projection pushdown: the servers get the filter, Trino only the matching rows.
check_pushdown() {
    local expected
    expected=$(python3 -c "
n = $E2E_ROWS
ids = [i for i in range(7, n, 1000)]
print(len(ids), sum(ids), sum(i * 7 for i in ids), sep='\t')")
    EXPECT=$expected same pinot_direct pinot_proxy \
        "SELECT count(id), sum(id), sum(l_long + 0) FROM (SELECT id, l_long FROM e2e WHERE i_int = 7 AND s_string = 'name-7')"
}

# The multi-value column, filtered on the servers.
check_multi_value() {
    EXPECT="$E2E_COUNT_TAG_T4" same pinot_direct pinot_proxy \
        "SELECT count(*) FROM (SELECT id, tags FROM e2e WHERE contains(tags, 't4') AND length(s_string) > 0)"
}

SCAN_TIMES=()
# The gRPC scan 3 times per catalog, alternating; median wall time, proxy / direct.
check_scan_timing() {
    local catalog started run times_direct=() times_proxy=()
    for run in 1 2 3; do
        for catalog in pinot_direct pinot_proxy; do
            started=$(now)
            trino_query "$catalog" "$SCAN_SQL" >/dev/null || { echo "$catalog scan failed"; return 1; }
            if [[ $catalog == pinot_direct ]]; then
                times_direct+=("$(since "$started")")
            else
                times_proxy+=("$(since "$started")")
            fi
        done
    done
    python3 -c "
import statistics, sys
d = [float(x) for x in '${times_direct[*]}'.split()]
p = [float(x) for x in '${times_proxy[*]}'.split()]
print('direct %s s, proxy %s s, median proxy/direct %.2f' % (d, p, statistics.median(p) / statistics.median(d)))"
}

check_tls() {
    EXPECT="$(scan_expected)" same pinot_tls "$SCAN_SQL" || return 1
    EXPECT=e2e same pinot_tls "SHOW TABLES" || return 1
    echo "TLS to the proxy: REST over https, gRPC with a PKCS12 truststore"
}

check_auth() {
    EXPECT="$E2E_ROWS	$E2E_SUM_L_LONG	$E2E_MAX_L_LONG" same pinot_auth \
        "SELECT count(*), sum(l_long), max(l_long) FROM e2e" || return 1
    local err
    if err=$(trino_query pinot_badpass "SELECT count(*) FROM e2e" 2>&1); then
        echo "a wrong password was accepted: $err"
        return 1
    fi
    [[ $err == *401* || $err == *nauthorized* || $err == *nauthenticated* ]] ||
        { echo "the failure does not say why: $err"; return 1; }
    echo "wrong password: ${err//$'\n'/ }" | cut -c1-200
}

# What grpc-java (Trino's stack) sees from a server that refuses a call with a status and no
# message: the same status and message direct and through the proxy.
grpc_java() {
    "$TRINO_JAVA_HOME/bin/java" -cp "$TRINO_HOME/plugin/pinot/*" \
        "$E2E_DIR/grpc-java/SubmitCheck.java" "$@" 2>>"$E2E_RUN_DIR/grpc-java.log"
}

check_server_error_status() {
    # Pinot answers a request it cannot compile with INVALID_ARGUMENT "Bad request", before
    # any message: one HEADERS frame that ends the stream.
    local sql="this is not SQL" direct proxied
    direct=$(grpc_java "$PINOT_SERVER1_HOST:$PINOT_GRPC_PORT" "$PINOT_SERVER1_HOST" "$PINOT_GRPC_PORT" "$sql") ||
        { echo "grpc-java direct failed: $direct"; return 1; }
    proxied=$(grpc_java "127.0.0.1:$PROXY_PORT_PLAIN" "$PINOT_SERVER1_HOST" "$PINOT_GRPC_PORT" "$sql") ||
        { echo "grpc-java through the proxy failed: $proxied"; return 1; }
    [[ $direct == status=* && $direct != status=OK* ]] || { echo "unexpected direct answer: $direct"; return 1; }
    [[ $proxied == "$direct" ]] || { echo "direct [$direct] but proxied [$proxied]"; return 1; }
    echo "grpc-java direct and proxied: $proxied"
}

# A server killed mid-scan: the query fails within seconds naming the cause; once the server is
# back, the next query succeeds.
check_server_killed_mid_scan() {
    local out=$E2E_RUN_DIR/killed-scan.out started query_pid status deadline
    trino_query pinot_proxy "$SCAN_SQL" >"$out" 2>&1 &
    query_pid=$!
    # Kill once the scan is running on the servers (bounded poll of Trino's query list).
    deadline=$((SECONDS + 60))
    until curl -sf "$TRINO_URL/v1/query" -H 'X-Trino-User: e2e' | grep -q '"state":"RUNNING"'; do
        ((SECONDS < deadline)) || { echo "the scan never started running"; return 1; }
        sleep 0.05
    done
    started=$(now)
    pinot_kill_server 2 KILL || { echo "cannot kill server 2"; return 1; }
    wait "$query_pid"
    status=$?
    local took
    took=$(since "$started")
    pinot_start_server 2 || { echo "server 2 did not come back"; return 1; }
    ((status != 0)) || { echo "the scan succeeded although a server was killed: $(cat "$out")"; return 1; }
    awk -v t="$took" 'BEGIN { exit !(t < 30) }' || { echo "the failure took $took s"; return 1; }
    local message
    message=$(tr '\n' ' ' <"$out" | cut -c1-200)
    [[ $message == *UNAVAILABLE* || $message == *nreachable* || $message == *onnection* || $message == *"$PINOT_SERVER2_HOST"* ]] ||
        { echo "the failure does not name the cause: $message"; return 1; }
    EXPECT="$(scan_expected)" same pinot_proxy "$SCAN_SQL" >/dev/null ||
        { echo "the query after the restart failed"; return 1; }
    echo "failed after $took s: $message; after the restart the scan succeeded"
}

# Server 2's execution timeout (pinot.server.query.executor.timeout, ms) in the partial-result
# check: far less than its share of the scan takes, so each of its Submit answers ends early.
PARTIAL_TIMEOUT_MS=${E2E_PARTIAL_TIMEOUT_MS:-25}

# A server that times out says so only inside its answer's last message (an exception in the
# metadata DataTable, status OK). Directly Trino stops reading at that message and returns
# what arrived: a wrong answer without an error. Through the proxy the query fails with Pinot's
# code and message. Server 2 runs with a tiny timeout for the check and its normal config after.
check_partial_result() {
    local expected direct proxied direct_status proxied_status server_log from timeouts problems=()
    local restarts=$E2E_RUN_DIR/partial-result.log
    expected=$(scan_expected)
    server_log=$PINOT_RUN_DIR/logs/server2.log
    if ! pinot_restart_server 2 "pinot.server.query.executor.timeout=$PARTIAL_TIMEOUT_MS" 2>>"$restarts"; then
        pinot_restart_server 2 2>>"$restarts"
        echo "server 2 did not restart with a $PARTIAL_TIMEOUT_MS ms timeout (see $restarts)"
        return 1
    fi
    from=$(wc -l <"$server_log")
    direct=$(trino_query pinot_direct "$SCAN_SQL" 2>&1)
    direct_status=$?
    # Pinot's own word that server 2 cut its answers short: 250 (execution) or 240 (scheduling).
    timeouts=$(tail -n +"$((from + 1))" "$server_log" |
        grep -c -e 'Timed out while polling results block' -e 'Query scheduling took')
    proxied=$(trino_query pinot_proxy "$SCAN_SQL" 2>&1)
    proxied_status=$?
    if ! pinot_restart_server 2 2>>"$restarts"; then
        problems+=("server 2 did not come back with its normal config (see $restarts)")
    elif ! EXPECT=$expected same pinot_proxy "$SCAN_SQL" >/dev/null; then
        problems+=("the scan after restoring server 2 does not match the expected values")
    fi
    local rows=${direct%%$'\t'*} want=${expected%%$'\t'*} message
    message=$(sed -E 's/^Query [0-9a-z_]+ failed: //' <<<"$proxied" | tr '\n' ' ')
    if ((direct_status != 0)); then
        problems+=("the direct scan failed: $(tr '\n' ' ' <<<"$direct" | cut -c1-300)")
    elif [[ $direct == "$expected" || ! $rows =~ ^[0-9]+$ ]] || ((rows >= want)); then
        problems+=("the direct scan is not partial: [$direct], expected [$expected]")
    fi
    ((timeouts > 0)) || problems+=("server 2 logged no timeout during the direct scan")
    if ((proxied_status == 0)); then
        problems+=("the scan through the proxy succeeded: [$proxied]")
    elif [[ $message != *"$PINOT_SERVER2_HOST:$PINOT_GRPC_PORT reported errors"* ]] ||
        ! pinot_timeout_quoted "$message"; then
        problems+=("the failure through the proxy does not quote Pinot's timeout from $PINOT_SERVER2_HOST:$PINOT_GRPC_PORT: $message")
    fi
    if ((${#problems[@]})); then
        printf '%s\n' "${problems[@]}"
        return 1
    fi
    echo "direct: $rows of $want rows, no error ($timeouts timeouts in server 2's log); proxy: ${message:0:260}"
}

# pinot_timeout_quoted MESSAGE: whether MESSAGE quotes a Pinot timeout as the proxy renders it.
# Pinot 0.11's streaming combine makes its execution timeout (250) an IntermediateResultsBlock
# through the constructor that takes any Exception, which wraps it in a QueryExecutionError
# (200): the server sends "error 200: QueryExecutionError:\nProcessingException(errorCode:250,
# message:ExecutionTimeoutError: ... Timed out while polling results block". Later releases send
# the 250 itself; a timeout before execution is 240 (scheduling).
pinot_timeout_quoted() {
    [[ $1 == *"error 250: ExecutionTimeoutError"* || $1 == *"error 240: QuerySchedulingTimeoutError"* ]] && return 0
    [[ $1 == *"error 200: QueryExecutionError"* && $1 == *"errorCode:250, message:ExecutionTimeoutError"* ]]
}

# Pinot with basic auth: through the proxies that inject Pinot's credentials, the same results.
check_pinot_auth_injected() {
    EXPECT=e2e same pinot_inject "SHOW TABLES" >/dev/null || return 1
    EXPECT="$E2E_ROWS	$E2E_SUM_L_LONG	$E2E_MAX_L_LONG" same pinot_inject \
        "SELECT count(*), sum(l_long), max(l_long) FROM e2e" >/dev/null || return 1
    local from calls targets bytes
    from=$(wc -l <"$E2E_RUN_DIR/proxy-inject-grpc.log")
    EXPECT="$(scan_expected)" same pinot_inject "$SCAN_SQL" >/dev/null || return 1
    read -r calls targets bytes <<<"$(submit_stats "$E2E_RUN_DIR/proxy-inject-grpc.log" "$from")"
    ((calls > 0)) || { echo "no Submit went through the gRPC proxy"; return 1; }
    echo "metadata, broker aggregation, $E2E_ROWS-row scan ($calls Submit calls) with Pinot's credentials added by the proxies"
}

# A server that refuses the table (no credentials: Pinot 0.11 answers NOT_FOUND "Table not
# found", a status with no message): Trino fails the same way through the proxy as direct.
check_server_refuses_table() {
    local direct proxied
    if direct=$(trino_query pinot_direct "$SCAN_SQL" 2>&1); then
        echo "the server did not refuse the direct scan: $direct"
        return 1
    fi
    if proxied=$(trino_query pinot_noinject "$SCAN_SQL" 2>&1); then
        echo "the server did not refuse the proxied scan: $proxied"
        return 1
    fi
    # Compare without query ids and server addresses.
    direct=$(sed -E 's/Query [0-9a-z_]+ failed/Query failed/' <<<"$direct" | head -n 2)
    proxied=$(sed -E 's/Query [0-9a-z_]+ failed/Query failed/' <<<"$proxied" | head -n 2)
    [[ $direct == *NOT_FOUND* ]] || { echo "unexpected direct failure: $direct"; return 1; }
    [[ $proxied == "$direct" ]] || { echo "direct [$direct] but proxied [$proxied]"; return 1; }
    echo "direct and proxied: ${proxied//$'\n'/ }"
}

# ss: no process this run started holds a TCP connection outside loopback and its own subnet.
check_no_outside_connections() {
    local pids bad
    pids=$(cat "$E2E_RUN_DIR/pids" 2>/dev/null | tr '\n' ' ')
    bad=$(
        {
            ss -Htnp state established
            for ns in $(pinot_namespaces); do ip netns exec "$ns" ss -Htnp state established; done
        } | python3 -c "
import re, sys
pids = set('$pids'.split())
subnet = '$PINOT_SUBNET_PREFIX'
for line in sys.stdin:
    owners = set(re.findall(r'pid=(\d+)', line))
    if not owners & pids:
        continue
    peer = line.split()[3]
    host = peer.rsplit(':', 1)[0].strip('[]')
    if host.startswith('127.') or host == '::1' or host.startswith(subnet) or host.startswith('::ffff:127.') or host.startswith('::ffff:' + subnet):
        continue
    print(line.strip())"
    )
    [[ -z $bad ]] || { echo "connections outside the machine: $bad"; return 1; }
    echo "every connection of $(wc -w <<<"$pids") processes stays on loopback or ${PINOT_SUBNET_PREFIX}x"
}

# The same cluster again with basic auth on, and Trino restarted with catalogs for it.
pinot_auth_phase() {
    trino_stop
    PINOT_AUTH=1 pinot_up || return 1
    make_client_cert || return 1
    write_pinot_auth_configs
    E2E_PINOT_PASSWORD=$PINOT_PASSWORD proxy_start inject-rest || return 1
    E2E_PINOT_PASSWORD=$PINOT_PASSWORD proxy_start inject-grpc || return 1
    trino_prepare || return 1
    write_pinot_auth_catalogs
    write_truststore_flags
    trino_start || return 1
    wait_catalogs pinot_direct pinot_inject pinot_noinject || return 1
    check "Pinot basic auth, proxy injects" check_pinot_auth_injected
    check "server refuses a table (Trino)" check_server_refuses_table
    check "no connection leaves (auth phase)" check_no_outside_connections
}

main() {
    local phase_started
    rm -rf "$E2E_RUN_DIR"
    mkdir -p "$E2E_RUN_DIR"
    : >"$E2E_RUN_DIR/pids"
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    phase_started=$(now)
    pinot_fetch || return 1
    trino_fetch || return 1
    log "phase fetch: $(since "$phase_started") s"

    phase_started=$(now)
    if [[ ! -x $PROXY_BIN || ${E2E_BUILD:-1} == 1 ]]; then
        (cd "$ROOT" && cargo build --release --locked --bin pinot-proxy) || return 1
    fi
    log "phase build: $(since "$phase_started") s"

    phase_started=$(now)
    pinot_up || return 1
    log "phase pinot: $(since "$phase_started") s"

    phase_started=$(now)
    make_tls || { log "cannot make test certificates"; return 1; }
    write_proxy_configs
    proxy_start plain && proxy_start tls && proxy_start auth || return 1
    trino_prepare || return 1
    write_catalogs
    trino_start || return 1
    wait_catalogs pinot_direct pinot_proxy pinot_tls pinot_auth || return 1
    log "phase proxy and trino: $(since "$phase_started") s"

    phase_started=$(now)
    check "metadata: SHOW TABLES" check_show_tables
    check "metadata: DESCRIBE" check_describe
    check "broker aggregation (REST)" check_broker_aggregation
    check "gRPC scan, both servers" check_grpc_scan
    check "filter and projection pushdown" check_pushdown
    check "multi-value column filter" check_multi_value
    check "scan timing x3" check_scan_timing
    check "TLS to the proxy" check_tls
    check "REST auth required" check_auth
    check "server error status (grpc-java)" check_server_error_status
    check "server killed mid-scan" check_server_killed_mid_scan
    check "partial result (server timeout)" check_partial_result
    check "no connection leaves the machine" check_no_outside_connections
    log "phase checks: $(since "$phase_started") s"

    if [[ ${E2E_PINOT_AUTH:-1} == 1 ]]; then
        phase_started=$(now)
        pinot_auth_phase || { log "the Pinot basic-auth phase could not start"; FAILED=$((FAILED + 1)); }
        log "phase pinot auth: $(since "$phase_started") s"
    fi
    print_results
    ((FAILED == 0))
}

main "$@"
