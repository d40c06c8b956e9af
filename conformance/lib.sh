# shellcheck shell=bash
# What the conformance scripts share: logging, timed phases, the proxy binary, a test
# certificate and free ports. Sourced with SUITE (the log prefix) and ROOT set; make_cert
# writes into TMP.

log() { echo "[$SUITE] $*"; }
die() { echo "[$SUITE] error: $*" >&2; exit 1; }

# phase NAME COMMAND...: runs a step and prints how long it took.
phase() {
    local name=$1 started=$EPOCHREALTIME
    shift
    "$@"
    log "phase $name took $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
}

# PROXY_BIN as given, else the release build (cargo does nothing when it is up to date).
build_proxy() {
    if [[ -n ${PROXY_BIN:-} ]]; then
        log "proxy: $PROXY_BIN"
    else
        (cd "$ROOT" && cargo build --release --locked --bin pinot-proxy)
        PROXY_BIN=$ROOT/target/release/pinot-proxy
    fi
    [[ -x $PROXY_BIN ]] || die "PROXY_BIN=$PROXY_BIN is not an executable"
}

# A self-signed EC certificate for 127.0.0.1 / localhost, made fresh for each run.
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=127.0.0.1 -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        -keyout "$TMP/tls.key" -out "$TMP/tls.crt" 2>"$TMP/openssl.log" ||
        { cat "$TMP/openssl.log" >&2; die "openssl could not make a certificate"; }
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
