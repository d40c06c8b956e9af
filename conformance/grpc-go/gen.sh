#!/usr/bin/env bash
# Regenerates echopb/ from ../clients.proto (run after changing it; the output is committed):
# protoc from grpcio-tools (the version in ../clients-requirements.txt, in the venv that
# clients.sh makes), the Go plugins at the versions below.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${PINOT_PROXY_CACHE:-$HOME/.cache/pinot-proxy}/venv
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOTOOLCHAIN=local GOBIN=$bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
GOTOOLCHAIN=local GOBIN=$bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
mkdir -p echopb
PATH=$bin:$PATH "$VENV/bin/python" -m grpc_tools.protoc -I.. \
    --go_out=echopb --go_opt=paths=source_relative \
    --go-grpc_out=echopb --go-grpc_opt=paths=source_relative \
    ../clients.proto
