{{/*
The chart name, overridable with nameOverride.
*/}}
{{- define "popbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: fullnameOverride, or "<release>-<name>", or the release
name when it already contains the chart name. Truncated to 63 characters (DNS label).
*/}}
{{- define "popbridge.fullname" -}}
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

{{/*
"name-version" for the helm.sh/chart label.
*/}}
{{- define "popbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "popbridge.labels" -}}
helm.sh/chart: {{ include "popbridge.chart" . }}
{{ include "popbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: popbridge
{{- end }}

{{/*
Selector labels: stable across upgrades (a Deployment's selector is immutable).
*/}}
{{- define "popbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "popbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the pod runs as.
*/}}
{{- define "popbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "popbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The container image: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "popbridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The PersistentVolumeClaim holding /var/lib/popbridge: the existing one, or the one the chart creates.
*/}}
{{- define "popbridge.claimName" -}}
{{- default (include "popbridge.fullname" .) .Values.persistence.existingClaim }}
{{- end }}

{{/*
The popbridge config file, exactly as written to the ConfigMap (also hashed for the pod annotation).
*/}}
{{- define "popbridge.configYaml" -}}
# Rendered by the popbridge Helm chart from .Values.config. Secrets come from the environment
# (${VAR}, keys of the existing Secret) or from mounted files; never from this file.
{{ toYaml .Values.config }}
{{- end }}

{{/*
PromQL label matchers selecting this release's series (without braces).
*/}}
{{- define "popbridge.ruleSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q,namespace=%q" (include "popbridge.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
The mailbox an alert is about, as Prometheus renders it: "mailbox NAME", or, in the default
bounded-metrics mode where every series carries mailbox="_all", a pointer to where the name is.
*/}}
{{- define "popbridge.alertMailbox" -}}
{{`{{ if eq $labels.mailbox "_all" }}mailbox (one of them: per-mailbox series are off, set http.per_mailbox_metrics: true or read the log){{ else }}mailbox {{ $labels.mailbox }}{{ end }}`}}
{{- end }}
