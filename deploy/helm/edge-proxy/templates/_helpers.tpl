{{/* The chart's name, cut to the 63 characters a label value may hold. */}}
{{- define "edge-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The objects' name: the release name when it already contains the chart's name
(`helm install edge-proxy …` gives edge-proxy), else release-chart. 57 characters at most, so
that "-peers" and "-config" still fit a DNS label.
*/}}
{{- define "edge-proxy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 57 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "edge-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edge-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "edge-proxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "edge-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Secret holding config.json. */}}
{{- define "edge-proxy.configSecret" -}}
{{- .Values.existingSecret.name | default (printf "%s-config" (include "edge-proxy.fullname" .)) }}
{{- end }}

{{/* The Secret holding peer_secret. */}}
{{- define "edge-proxy.peerSecret" -}}
{{- .Values.peers.existingSecret.name | default (printf "%s-peers" (include "edge-proxy.fullname" .)) }}
{{- end }}

{{/* The headless Service that resolves to every replica. */}}
{{- define "edge-proxy.peersService" -}}
{{- printf "%s-peers" (include "edge-proxy.fullname" .) }}
{{- end }}

{{- define "edge-proxy.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/*
The server object given as the SERVER environment variable: it merges into config.json's
"server" key by key, so the listen port always matches containerPort and the TLS files are the
mounted Secret's, whichever config source is used.
*/}}
{{- define "edge-proxy.serverEnv" -}}
{{- $server := dict "port" (int .Values.containerPort) }}
{{- if .Values.tls.enabled }}
{{- $_ := set $server "tls" (dict "cert_file" "/etc/edge-proxy/tls/tls.crt" "key_file" "/etc/edge-proxy/tls/tls.key") }}
{{- end }}
{{- toJson $server }}
{{- end }}

{{/* Stops the rendering with a message for values that cannot work. */}}
{{- define "edge-proxy.validate" -}}
{{- if and (not .Values.existingSecret.name) (not .Values.config) }}
{{- fail "config: give the proxy's config.json as config, or the name of a Secret holding it as existingSecret.name" }}
{{- end }}
{{- if and .Values.peers.enabled (not .Values.peers.existingSecret.name) .Values.peers.secret (lt (len .Values.peers.secret) 16) }}
{{- fail "peers.secret: must be at least 16 characters (e.g. openssl rand -hex 32)" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.secretName: name the kubernetes.io/tls Secret to serve HTTPS with" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling: minReplicas must not exceed maxReplicas" }}
{{- end }}
{{- end }}
