{{/* Chart name, overridable with nameOverride. */}}
{{- define "souk-server.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects (at most 63 characters). */}}
{{- define "souk-server.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "souk-server.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "souk-server.labels" -}}
helm.sh/chart: {{ include "souk-server.chart" . }}
{{ include "souk-server.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the pod. */}}
{{- define "souk-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "souk-server.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Service account name. */}}
{{- define "souk-server.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "souk-server.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Container image reference. */}}
{{- define "souk-server.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Whether SOUK_DATABASE_URL is set (PostgreSQL). */}}
{{- define "souk-server.usesPostgres" -}}
{{- if or .Values.postgres.existingSecret .Values.postgres.url }}true{{- end }}
{{- end }}

{{/* Secret and key holding the PostgreSQL URL. */}}
{{- define "souk-server.databaseSecretName" -}}
{{- if .Values.postgres.existingSecret }}
{{- .Values.postgres.existingSecret }}
{{- else }}
{{- printf "%s-database" (include "souk-server.fullname" .) }}
{{- end }}
{{- end }}

{{- define "souk-server.databaseSecretKey" -}}
{{- if .Values.postgres.existingSecret }}
{{- .Values.postgres.existingSecretKey }}
{{- else }}
{{- print "database-url" }}
{{- end }}
{{- end }}

{{/* Name of the data volume's claim. */}}
{{- define "souk-server.claimName" -}}
{{- default (printf "%s-data" (include "souk-server.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}
