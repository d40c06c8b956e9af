// Pins h2spec and its dependencies for conformance/h2spec.sh (h2spec has no go.mod of its own,
// so `go install ...@v2.2.1+incompatible` would take whatever dependency versions are newest).
// Built with: go build -C conformance/h2spec-tool -o BIN github.com/summerwind/h2spec/cmd/h2spec
module pinot-proxy/conformance/h2spec-tool

go 1.24

tool github.com/summerwind/h2spec/cmd/h2spec

require (
	github.com/fatih/color v1.18.0 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/mattn/go-colorable v0.1.13 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/spf13/cobra v1.8.1 // indirect
	github.com/spf13/pflag v1.0.5 // indirect
	github.com/summerwind/h2spec v2.2.1+incompatible // indirect
	golang.org/x/net v0.33.0 // indirect
	golang.org/x/sys v0.28.0 // indirect
	golang.org/x/text v0.21.0 // indirect
)
