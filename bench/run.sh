#!/usr/bin/env bash
# Benchmark pinot-proxy against direct calls and nginx (grpc_pass) on this machine.
#
# Installs nginx from Debian packages when it is missing, builds the release proxy, then runs
# `cargo bench --bench proxy`. Takes about 8 minutes; BENCH_QUICK=1 takes about 1.5. Figures
# are printed as tables and written as JSON to target/bench/proxy.json (BENCH_JSON=path).
# Other settings (BENCH_RUNS, BENCH_SECS, BENCH_WORKLOADS, BENCH_TARGETS, ...) are listed in
# the README. Extra arguments are passed to `cargo bench`.
set -euo pipefail

cd "$(dirname "$0")/.."

have_nginx() {
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]
}

if [[ -z "${BENCH_NGINX:-}" ]] && ! have_nginx; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=()
        if [[ "$(id -u)" != 0 ]]; then
            sudo=(sudo)
        fi
        echo "==> installing nginx (Debian package)"
        # Debian starts a freshly installed nginx on port 80 unless policy-rc.d forbids it;
        # the bench runs its own nginx, so forbid it for the install when nothing else does.
        added_policy=
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
            "${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
            added_policy=1
        fi
        status=0
        "${sudo[@]}" apt-get update -qq || status=$?
        if [[ $status == 0 ]]; then
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends nginx >/dev/null || status=$?
        fi
        if [[ -n "$added_policy" ]]; then
            "${sudo[@]}" rm -f /usr/sbin/policy-rc.d
        fi
        if [[ $status != 0 ]]; then
            echo "bench/run.sh: installing nginx failed; the bench runs without it" >&2
        fi
    else
        echo "bench/run.sh: no apt-get: install nginx yourself (or set BENCH_NGINX);" \
            "the bench runs without it" >&2
    fi
fi

echo "==> cargo build --release --locked"
cargo build --release --locked
echo "==> cargo bench --bench proxy"
exec cargo bench --locked --bench proxy "$@"
