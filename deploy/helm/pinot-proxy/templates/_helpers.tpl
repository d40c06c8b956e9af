{{/* Names, labels, and the checks the chart makes on the proxy's config. */}}

{{- define "pinot-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's name when it already holds the chart's name, else release-chart; 63 at most. */}}
{{- define "pinot-proxy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pinot-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pinot-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pinot-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pinot-proxy.labels" -}}
helm.sh/chart: {{ include "pinot-proxy.chart" . }}
{{ include "pinot-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: proxy
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pinot-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pinot-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pinot-proxy.configMapName" -}}
{{- default (include "pinot-proxy.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{- define "pinot-proxy.configKey" -}}
{{- if .Values.existingConfigMap }}{{ .Values.existingConfigMapKey }}{{ else }}pinot-proxy.toml{{ end }}
{{- end }}

{{- define "pinot-proxy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/* Proxy speaks TLS on its port: a TLS Secret is mounted. */}}
{{- define "pinot-proxy.tls" -}}
{{- if .Values.tls.secretName }}true{{ end }}
{{- end }}

{{/*
The inline config, parsed, as YAML (read back with fromYaml); empty with existingConfigMap.
A config that is not TOML stops the render with the parser's message.
*/}}
{{- define "pinot-proxy.parsedConfig" -}}
{{- if not .Values.existingConfigMap }}
{{- $config := fromToml .Values.config }}
{{- if hasKey $config "Error" }}
{{- fail (printf "config is not valid TOML: %s" (get $config "Error")) }}
{{- end }}
{{- toYaml $config }}
{{- end }}
{{- end }}

{{/* The port of a listen address ("0.0.0.0:8096", "[::]:8096", "localhost:8096"). */}}
{{- define "pinot-proxy.listenPort" -}}
{{- regexFind "[0-9]+$" (toString .) }}
{{- end }}

{{/*
Refuse values that would make pods that cannot serve: listen ports other than ports.*, no
admin listener for the probes, a TLS Secret the config does not use.
*/}}
{{- define "pinot-proxy.validate" -}}
{{- if not .Values.existingConfigMap }}
{{- $config := include "pinot-proxy.parsedConfig" . | fromYaml }}
{{- $server := get $config "server" | default dict }}
{{- $admin := get $config "admin" | default dict }}
{{- $grpcPort := include "pinot-proxy.listenPort" (get $server "listen") }}
{{- if ne $grpcPort (toString .Values.ports.grpc) }}
{{- fail (printf "config [server] listen %q must use ports.grpc (%v)" (get $server "listen" | toString) .Values.ports.grpc) }}
{{- end }}
{{- if not (get $admin "listen") }}
{{- fail "config needs [admin] listen: the probes use /livez and /readyz on it" }}
{{- end }}
{{- $adminPort := include "pinot-proxy.listenPort" (get $admin "listen") }}
{{- if ne $adminPort (toString .Values.ports.admin) }}
{{- fail (printf "config [admin] listen %q must use ports.admin (%v)" (get $admin "listen" | toString) .Values.ports.admin) }}
{{- end }}
{{- if and .Values.tls.secretName (not (hasKey $server "tls")) }}
{{- fail "tls.secretName is set but the config has no [server.tls]: add cert_file and key_file under /etc/pinot-proxy/tls" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
SIGTERM to exit takes up to drain_delay_ms + shutdown_grace_ms (defaults 5000 and 30000);
Kubernetes must wait longer than that before SIGKILL.
*/}}
{{- define "pinot-proxy.terminationGracePeriodSeconds" -}}
{{- $drainMs := 5000 }}
{{- $graceMs := 30000 }}
{{- if not .Values.existingConfigMap }}
{{- $server := get (include "pinot-proxy.parsedConfig" . | fromYaml) "server" | default dict }}
{{- if hasKey $server "drain_delay_ms" }}{{ $drainMs = get $server "drain_delay_ms" | int }}{{ end }}
{{- if hasKey $server "shutdown_grace_ms" }}{{ $graceMs = get $server "shutdown_grace_ms" | int }}{{ end }}
{{- end }}
{{- $needed := div (add $drainMs $graceMs 999) 1000 }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed .Values.terminationGraceMarginSeconds }}
{{- else }}
{{- $given := .Values.terminationGracePeriodSeconds | int }}
{{- if le $given $needed }}
{{- fail (printf "terminationGracePeriodSeconds %d must exceed drain_delay_ms + shutdown_grace_ms (%d s)" $given $needed) }}
{{- end }}
{{- $given }}
{{- end }}
{{- end }}
