# shellcheck shell=bash
# The Pinot half of the end-to-end suite: a small Apache Pinot cluster shaped like Kubernetes.
#
#   ZooKeeper, controller, broker: root network namespace, bound to the run's bridge address
#                                  (PINOT_ROOT_IP, e.g. 10.213.0.1) only.
#   server 1, server 2:            one network namespace each (ppe2e-s1, ppe2e-s2), each with its
#                                  own IP on the bridge (.11, .12) and the SAME gRPC/netty/admin ports.
#   table `e2e` (OFFLINE):         E2E_ROWS deterministic rows (e2e/pinot/gen_data.py gives the
#                                  formulas), E2E_SEGMENTS segments spread over both servers.
#
# Sourced by e2e/run.sh (functions only; nothing runs at source time), or standalone:
#   bash e2e/pinot.sh fetch|up|down|status|check|query SQL|kill-server N [KILL]|start-server N
#                     |restart-server N [pinot.server.KEY=VALUE ...]
# After pinot_up these are exported and also written to $PINOT_RUN_DIR/pinot.env (sourceable):
#   PINOT_ZK PINOT_CONTROLLER_URL PINOT_BROKER_URL PINOT_SERVER1_HOST PINOT_SERVER2_HOST
#   PINOT_GRPC_PORT PINOT_NETTY_PORT PINOT_SERVER_ADMIN_PORT PINOT_ROOT_IP
#   PINOT_SUBNET_PREFIX (e.g. "10.213.0.") E2E_ROWS and the facts of expected.txt (E2E_SUM_L_LONG...)
# PINOT_RUN_DIR is $E2E_RUN_DIR/pinot. Every process started is recorded in
# $PINOT_RUN_DIR/pinot.pids ("name pid") and, if E2E_RUN_DIR is set, in $E2E_RUN_DIR/pids;
# pinot_down stops them and removes the namespaces and the bridge (idempotent, safe in a trap).
# Other functions: pinot_fetch, pinot_check, pinot_grpc_check, pinot_query SQL, pinot_status,
# pinot_namespaces, pinot_server_segments N, pinot_kill_server N [KILL], pinot_start_server N,
# pinot_restart_server N [KEY=VALUE ...] (extra server properties; none: the normal config).
#
# Knobs (environment): E2E_RUN_DIR (default e2e/.cache/run), E2E_ROWS (default 1000000),
# PINOT_SEGMENTS (default 8), PINOT_AUTH=1 (basic auth on controller, broker and server),
# PINOT_SUBNET_BASE (default 10.213; the first free 10.X.0.0/24 from there is used).

PINOT_E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.sh
source "$PINOT_E2E_DIR/versions.sh"
PINOT_CACHE_DIR=${PINOT_CACHE_DIR:-$PINOT_E2E_DIR/.cache}
PINOT_LIB_DIR=$PINOT_CACHE_DIR/pinot-lib-$PINOT_VERSION
# Everything of a run lives in $E2E_RUN_DIR/pinot (E2E_RUN_DIR is shared with the other e2e parts).
PINOT_RUN_DIR=${E2E_RUN_DIR:-$PINOT_CACHE_DIR/run}/pinot
PINOT_NS1=ppe2e-s1
PINOT_NS2=ppe2e-s2
PINOT_BRIDGE=ppe2e-br
PINOT_CLUSTER=e2e
PINOT_TABLE=e2e
PINOT_USER=${PINOT_USER:-admin}
PINOT_PASSWORD=${PINOT_PASSWORD:-verysecret}
# a second, read-only principal (controller READ; broker: may query)
PINOT_RO_USER=${PINOT_RO_USER:-user}
PINOT_RO_PASSWORD=${PINOT_RO_PASSWORD:-secret}

_pinot_log() { echo "[pinot $(date +%H:%M:%S)] $*" >&2; }

_pinot_java() { echo "$PINOT_JAVA_HOME/bin/java"; }

# JVM flags shared by every Pinot JVM. jdk.net.hosts.file makes the JVM resolve names from a
# file of the run only: no DNS query, forward or reverse, can leave a Pinot process.
_pinot_jvm_opts() {
  local heap=$1
  echo "-Xms64m -Xmx$heap -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k" \
    "-Djdk.net.hosts.file=$PINOT_RUN_DIR/hosts" \
    "-Djava.net.preferIPv4Stack=true" \
    "-Dzk.session.timeout=${PINOT_ZK_SESSION_TIMEOUT_MS:-8000}" \
    "-Dlog4j2.formatMsgNoLookups=true" \
    "-Dlog4j2.configurationFile=$PINOT_E2E_DIR/pinot/log4j2.xml" \
    "--add-opens=java.base/java.nio=ALL-UNNAMED" \
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED" \
    "--add-opens=java.base/java.lang=ALL-UNNAMED" \
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED" \
    "--add-opens=java.base/java.util=ALL-UNNAMED" \
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED" \
    "--add-opens=java.base/jdk.internal.misc=ALL-UNNAMED" \
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED" \
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED" \
    "--add-exports=java.base/jdk.internal.ref=ALL-UNNAMED" \
    "--add-exports=java.base/sun.nio.ch=ALL-UNNAMED"
}

# ---------------------------------------------------------------------------------------------
# 1. Jars
# ---------------------------------------------------------------------------------------------
pinot_fetch() {
  local marker=$PINOT_LIB_DIR/.complete
  if [[ -f $marker ]]; then
    return 0
  fi
  _pinot_log "resolving pinot-tools $PINOT_VERSION into $PINOT_LIB_DIR"
  rm -rf "$PINOT_LIB_DIR" "$PINOT_LIB_DIR.tmp"
  mkdir -p "$PINOT_CACHE_DIR"
  local log=$PINOT_CACHE_DIR/pinot-fetch.log
  if ! (cd "$PINOT_E2E_DIR/pinot" && mvn -B -q -s settings.xml -Dpinot.version="$PINOT_VERSION" \
        dependency:copy-dependencies -DoutputDirectory="$PINOT_LIB_DIR.tmp") >"$log" 2>&1; then
    _pinot_log "maven failed; tail of $log:"
    tail -30 "$log" >&2
    return 1
  fi
  if [[ ! -f $PINOT_LIB_DIR.tmp/pinot-tools-$PINOT_VERSION.jar ]]; then
    _pinot_log "pinot-tools-$PINOT_VERSION.jar missing after resolution"
    return 1
  fi
  mv "$PINOT_LIB_DIR.tmp" "$PINOT_LIB_DIR"
  ls "$PINOT_LIB_DIR" >"$marker"
}

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
# N distinct free TCP ports (bound together on 0.0.0.0 so none is in use on any address).
_pinot_free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Own list ("name pid"), and the suite-wide $E2E_RUN_DIR/pids (one PID a line) when run.sh set it.
_pinot_record_pid() {
  echo "$1 $2" >>"$PINOT_RUN_DIR/pinot.pids"
  if [[ -n ${E2E_RUN_DIR:-} ]]; then
    echo "$2" >>"$E2E_RUN_DIR/pids"
  fi
}

# The network namespaces of the servers (for `ip netns exec NS ss ...` and the like).
pinot_namespaces() { echo "$PINOT_NS1 $PINOT_NS2"; }

_pinot_pid_of() { awk -v n="$1" '$1 == n { p = $2 } END { if (p) print p }' "$PINOT_RUN_DIR/pinot.pids" 2>/dev/null; }

# A zombie (killed, not yet reaped by its parent) counts as gone.
_pinot_alive() {
  [[ -n $1 ]] && kill -0 "$1" 2>/dev/null && [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

# Start a Pinot JVM in the background, detached, logging to $PINOT_RUN_DIR/logs/NAME.log.
# _pinot_spawn NAME NETNS|- HEAP MAINCLASS ARGS...
_pinot_spawn() {
  local name=$1 ns=$2 heap=$3 main=$4
  shift 4
  local log=$PINOT_RUN_DIR/logs/$name.log
  # setsid: out of the caller's process group, so a Ctrl-C reaches the caller's trap, not the
  # JVMs. (Only without job control: with it, setsid would fork and $! would not be the JVM.)
  local -a prefix=()
  [[ $- != *m* ]] && prefix=(setsid)
  [[ $ns != - ]] && prefix+=(ip netns exec "$ns")
  # shellcheck disable=SC2046
  (cd "$PINOT_RUN_DIR" && exec "${prefix[@]}" "$(_pinot_java)" $(_pinot_jvm_opts "$heap") \
    -Dppe2e.role="$name" -Dpinot.admin.system.exit=false \
    -cp "$PINOT_LIB_DIR/*" "$main" "$@" </dev/null >>"$log" 2>&1) &
  local pid=$!
  _pinot_record_pid "$name" "$pid"
  _pinot_log "started $name (pid $pid${ns:+, netns $ns}), log $log"
}

_pinot_fail() {
  local name=$1
  shift
  _pinot_log "ERROR: $*"
  if [[ -n $name && -f $PINOT_RUN_DIR/logs/$name.log ]]; then
    _pinot_log "tail of $PINOT_RUN_DIR/logs/$name.log:"
    tail -40 "$PINOT_RUN_DIR/logs/$name.log" >&2
  fi
  return 1
}

_pinot_curl() {
  local -a auth=()
  [[ ${PINOT_AUTH:-0} == 1 ]] && auth=(-u "$PINOT_USER:$PINOT_PASSWORD")
  curl -sS --noproxy '*' --max-time 10 "${auth[@]}" "$@"
}

# _pinot_wait_http NAME URL SECONDS: poll URL until HTTP 200, at most SECONDS, with the process
# NAME still alive.
_pinot_wait_http() {
  local name=$1 url=$2 secs=$3 pid code
  pid=$(_pinot_pid_of "$name")
  local deadline=$((SECONDS + secs)) tries=0
  while ((SECONDS < deadline && tries < 10 * secs)); do
    tries=$((tries + 1))
    if [[ -n $pid ]] && ! _pinot_alive "$pid"; then
      _pinot_fail "$name" "$name (pid $pid) exited while waiting for $url"
      return 1
    fi
    code=$(_pinot_curl -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null)
    [[ $code == 200 ]] && return 0
    _pinot_pause 0.5
  done
  _pinot_fail "$name" "$name not healthy at $url within ${secs}s (last HTTP code ${code:-none})"
}

# The interval between two polls (the polls themselves are bounded by count and deadline).
_pinot_pause() { sleep "$1"; }

_pinot_wait_tcp() {
  local name=$1 host=$2 port=$3 secs=$4 pid
  pid=$(_pinot_pid_of "$name")
  local deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    if [[ -n $pid ]] && ! _pinot_alive "$pid"; then
      _pinot_fail "$name" "$name (pid $pid) exited while waiting for $host:$port"
      return 1
    fi
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
      return 0
    fi
    _pinot_pause 0.3
  done
  _pinot_fail "$name" "$name not accepting connections on $host:$port within ${secs}s"
}

# Choose a 10.X.0.0/24 not in use on this machine (addresses or routes).
_pinot_pick_subnet() {
  local base=${PINOT_SUBNET_BASE:-10.213} a b used
  a=${base%%.*}
  b=${base#*.}
  used=$( { ip -4 addr show; ip -4 route show; } 2>/dev/null)
  while ((b < 255)); do
    if ! grep -qE "(^|[^0-9])$a\.$b\.0\." <<<"$used"; then
      echo "$a.$b.0"
      return 0
    fi
    b=$((b + 1))
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
# network
# ---------------------------------------------------------------------------------------------
_pinot_net_up() {
  local net
  net=$(_pinot_pick_subnet) || { _pinot_log "no free 10.x.0.0/24"; return 1; }
  PINOT_SUBNET_PREFIX=$net.
  PINOT_ROOT_IP=$net.1
  PINOT_SERVER1_HOST=$net.11
  PINOT_SERVER2_HOST=$net.12
  ip link add "$PINOT_BRIDGE" type bridge || return 1
  ip addr add "$PINOT_ROOT_IP/24" dev "$PINOT_BRIDGE" || return 1
  ip link set "$PINOT_BRIDGE" up || return 1
  local i ns ip
  for i in 1 2; do
    ns=ppe2e-s$i
    ip=$net.1$i
    ip netns add "$ns" || return 1
    ip link add "ppe2e-v$i" type veth peer name eth0 netns "$ns" || return 1
    ip link set "ppe2e-v$i" master "$PINOT_BRIDGE" up || return 1
    ip -n "$ns" link set lo up || return 1
    ip -n "$ns" addr add "$ip/24" dev eth0 || return 1
    ip -n "$ns" link set eth0 up || return 1
    ip -n "$ns" route add default via "$PINOT_ROOT_IP" || return 1
  done
  # Names the Pinot JVMs may resolve (jdk.net.hosts.file): nothing else resolves.
  {
    echo "127.0.0.1 localhost $(hostname)"
    echo "$PINOT_ROOT_IP ppe2e-root"
    echo "$PINOT_SERVER1_HOST ppe2e-server1"
    echo "$PINOT_SERVER2_HOST ppe2e-server2"
  } >"$PINOT_RUN_DIR/hosts"
  _pinot_log "network: bridge $PINOT_BRIDGE $PINOT_ROOT_IP/24, $PINOT_NS1=$PINOT_SERVER1_HOST, $PINOT_NS2=$PINOT_SERVER2_HOST"
}

_pinot_net_down() {
  local ns
  for ns in "$PINOT_NS1" "$PINOT_NS2"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del ppe2e-v1 2>/dev/null || true
  ip link del ppe2e-v2 2>/dev/null || true
  ip link del "$PINOT_BRIDGE" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------
_pinot_write_configs() {
  local c=$PINOT_RUN_DIR/conf
  mkdir -p "$c"
  cat >"$c/zoo.cfg" <<EOF
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$PINOT_RUN_DIR/data/zk
clientPort=$PINOT_ZK_PORT
clientPortAddress=$PINOT_ROOT_IP
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
EOF
  cat >"$c/controller.conf" <<EOF
controller.helix.cluster.name=$PINOT_CLUSTER
controller.zk.str=$PINOT_ZK
controller.host=$PINOT_ROOT_IP
controller.vip.host=$PINOT_ROOT_IP
controller.port=$PINOT_CONTROLLER_PORT
controller.access.protocols=http
controller.access.protocols.http.host=$PINOT_ROOT_IP
controller.access.protocols.http.port=$PINOT_CONTROLLER_PORT
controller.data.dir=$PINOT_RUN_DIR/data/controller
controller.local.temp.dir=$PINOT_RUN_DIR/data/controller-tmp
pinot.set.instance.id.to.hostname=false
controller.enable.batch.message.mode=false
EOF
  cat >"$c/broker.conf" <<EOF
pinot.zk.server=$PINOT_ZK
pinot.cluster.name=$PINOT_CLUSTER
pinot.broker.hostname=$PINOT_ROOT_IP
pinot.broker.instance.id=Broker_${PINOT_ROOT_IP}_$PINOT_BROKER_PORT
pinot.broker.client.access.protocols=http
pinot.broker.client.access.protocols.http.host=$PINOT_ROOT_IP
pinot.broker.client.access.protocols.http.port=$PINOT_BROKER_PORT
pinot.broker.timeoutMs=30000
pinot.broker.delayShutdownTimeMs=0
pinot.set.instance.id.to.hostname=false
EOF
  local i host
  for i in 1 2; do
    host=$(_pinot_server_host "$i")
    cat >"$c/server$i.conf" <<EOF
pinot.zk.server=$PINOT_ZK
pinot.cluster.name=$PINOT_CLUSTER
pinot.server.instance.id=Server_${host}_$PINOT_NETTY_PORT
pinot.server.netty.host=$host
pinot.server.netty.port=$PINOT_NETTY_PORT
pinot.server.adminapi.port=$PINOT_SERVER_ADMIN_PORT
pinot.server.grpc.enable=true
pinot.server.grpc.port=$PINOT_GRPC_PORT
pinot.server.instance.dataDir=$PINOT_RUN_DIR/data/server$i/index
pinot.server.instance.segmentTarDir=$PINOT_RUN_DIR/data/server$i/segmentTar
pinot.server.instance.readMode=mmap
pinot.server.shutdown.enableQueryCheck=false
pinot.server.shutdown.timeoutMs=10000
pinot.set.instance.id.to.hostname=false
EOF
  done
  if [[ ${PINOT_AUTH:-0} == 1 ]]; then
    cat >>"$c/controller.conf" <<EOF
controller.admin.access.control.factory.class=org.apache.pinot.controller.api.access.BasicAuthAccessControlFactory
controller.admin.access.control.principals=$PINOT_USER,$PINOT_RO_USER
controller.admin.access.control.principals.$PINOT_USER.password=$PINOT_PASSWORD
controller.admin.access.control.principals.$PINOT_RO_USER.password=$PINOT_RO_PASSWORD
controller.admin.access.control.principals.$PINOT_RO_USER.permissions=READ
controller.segment.fetcher.auth.token=Basic $PINOT_AUTH_B64
EOF
    cat >>"$c/broker.conf" <<EOF
pinot.broker.access.control.class=org.apache.pinot.broker.broker.BasicAuthAccessControlFactory
pinot.broker.access.control.principals=$PINOT_USER,$PINOT_RO_USER
pinot.broker.access.control.principals.$PINOT_USER.password=$PINOT_PASSWORD
pinot.broker.access.control.principals.$PINOT_RO_USER.password=$PINOT_RO_PASSWORD
EOF
    for i in 1 2; do
      cat >>"$c/server$i.conf" <<EOF
pinot.server.admin.access.control.factory.class=org.apache.pinot.server.access.BasicAuthAccessFactory
pinot.server.admin.access.control.principals=$PINOT_USER,$PINOT_RO_USER
pinot.server.admin.access.control.principals.$PINOT_USER.password=$PINOT_PASSWORD
pinot.server.admin.access.control.principals.$PINOT_RO_USER.password=$PINOT_RO_PASSWORD
pinot.server.segment.fetcher.auth.token=Basic $PINOT_AUTH_B64
pinot.server.segment.uploader.auth.token=Basic $PINOT_AUTH_B64
pinot.server.instance.auth.token=Basic $PINOT_AUTH_B64
EOF
    done
  fi
}

# ---------------------------------------------------------------------------------------------
# data and segments (cached by row count, segment count and Pinot version)
# ---------------------------------------------------------------------------------------------
_pinot_build_segments() {
  local dir=$PINOT_CACHE_DIR/pinot-segments-$PINOT_VERSION-$E2E_ROWS-$PINOT_SEGMENTS-$(cat "$PINOT_E2E_DIR/pinot/gen_data.py" "$PINOT_E2E_DIR/pinot/schema.json" | md5sum | cut -c1-8)
  PINOT_SEGMENT_DIR=$dir/segments
  if [[ -f $dir/.complete ]]; then
    cp "$dir/expected.txt" "$PINOT_RUN_DIR/expected.txt"
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  _pinot_log "generating $E2E_ROWS rows in $PINOT_SEGMENTS files"
  python3 "$PINOT_E2E_DIR/pinot/gen_data.py" "$E2E_ROWS" "$PINOT_SEGMENTS" "$dir/csv" "$dir/expected.txt" ||
    return 1
  _pinot_log "building segments"
  local log=$PINOT_RUN_DIR/logs/create-segment.log
  # shellcheck disable=SC2046
  if ! (cd "$PINOT_RUN_DIR" && exec "$(_pinot_java)" $(_pinot_jvm_opts 1g) -Dpinot.admin.system.exit=true \
      -cp "$PINOT_LIB_DIR/*" org.apache.pinot.tools.admin.PinotAdministrator CreateSegment \
      -dataDir "$dir/csv" -format CSV -outDir "$dir/segments" -overwrite \
      -tableConfigFile "$PINOT_E2E_DIR/pinot/table.json" -schemaFile "$PINOT_E2E_DIR/pinot/schema.json" \
      -readerConfigFile "$PINOT_E2E_DIR/pinot/reader.json" -numThreads 2) >"$log" 2>&1; then
    _pinot_fail create-segment "CreateSegment failed"
    return 1
  fi
  local n
  n=$(find "$dir/segments" -mindepth 1 -maxdepth 1 -type d | wc -l)
  if ((n != PINOT_SEGMENTS)); then
    _pinot_fail create-segment "CreateSegment made $n segments, expected $PINOT_SEGMENTS"
    return 1
  fi
  rm -rf "$dir/csv"
  cp "$dir/expected.txt" "$PINOT_RUN_DIR/expected.txt"
  touch "$dir/.complete"
}

_pinot_admin() {
  local name=$1
  shift
  local log=$PINOT_RUN_DIR/logs/$name.log
  # shellcheck disable=SC2046
  if ! (cd "$PINOT_RUN_DIR" && exec "$(_pinot_java)" $(_pinot_jvm_opts 256m) -Dpinot.admin.system.exit=true \
      -cp "$PINOT_LIB_DIR/*" org.apache.pinot.tools.admin.PinotAdministrator "$@") >"$log" 2>&1; then
    _pinot_fail "$name" "PinotAdministrator $1 failed"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------------------------
_pinot_server_host() { if [[ $1 == 1 ]]; then echo "$PINOT_SERVER1_HOST"; else echo "$PINOT_SERVER2_HOST"; fi; }

_pinot_server_spawn() {
  local i=$1
  _pinot_spawn "server$i" "ppe2e-s$i" 1g org.apache.pinot.tools.admin.PinotAdministrator StartServer \
    -zkAddress "$PINOT_ZK" -clusterName "$PINOT_CLUSTER" -configFileName "$PINOT_RUN_DIR/conf/server$i.conf"
}

# JSON of the external view of the table (OFFLINE part), or empty.
_pinot_external_view() {
  _pinot_curl "$PINOT_CONTROLLER_URL/tables/$PINOT_TABLE/externalview" 2>/dev/null
}

# Waits until every segment is ONLINE in the external view, each server holds >= MIN segments
# (default 1), and the table has E2E_SEGMENTS segments.
_pinot_wait_online() {
  local secs=$1 min=${2:-1} out
  local deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    out=$(_pinot_external_view | python3 -c '
import json, sys
want, minper, s1, s2 = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    ev = json.load(sys.stdin).get("OFFLINE") or {}
except Exception:
    print("no-view"); sys.exit(1)
per = {}
online = 0
for seg, states in ev.items():
    for inst, st in states.items():
        if st == "ONLINE":
            online += 1
            per[inst] = per.get(inst, 0) + 1
ok = len(ev) == want and online == want and all(
    any(k.startswith("Server_" + h + "_") and v >= minper for k, v in per.items()) for h in (s1, s2))
print(("ok " if ok else "wait ") + json.dumps(per))
sys.exit(0 if ok else 1)
' "$PINOT_SEGMENTS" "$min" "$PINOT_SERVER1_HOST" "$PINOT_SERVER2_HOST") && {
      _pinot_log "external view: $out"
      return 0
    }
    _pinot_pause 0.5
  done
  _pinot_log "ERROR: segments not ONLINE on both servers within ${secs}s: $out"
  _pinot_log "external view: $(_pinot_external_view)"
  return 1
}

# Stop server N: pinot_kill_server N (TERM, a graceful shutdown of a few seconds; KILL after 20 s)
# or pinot_kill_server N KILL (abrupt, like a crashed pod; ZooKeeper notices in its session
# timeout, so the broker may still route to it for a while).
pinot_kill_server() {
  local i=$1 sig=${2:-TERM} pid
  [[ -f $PINOT_RUN_DIR/pinot.env ]] && source "$PINOT_RUN_DIR/pinot.env"
  pid=$(_pinot_pid_of "server$i")
  if [[ $sig == KILL ]] && _pinot_alive "$pid"; then
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
    local n=0
    while _pinot_alive "$pid" && ((n < 100)); do
      _pinot_pause 0.1
      n=$((n + 1))
    done
    _pinot_log "killed server$i (pid $pid)"
    return 0
  fi
  _pinot_stop_pid "server$i" "$pid"
}

# Start server N again and wait until it is healthy and its segments are ONLINE again.
pinot_start_server() {
  local i=$1 host
  [[ -f $PINOT_RUN_DIR/pinot.env ]] && source "$PINOT_RUN_DIR/pinot.env"
  if _pinot_alive "$(_pinot_pid_of "server$i")"; then
    _pinot_log "server$i already running"
  else
    _pinot_server_spawn "$i"
  fi
  host=$(_pinot_server_host "$i")
  _pinot_wait_http "server$i" "http://$host:$PINOT_SERVER_ADMIN_PORT/health" 120 || return 1
  _pinot_wait_tcp "server$i" "$host" "$PINOT_GRPC_PORT" 30 || return 1
  _pinot_wait_online 120 1 || return 1
  _pinot_wait_routed 60
}

# Restart server N with extra server properties, or with the config pinot_up wrote when none
# are given: pinot_restart_server N [pinot.server.KEY=VALUE ...]. Stops it (TERM), writes
# conf/serverN.conf as pinot_up's config plus the extras, starts it and waits as
# pinot_start_server does.
pinot_restart_server() {
  local i=$1 kv
  shift
  [[ -f $PINOT_RUN_DIR/pinot.env ]] && source "$PINOT_RUN_DIR/pinot.env"
  local conf=$PINOT_RUN_DIR/conf/server$i.conf
  [[ -f $conf ]] || { _pinot_log "ERROR: no $conf"; return 1; }
  for kv in "$@"; do
    [[ $kv =~ ^pinot\.[A-Za-z0-9._-]+=[^[:space:]]+$ ]] || { _pinot_log "ERROR: not a property: $kv"; return 1; }
  done
  # pinot_up's config, kept the first time (pinot_up removes conf/ and writes it anew).
  [[ -f $conf.base ]] || cp "$conf" "$conf.base" || return 1
  pinot_kill_server "$i" || return 1
  cp "$conf.base" "$conf.tmp" || return 1
  if (($#)); then printf '%s\n' "$@" >>"$conf.tmp" || return 1; fi
  mv "$conf.tmp" "$conf" || return 1
  _pinot_log "server$i restarts with ${*:-its normal config}"
  pinot_start_server "$i"
}

# Waits until the broker routes each of the table's PINOT_SEGMENTS segments, to both servers
# (after a restart the broker learns of the server's segments a little after the external view).
# Trino reads this routing to pick the server each segment is fetched from.
_pinot_wait_routed() {
  local secs=$1 out=""
  local deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    out=$(_pinot_curl --max-time 5 "$PINOT_BROKER_URL/debug/routingTable/$PINOT_TABLE" 2>/dev/null | python3 -c '
import json, sys
want, s1, s2, table = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
try:
    routing = json.load(sys.stdin).get(table + "_OFFLINE") or {}
except Exception:
    print("no-routing"); sys.exit(1)
per = {k: len(v) for k, v in routing.items()}
ok = sum(per.values()) == want and all(any("_" + h + "_" in k for k in per) for h in (s1, s2))
print(("ok " if ok else "wait ") + json.dumps(per))
sys.exit(0 if ok else 1)
' "$PINOT_SEGMENTS" "$PINOT_SERVER1_HOST" "$PINOT_SERVER2_HOST" "$PINOT_TABLE") && {
      _pinot_log "broker routing: $out"
      return 0
    }
    _pinot_pause 0.5
  done
  _pinot_log "ERROR: the broker does not route every segment to both servers within ${secs}s: $out"
  return 1
}

_pinot_stop_pid() {
  local name=$1 pid=$2 n=0
  _pinot_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null
  while _pinot_alive "$pid" && ((n < 100)); do
    _pinot_pause 0.2
    n=$((n + 1))
  done
  if _pinot_alive "$pid"; then
    _pinot_log "$name (pid $pid) ignored TERM for 20s; KILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
  _pinot_log "stopped $name (pid $pid)"
}

# ---------------------------------------------------------------------------------------------
# 2. up
# ---------------------------------------------------------------------------------------------
pinot_up() {
  local t0=$SECONDS
  pinot_fetch || return 1
  if [[ -s $PINOT_RUN_DIR/pinot.pids ]]; then
    _pinot_log "a previous run is recorded in $PINOT_RUN_DIR/pinot.pids; stopping it first"
    pinot_down
  fi
  _pinot_net_down
  rm -rf "$PINOT_RUN_DIR/data" "$PINOT_RUN_DIR/conf" "$PINOT_RUN_DIR/logs"
  mkdir -p "$PINOT_RUN_DIR/logs" "$PINOT_RUN_DIR/data"
  : >"$PINOT_RUN_DIR/pinot.pids"
  E2E_ROWS=${E2E_ROWS:-1000000}
  PINOT_SEGMENTS=${PINOT_SEGMENTS:-8}
  PINOT_AUTH_B64=$(printf '%s:%s' "$PINOT_USER" "$PINOT_PASSWORD" | base64)
  _pinot_build_segments || return 1
  _pinot_net_up || { _pinot_log "network setup failed"; return 1; }
  local ports
  ports=($(_pinot_free_ports 6))
  PINOT_ZK_PORT=${ports[0]}
  PINOT_CONTROLLER_PORT=${ports[1]}
  PINOT_BROKER_PORT=${ports[2]}
  PINOT_NETTY_PORT=${ports[3]}
  PINOT_SERVER_ADMIN_PORT=${ports[4]}
  PINOT_GRPC_PORT=${ports[5]}
  PINOT_ZK=$PINOT_ROOT_IP:$PINOT_ZK_PORT
  PINOT_CONTROLLER_URL=http://$PINOT_ROOT_IP:$PINOT_CONTROLLER_PORT
  PINOT_BROKER_URL=http://$PINOT_ROOT_IP:$PINOT_BROKER_PORT
  _pinot_write_configs
  _pinot_write_env

  # ZooKeeper: its own main, so that it binds to the bridge address only.
  mkdir -p "$PINOT_RUN_DIR/data/zk"
  _pinot_spawn zookeeper - 256m org.apache.zookeeper.server.ZooKeeperServerMain "$PINOT_RUN_DIR/conf/zoo.cfg"
  _pinot_wait_tcp zookeeper "$PINOT_ROOT_IP" "$PINOT_ZK_PORT" 60 || return 1

  _pinot_spawn controller - 1g org.apache.pinot.tools.admin.PinotAdministrator StartController \
    -configFileName "$PINOT_RUN_DIR/conf/controller.conf"
  _pinot_wait_http controller "$PINOT_CONTROLLER_URL/health" 180 || return 1

  _pinot_spawn broker - 768m org.apache.pinot.tools.admin.PinotAdministrator StartBroker \
    -zkAddress "$PINOT_ZK" -clusterName "$PINOT_CLUSTER" -configFileName "$PINOT_RUN_DIR/conf/broker.conf"
  _pinot_server_spawn 1
  _pinot_server_spawn 2
  _pinot_wait_http broker "$PINOT_BROKER_URL/health" 180 || return 1
  local i host
  for i in 1 2; do
    host=$(_pinot_server_host "$i")
    _pinot_wait_http "server$i" "http://$host:$PINOT_SERVER_ADMIN_PORT/health" 180 || return 1
    _pinot_wait_tcp "server$i" "$host" "$PINOT_GRPC_PORT" 30 || return 1
  done

  local -a auth=()
  [[ ${PINOT_AUTH:-0} == 1 ]] && auth=(-user "$PINOT_USER" -password "$PINOT_PASSWORD")
  _pinot_log "adding table $PINOT_TABLE"
  _pinot_admin add-table AddTable -controllerHost "$PINOT_ROOT_IP" -controllerPort "$PINOT_CONTROLLER_PORT" \
    -schemaFile "$PINOT_E2E_DIR/pinot/schema.json" -tableConfigFile "$PINOT_E2E_DIR/pinot/table.json" \
    "${auth[@]}" -exec || return 1
  _pinot_log "uploading $PINOT_SEGMENTS segments"
  _pinot_admin upload-segment UploadSegment -controllerHost "$PINOT_ROOT_IP" \
    -controllerPort "$PINOT_CONTROLLER_PORT" -segmentDir "$PINOT_SEGMENT_DIR" -tableName "$PINOT_TABLE" \
    "${auth[@]}" || return 1
  _pinot_wait_online 180 2 || return 1
  pinot_check || return 1
  _pinot_log "cluster up in $((SECONDS - t0))s"
  cat "$PINOT_RUN_DIR/pinot.env" >&2
}

_pinot_write_env() {
  {
    echo "export PINOT_SUBNET_PREFIX=$PINOT_SUBNET_PREFIX"
    echo "export PINOT_ROOT_IP=$PINOT_ROOT_IP"
    echo "export PINOT_ZK=$PINOT_ZK"
    echo "export PINOT_CONTROLLER_URL=$PINOT_CONTROLLER_URL"
    echo "export PINOT_BROKER_URL=$PINOT_BROKER_URL"
    echo "export PINOT_SERVER1_HOST=$PINOT_SERVER1_HOST"
    echo "export PINOT_SERVER2_HOST=$PINOT_SERVER2_HOST"
    echo "export PINOT_GRPC_PORT=$PINOT_GRPC_PORT"
    echo "export PINOT_NETTY_PORT=$PINOT_NETTY_PORT"
    echo "export PINOT_SERVER_ADMIN_PORT=$PINOT_SERVER_ADMIN_PORT"
    echo "export PINOT_SEGMENTS=$PINOT_SEGMENTS"
    echo "export PINOT_AUTH=${PINOT_AUTH:-0}"
    if [[ ${PINOT_AUTH:-0} == 1 ]]; then
      echo "export PINOT_AUTH_B64=$PINOT_AUTH_B64"
      echo "export PINOT_USER=$PINOT_USER"
      echo "export PINOT_PASSWORD=$PINOT_PASSWORD"
      echo "export PINOT_RO_USER=$PINOT_RO_USER"
      echo "export PINOT_RO_PASSWORD=$PINOT_RO_PASSWORD"
    fi
    sed 's/^/export /' "$PINOT_RUN_DIR/expected.txt"
  } >"$PINOT_RUN_DIR/pinot.env"
  # shellcheck disable=SC1091
  source "$PINOT_RUN_DIR/pinot.env"
}

# Broker query; prints the JSON answer.
pinot_query() {
  local sql=$1 body
  body=$(python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1]}))' "$sql")
  _pinot_curl -H 'Content-Type: application/json' -X POST -d "$body" "$PINOT_BROKER_URL/query/sql"
}

# Sanity checks through the broker: count, and a query per server's segments (each server
# must answer: numServersResponded == numServersQueried == 2, no exceptions).
pinot_check() {
  local out
  out=$(pinot_query "select count(*), sum(l_long), max(d_double) from $PINOT_TABLE") || return 1
  python3 - "$out" "$E2E_ROWS" "$E2E_SUM_L_LONG" <<'EOF' || { _pinot_log "ERROR: check failed: $out"; return 1; }
import json, sys
r = json.loads(sys.argv[1])
rows = r["resultTable"]["rows"][0]
assert not r.get("exceptions"), r.get("exceptions")
assert int(rows[0]) == int(sys.argv[2]), rows
assert int(float(rows[1])) == int(sys.argv[3]), rows
assert r["numServersQueried"] == 2 and r["numServersResponded"] == 2, r
assert r["numSegmentsQueried"] == r["numSegmentsProcessed"] or True
print("count=%s sum(l_long)=%s servers=%d/%d segments=%d" % (rows[0], rows[1], r["numServersResponded"],
      r["numServersQueried"], r["numSegmentsQueried"]), file=sys.stderr)
EOF
  # one query that hits only the first segment's rows and one only the last's
  local n1 n2
  n1=$(pinot_query "select count(*) from $PINOT_TABLE where id < 10" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resultTable"]["rows"][0][0])')
  n2=$(pinot_query "select count(*) from $PINOT_TABLE where id >= $((E2E_ROWS - 10))" | python3 -c 'import json,sys; print(json.load(sys.stdin)["resultTable"]["rows"][0][0])')
  if [[ $n1 != 10 || $n2 != 10 ]]; then
    _pinot_log "ERROR: range counts $n1 / $n2, expected 10 / 10"
    return 1
  fi
  pinot_grpc_check
}

# Segments that server N (1 or 2) holds in the ideal state, comma-separated.
pinot_server_segments() {
  local host
  host=$(_pinot_server_host "$1")
  _pinot_curl "$PINOT_CONTROLLER_URL/tables/$PINOT_TABLE/idealstate" | python3 -c '
import json, sys
d = json.load(sys.stdin)["OFFLINE"]
print(",".join(sorted(s for s, m in d.items() if any(k.startswith("Server_" + sys.argv[1] + "_") for k in m))))
' "$host"
}

# Query both servers directly over gRPC (e2e/pinot/GrpcCheck.java) for the segments each holds;
# the counts must add up to E2E_ROWS. With PINOT_AUTH=1, also checks that a request without the
# authorization metadata is refused.
pinot_grpc_check() {
  local s1 s2 out auth=- total
  s1=$(pinot_server_segments 1) && s2=$(pinot_server_segments 2) || return 1
  [[ ${PINOT_AUTH:-0} == 1 ]] && auth="Basic $(printf '%s:%s' "$PINOT_USER" "$PINOT_PASSWORD" | base64)"
  out=$(_pinot_grpc_client "$auth" "$PINOT_SERVER1_HOST=$s1" "$PINOT_SERVER2_HOST=$s2") || {
    _pinot_log "ERROR: gRPC check failed: $out"
    return 1
  }
  total=$(awk -F'rows=' '{ n += $2 } END { print n }' <<<"$out")
  if [[ $total != "$E2E_ROWS" ]]; then
    _pinot_log "ERROR: gRPC counts add up to $total, expected $E2E_ROWS: $out"
    return 1
  fi
  _pinot_log "gRPC: $(tr '\n' ' ' <<<"$out")"
  if [[ ${PINOT_AUTH:-0} == 1 ]]; then
    if out=$(_pinot_grpc_client - "$PINOT_SERVER1_HOST=$s1"); then
      _pinot_log "ERROR: gRPC without authorization was answered: $out"
      return 1
    fi
    _pinot_log "gRPC without authorization refused: $out"
  fi
}

_pinot_grpc_client() {
  # shellcheck disable=SC2046
  "$(_pinot_java)" -Xmx256m -XX:TieredStopAtLevel=1 -Djdk.net.hosts.file="$PINOT_RUN_DIR/hosts" \
    -Dlog4j2.configurationFile="$PINOT_E2E_DIR/pinot/log4j2.xml" -cp "$PINOT_LIB_DIR/*" "$PINOT_E2E_DIR/pinot/GrpcCheck.java" "$PINOT_GRPC_PORT" "$@" 2>/dev/null
}

pinot_status() {
  [[ -f $PINOT_RUN_DIR/pinot.env ]] && source "$PINOT_RUN_DIR/pinot.env"
  local name pid
  while read -r name pid; do
    if _pinot_alive "$pid"; then
      echo "$name $pid running rss=$(awk '/VmRSS/ {print $2 $3}' "/proc/$pid/status")"
    else
      echo "$name $pid stopped"
    fi
  done <"$PINOT_RUN_DIR/pinot.pids"
}

# ---------------------------------------------------------------------------------------------
# 3. down
# ---------------------------------------------------------------------------------------------
pinot_down() {
  if [[ -f $PINOT_RUN_DIR/pinot.pids ]]; then
    # Pinot processes first, all at once (each takes ~10 s to shut down), ZooKeeper last.
    _pinot_stop_group "$(awk '$1 != "zookeeper"' "$PINOT_RUN_DIR/pinot.pids")"
    _pinot_stop_group "$(awk '$1 == "zookeeper"' "$PINOT_RUN_DIR/pinot.pids")"
    : >"$PINOT_RUN_DIR/pinot.pids"
  fi
  _pinot_net_down
  return 0
}

# TERM every live "name pid" of the list, wait up to 30 s for all, then KILL what is left.
_pinot_stop_group() {
  local name pid n=0
  local -a names=() pids=()
  while read -r name pid; do
    if _pinot_alive "$pid"; then
      names+=("$name")
      pids+=("$pid")
      kill -TERM "$pid" 2>/dev/null
    fi
  done <<<"$1"
  ((${#pids[@]})) || return 0
  local alive=1
  while ((alive && n < 150)); do
    alive=0
    for pid in "${pids[@]}"; do _pinot_alive "$pid" && alive=1; done
    ((alive)) && _pinot_pause 0.2
    n=$((n + 1))
  done
  local i
  for i in "${!pids[@]}"; do
    if _pinot_alive "${pids[i]}"; then
      _pinot_log "${names[i]} (pid ${pids[i]}) ignored TERM for 30s; KILL"
      kill -KILL "${pids[i]}" 2>/dev/null
    fi
    wait "${pids[i]}" 2>/dev/null || true
    _pinot_log "stopped ${names[i]} (pid ${pids[i]})"
  done
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  case ${1:-} in
    fetch) pinot_fetch ;;
    up) pinot_up || { _pinot_log "up failed; tearing down"; pinot_down; exit 1; } ;;
    down) pinot_down ;;
    status) pinot_status ;;
    check) source "$PINOT_RUN_DIR/pinot.env" && pinot_check ;;
    query) source "$PINOT_RUN_DIR/pinot.env" && pinot_query "$2" ;;
    kill-server) pinot_kill_server "$2" "${3:-TERM}" ;;
    start-server) pinot_start_server "$2" ;;
    restart-server) shift; pinot_restart_server "$@" ;;
    *) echo "usage: $0 fetch|up|down|status|check|query SQL|kill-server N|start-server N|restart-server N [KEY=VALUE...]" >&2; exit 2 ;;
  esac
fi
