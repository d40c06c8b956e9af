# Trino half of the end-to-end suite: fetch, configure, start, query and stop a one-node Trino.
#
# Meant to be SOURCED (functions only; nothing runs at the top level but variable defaults):
#   source e2e/trino.sh
#   trino_fetch                      # tarball + cli from Maven, extracted once into e2e/.cache/
#   trino_prepare                    # fresh etc/ in $E2E_RUN_DIR/trino, picks and exports TRINO_PORT
#   trino_catalog NAME <<EOF ...     # writes etc/catalog/NAME.properties (before trino_start)
#   trino_start                      # starts, waits until a query can run; exports TRINO_PID
#   trino_query CATALOG SQL          # rows on stdout (TSV); non-zero + error on stderr on failure
#   trino_stop
# Standalone self-test (no Pinot needed):  bash e2e/trino.sh selftest
#
# Every PID started is appended to $E2E_RUN_DIR/pids. Only loopback is used: the HTTP server is
# bound to 127.0.0.1 on a free port, and the node's addresses are IPs, never host names.

TRINO_E2E_DIR=${TRINO_E2E_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
# shellcheck source=versions.sh
source "$TRINO_E2E_DIR/versions.sh"
TRINO_CACHE=${TRINO_CACHE:-$TRINO_E2E_DIR/.cache}
TRINO_HOME=${TRINO_HOME:-$TRINO_CACHE/trino-$TRINO_VERSION}
TRINO_CLI_JAR=${TRINO_CLI_JAR:-$TRINO_CACHE/trino-cli-$TRINO_CLI_VERSION-executable.jar}
# Plugins fetched (pinot for the suite, memory for the self-test only).
TRINO_EXTRACT_PLUGINS=${TRINO_EXTRACT_PLUGINS:-pinot memory}
# Plugins a run loads (a per-run plugin.dir of symlinks): fewer plugins, faster start.
TRINO_PLUGINS=${TRINO_PLUGINS:-pinot}
TRINO_HEAP=${TRINO_HEAP:-2G}
TRINO_START_TIMEOUT=${TRINO_START_TIMEOUT:-180}
# C1 only: starts faster (~9-13 s vs ~20 s here); fine for the small e2e queries.
TRINO_C1_ONLY=${TRINO_C1_ONLY:-1}
# Extra JVM flags, one per line, appended to jvm.config.
TRINO_JVM_EXTRA=${TRINO_JVM_EXTRA:-}
# How trino_query runs a statement: "http" (python3 + /v1/statement, ~0.3 s) or "cli" (the
# trino-cli jar, one JVM per query, ~0.9-2 s). Both print the same TSV (selftest checks).
TRINO_QUERY_CLIENT=${TRINO_QUERY_CLIENT:-http}

_trino_log() { echo "[trino] $*" >&2; }
_trino_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }
_trino_run_dir() { echo "${E2E_RUN_DIR:-$TRINO_E2E_DIR/.cache/run}/trino"; }
_trino_pids_file() { echo "${E2E_RUN_DIR:-$TRINO_E2E_DIR/.cache/run}/pids"; }
_trino_java() { echo "$TRINO_JAVA_HOME/bin/java"; }
_trino_m2() { echo "${TRINO_M2_REPO:-$HOME/.m2/repository}"; }

# trino_fetch: make sure $TRINO_HOME (lib/ and the plugins) and $TRINO_CLI_JAR exist. The
# server is assembled from Maven Central (trino-main with its runtime dependencies, and each
# plugin's zip), since a full server tarball of this version is not served there.
# Idempotent: a marker file says the assembly completed; later calls return at once.
trino_fetch() {
    local marker="$TRINO_HOME/.extracted"
    if [[ -f $marker && -f $TRINO_CLI_JAR && "$(cat "$marker")" == "$TRINO_EXTRACT_PLUGINS" ]]; then
        return 0
    fi
    [[ -x $(_trino_java) ]] || { _trino_log "no java at $(_trino_java) (TRINO_JAVA_HOME)"; return 1; }
    local m2 cli stage="$TRINO_HOME.tmp.$$" p zip
    m2=$(_trino_m2)
    cli=$m2/io/trino/trino-cli/$TRINO_CLI_VERSION/trino-cli-$TRINO_CLI_VERSION-executable.jar
    if [[ ! -f $cli ]]; then
        _trino_log "fetching io.trino:trino-cli:$TRINO_CLI_VERSION:jar:executable"
        mvn -B -q dependency:get -Dartifact="io.trino:trino-cli:$TRINO_CLI_VERSION:jar:executable" \
            -Dtransitive=false >&2 || { _trino_log "maven could not fetch the cli"; return 1; }
    fi
    mkdir -p "$TRINO_CACHE" || return 1
    rm -rf "$stage" && mkdir -p "$stage/plugin" || return 1
    _trino_log "assembling Trino $TRINO_VERSION: trino-main and its dependencies into lib/"
    mvn -B -q -f "$TRINO_E2E_DIR/trino/pom.xml" -s "$TRINO_E2E_DIR/pinot/settings.xml" \
        dependency:copy-dependencies -Dtrino.version="$TRINO_VERSION" -DincludeScope=runtime \
        -DoutputDirectory="$stage/lib" >&2 || { _trino_log "maven could not resolve trino-main"; rm -rf "$stage"; return 1; }
    for p in $TRINO_EXTRACT_PLUGINS; do
        zip=$m2/io/trino/trino-$p/$TRINO_VERSION/trino-$p-$TRINO_VERSION.zip
        if [[ ! -f $zip ]]; then
            mvn -B -q dependency:get -Dartifact="io.trino:trino-$p:$TRINO_VERSION:zip" \
                -Dtransitive=false >&2 || { _trino_log "maven could not fetch plugin $p"; rm -rf "$stage"; return 1; }
        fi
        (cd "$stage/plugin" && unzip -q "$zip" && mv "trino-$p-$TRINO_VERSION" "$p") ||
            { _trino_log "cannot unpack $zip"; rm -rf "$stage"; return 1; }
    done
    [[ -f $stage/lib/trino-main-$TRINO_VERSION.jar && -d $stage/plugin/pinot ]] \
        || { _trino_log "assembly incomplete"; rm -rf "$stage"; return 1; }
    echo "$TRINO_EXTRACT_PLUGINS" >"$stage/.extracted"
    rm -rf "$TRINO_HOME" && mv "$stage" "$TRINO_HOME" || return 1
    cp -f "$cli" "$TRINO_CLI_JAR.tmp" && mv -f "$TRINO_CLI_JAR.tmp" "$TRINO_CLI_JAR" || return 1
}

_trino_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# trino_prepare: a fresh etc/ (node.properties, jvm.config, config.properties, log.properties,
# catalog/) under $E2E_RUN_DIR/trino, a per-run plugin dir, data/ and log/. Exports TRINO_PORT
# (free port on 127.0.0.1, or the one already set in TRINO_PORT if non-empty) and TRINO_URL.
trino_prepare() {
    local run etc p
    run=$(_trino_run_dir)
    etc=$run/etc
    [[ -d $TRINO_HOME/lib ]] || { _trino_log "no $TRINO_HOME: run trino_fetch first"; return 1; }
    rm -rf "$etc" "$run/plugin" "$run/data" "$run/log" || return 1
    mkdir -p "$etc/catalog" "$run/plugin" "$run/data" "$run/log" || return 1
    for p in $TRINO_PLUGINS; do
        [[ -d $TRINO_HOME/plugin/$p ]] || { _trino_log "plugin $p was not extracted"; return 1; }
        ln -s "$TRINO_HOME/plugin/$p" "$run/plugin/$p" || return 1
    done
    TRINO_PORT=${TRINO_PORT:-$(_trino_free_port)} || return 1
    export TRINO_PORT
    export TRINO_URL="http://127.0.0.1:$TRINO_PORT"

    cat >"$etc/node.properties" <<EOF
node.environment=e2e
node.id=e2e-trino-coordinator
node.data-dir=$run/data
node.internal-address=127.0.0.1
node.bind-ip=127.0.0.1
EOF
    cat >"$etc/jvm.config" <<EOF
-server
-Xmx$TRINO_HEAP
-Xms256m
-XX:+UseG1GC
-XX:+ExplicitGCInvokesConcurrent
-XX:+ExitOnOutOfMemoryError
-XX:-OmitStackTraceInFastThrow
-XX:ReservedCodeCacheSize=256M
-XX:PerMethodRecompilationCutoff=10000
-XX:PerBytecodeRecompilationCutoff=10000
$([[ $TRINO_C1_ONLY == 1 ]] && echo "-XX:TieredStopAtLevel=1")
-Djdk.attach.allowAttachSelf=true
-Djdk.nio.maxCachedBufferSize=2000000
-Dfile.encoding=UTF-8
-Djava.net.preferIPv4Stack=true
${TRINO_JVM_EXTRA:-}
EOF
    cat >"$etc/config.properties" <<EOF
coordinator=true
node-scheduler.include-coordinator=true
http-server.http.port=$TRINO_PORT
discovery.uri=http://127.0.0.1:$TRINO_PORT
query.max-memory=512MB
query.max-memory-per-node=512MB
memory.heap-headroom-per-node=512MB
catalog.config-dir=$etc/catalog
plugin.dir=$run/plugin
http-server.log.path=$run/log/http-request.log
http-server.log.max-history=1
task.concurrency=2
task.max-worker-threads=4
EOF
    cat >"$etc/log.properties" <<EOF
io.trino=INFO
io.trino.plugin.pinot=DEBUG
EOF
}

# trino_catalog NAME: properties on stdin -> etc/catalog/NAME.properties (call before trino_start;
# Trino reads catalogs at start only).
trino_catalog() {
    local name=${1:?usage: trino_catalog NAME <properties}
    [[ $name =~ ^[a-z][a-z0-9_]*$ ]] || { _trino_log "bad catalog name: $name"; return 1; }
    local dir
    dir=$(_trino_run_dir)/etc/catalog
    [[ -d $dir ]] || { _trino_log "no $dir: run trino_prepare first"; return 1; }
    cat >"$dir/$name.properties"
}

# trino_start: launch the server in the background (java directly, flags from etc/jvm.config,
# node.properties as -D like bin/launcher does), then wait until /v1/info says starting:false and
# the node is active for scheduling. Exports TRINO_PID. Fails with the log tail.
trino_start() {
    local run etc log java line
    run=$(_trino_run_dir)
    etc=$run/etc
    log=$run/log/server.log
    java=$(_trino_java)
    [[ -f $etc/config.properties ]] || { _trino_log "run trino_prepare first"; return 1; }
    local -a args=()
    while IFS= read -r line; do
        [[ -z $line || $line == \#* ]] && continue
        args+=("$line")
    done <"$etc/jvm.config"
    while IFS= read -r line; do
        [[ -z $line || $line == \#* ]] && continue
        args+=("-D$line")
    done <"$etc/node.properties"
    args+=("-Dconfig=$etc/config.properties" "-Dlog.levels-file=$etc/log.properties")
    mkdir -p "$(dirname "$(_trino_pids_file)")" || return 1
    local t0=$SECONDS
    # cwd = data dir (the launcher does the same: var/ and friends land there)
    (cd "$run/data" && exec "$java" "${args[@]}" -cp "$TRINO_HOME/lib/*" "$TRINO_E2E_DIR/trino/StartTrino.java" "$TRINO_VERSION" \
        </dev/null >>"$log" 2>&1) &
    TRINO_PID=$!
    export TRINO_PID
    echo "$TRINO_PID" >>"$(_trino_pids_file)"
    echo "$TRINO_PID" >"$run/pid"
    _trino_log "started pid $TRINO_PID on $TRINO_URL (log $log)"
    local deadline=$((SECONDS + TRINO_START_TIMEOUT)) info="" ready=""
    while ((SECONDS < deadline)); do
        if ! kill -0 "$TRINO_PID" 2>/dev/null; then
            _trino_log "Trino exited during startup; log tail:"
            tail -n 60 "$log" >&2
            trino_stop
            return 1
        fi
        if [[ -z $ready ]]; then
            info=$(curl -sf --max-time 2 "$TRINO_URL/v1/info" 2>/dev/null) || info=""
            [[ $info == *'"starting":false'* ]] && ready=1
        fi
        if [[ -n $ready ]]; then
            # starting:false comes before the node announced itself: wait until a query that
            # needs an active node runs.
            local n
            n=$(TRINO_QUERY_TIMEOUT=10 python3 "$TRINO_E2E_DIR/trino/query.py" "$TRINO_URL" system runtime \
                "SELECT count(*) FROM nodes WHERE state = 'active'" 2>/dev/null) || n=""
            if [[ $n =~ ^[1-9] ]]; then
                _trino_log "ready after $((SECONDS - t0)) s"
                return 0
            fi
        fi
        sleep 0.5
    done
    _trino_log "Trino not ready after ${TRINO_START_TIMEOUT} s; log tail:"
    tail -n 60 "$log" >&2
    trino_stop
    return 1
}

# trino_stop: SIGTERM (graceful), then SIGKILL after 30 s. No-op if not running.
trino_stop() {
    local run pid
    run=$(_trino_run_dir)
    pid=${TRINO_PID:-$(cat "$run/pid" 2>/dev/null)}
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        local i
        for ((i = 0; i < 300; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            _trino_log "pid $pid ignored SIGTERM; killing"
            kill -9 "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$run/pid"
    local pids
    pids=$(_trino_pids_file)
    if [[ -f $pids ]]; then
        { grep -vx "$pid" "$pids" || true; } >"$pids.tmp"
        mv -f "$pids.tmp" "$pids"
    fi
    unset TRINO_PID
    return 0
}

# trino_query_cli CATALOG SQL: the trino-cli executable jar (one JVM per call).
trino_query_cli() {
    local catalog=${1?usage: trino_query_cli CATALOG SQL} sql=${2:?usage: trino_query_cli CATALOG SQL}
    local -a cat=()
    [[ -n $catalog ]] && cat=(--catalog "$catalog" --schema default)
    "$TRINO_CLI_JAVA_HOME/bin/java" -XX:TieredStopAtLevel=1 -XX:+UseSerialGC --enable-native-access=ALL-UNNAMED \
        -Dorg.jline.terminal.dumb=true -jar "$TRINO_CLI_JAR" \
        --server "${TRINO_URL:?run trino_prepare first}" --user e2e "${cat[@]}" --output-format TSV \
        --disable-auto-suggestion --execute "$sql"
}

# trino_query_http CATALOG SQL: POST /v1/statement and follow nextUri (python3, stdlib only).
# Same TSV layout as the cli for the usual types (NULL = empty field).
trino_query_http() {
    local catalog=${1?usage: trino_query_http CATALOG SQL} sql=${2:?usage: trino_query_http CATALOG SQL}
    local schema=default
    [[ -z $catalog ]] && schema=""
    python3 "$TRINO_E2E_DIR/trino/query.py" "${TRINO_URL:?run trino_prepare first}" "$catalog" "$schema" "$sql"
}

# trino_query CATALOG SQL: rows on stdout as TSV, no header; non-zero status and the error on
# stderr if the query fails. CATALOG "" = no catalog. Client per TRINO_QUERY_CLIENT.
trino_query() {
    # NO_NODES_AVAILABLE is Trino's node list catching up (a node that announced late under
    # load): not an answer. Asked again for up to 30 s; any other outcome is passed on as is,
    # rows on stdout and the error on stderr.
    local deadline=$((SECONDS + 30)) err status
    err=$(mktemp)
    while :; do
        if [[ $TRINO_QUERY_CLIENT == cli ]]; then
            trino_query_cli "$@" 2>"$err"
        else
            trino_query_http "$@" 2>"$err"
        fi
        status=$?
        if ((status == 0)) || ! grep -q NO_NODES_AVAILABLE "$err" || ((SECONDS >= deadline)); then
            cat "$err" >&2
            rm -f "$err"
            return "$status"
        fi
        sleep 0.5
    done
}

# trino_selftest: fetch, start with a memory catalog and a pinot catalog that points at closed
# ports, query both, stop. Needs no Pinot.
trino_selftest() {
    local rc=0 t0 out err closed
    t0=$EPOCHREALTIME
    trino_fetch || return 1
    _trino_log "fetch: $(_trino_since "$t0") s"
    TRINO_PLUGINS="pinot memory" trino_prepare || return 1
    trino_catalog memory <<<"connector.name=memory" || return 1
    closed=$(_trino_free_port)
    trino_catalog pinot <<EOF || return 1
connector.name=pinot
pinot.controller-urls=127.0.0.1:$closed
pinot.connection-timeout=15s
EOF
    # every Pinot property name the suite may use, to prove the connector accepts them
    # (pinot.request-timeout and pinot.grpc.enabled are defunct in 476: startup would fail)
    local ts
    ts=$(_trino_run_dir)/etc/truststore.jks
    "$TRINO_JAVA_HOME/bin/keytool" -genkeypair -alias e2e -keyalg RSA -keysize 2048 -validity 2 \
        -dname CN=127.0.0.1 -keystore "$ts" -storepass changeit -storetype JKS -noprompt 2>/dev/null \
        || return 1
    trino_catalog pinot_all <<EOF || return 1
connector.name=pinot
pinot.controller-urls=127.0.0.1:$closed
pinot.connection-timeout=15s
pinot.metadata-expiry=1s
pinot.proxy.enabled=true
pinot.grpc.proxy-uri=127.0.0.1:$closed
pinot.grpc.port=$closed
pinot.grpc.use-plain-text=false
pinot.grpc.tls.truststore-path=$ts
pinot.grpc.tls.truststore-password=changeit
pinot.grpc.tls.truststore-type=JKS
pinot.grpc.max-inbound-message-size=64MB
pinot.controller.authentication.type=PASSWORD
pinot.controller.authentication.user=admin
pinot.controller.authentication.password=secret
pinot.broker.authentication.type=PASSWORD
pinot.broker.authentication.user=admin
pinot.broker.authentication.password=secret
pinot.max-rows-for-broker-queries=1000
pinot.non-aggregate-limit-for-broker-queries=1000
pinot.prefer-broker-queries=false
pinot.forbid-segment-queries=false
pinot.segments-per-split=1
pinot.fetch-retry-count=1
pinot.aggregation-pushdown.enabled=true
pinot.count-distinct-pushdown.enabled=true
pinot.target-segment-page-size=1MB
pinot.max-rows-per-split-for-segment-queries=100000
EOF
    t0=$EPOCHREALTIME
    trino_start || return 1
    _trino_log "startup: $(_trino_since "$t0") s; RSS $(ps -o rss= -p "$TRINO_PID") KiB"
    _check() { # name expected actual
        if [[ $2 == "$3" ]]; then _trino_log "ok: $1"; else
            _trino_log "FAIL: $1: expected [$2] got [$3]"; rc=1; fi
    }
    local client
    for client in http cli; do
        t0=$EPOCHREALTIME
        out=$(TRINO_QUERY_CLIENT=$client trino_query "" "SELECT 1") || rc=1
        _trino_log "$client SELECT 1: $(_trino_since "$t0") s"
        _check "$client SELECT 1" "1" "$out"
        TRINO_QUERY_CLIENT=$client trino_query memory "CREATE TABLE t_$client AS SELECT * FROM (VALUES (1, 'a', 1.5e0, true, NULL), (2, 'b c', 1e20, false, 'x')) AS v(id, s, d, b, n)" >/dev/null || rc=1
        out=$(TRINO_QUERY_CLIENT=$client trino_query memory "SELECT id, s, d, b, n, ARRAY[1,2], 0.1e0, 1e-5, CAST(2.50 AS DECIMAL(5,2)), DATE '2024-01-02', TIMESTAMP '2024-01-02 03:04:05.123', MAP(ARRAY['k'], ARRAY[NULL]) FROM t_$client ORDER BY id") || rc=1
        printf '%s\n' "$out" >"$(_trino_run_dir)/log/types-$client.tsv"
        _check "$client memory rows" 2 "$(printf '%s\n' "$out" | wc -l)"
        err=$(TRINO_QUERY_CLIENT=$client trino_query pinot "SHOW TABLES" 2>&1 >/dev/null) && {
            _trino_log "FAIL: $client pinot query on a closed port succeeded"; rc=1; }
        _trino_log "$client pinot error: $err"
        err=$(TRINO_QUERY_CLIENT=$client trino_query pinot_all "SELECT * FROM t" 2>&1 >/dev/null) && {
            _trino_log "FAIL: $client pinot_all query on a closed port succeeded"; rc=1; }
        _trino_log "$client pinot_all error: $err"
        err=$(TRINO_QUERY_CLIENT=$client trino_query memory "SELECT * FROM nope" 2>&1 >/dev/null) && {
            _trino_log "FAIL: $client bad query succeeded"; rc=1; }
        _trino_log "$client bad query error: $err"
    done
    if cmp -s "$(_trino_run_dir)/log/types-http.tsv" "$(_trino_run_dir)/log/types-cli.tsv"; then
        _trino_log "ok: http and cli print the same TSV"
    else
        _trino_log "FAIL: http and cli TSV differ:"
        diff "$(_trino_run_dir)/log/types-http.tsv" "$(_trino_run_dir)/log/types-cli.tsv" >&2
        rc=1
    fi
    _trino_log "connections of pid $TRINO_PID not on loopback:"
    ss -tnpH 2>/dev/null | grep "pid=$TRINO_PID," | grep -vE '127\.0\.0\.1:[0-9]+ +127\.0\.0\.1:|\[::1\]|::ffff:127\.0\.0\.1' >&2 || _trino_log "(none)"
    trino_stop
    return $rc
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    case ${1:-} in
        selftest) set -euo pipefail; trino_selftest; exit $? ;;
        fetch) trino_fetch; exit $? ;;
        *) echo "usage: bash e2e/trino.sh selftest|fetch  (or source it)" >&2; exit 2 ;;
    esac
fi
