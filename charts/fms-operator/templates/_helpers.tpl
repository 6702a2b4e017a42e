{{/* Chart name, overridable. */}}
{{- define "fms-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. Kept to 63 characters because some
Kubernetes name fields are DNS labels.
*/}}
{{- define "fms-operator.fullname" -}}
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

{{- define "fms-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "fms-operator.labels" -}}
helm.sh/chart: {{ include "fms-operator.chart" . }}
{{ include "fms-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fms
{{- end }}

{{/* Labels that select the operator pods; must stay stable across upgrades. */}}
{{- define "fms-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fms-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "fms-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fms-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fms-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "fms-operator.peeringName" -}}
{{- default (include "fms-operator.fullname" .) .Values.peering.name }}
{{- end }}

{{/*
Labels the operator puts on every worker pod it creates; the PodMonitor
selects on them. Must match fms_operator/render/meta.py (a unit test compares).
*/}}
{{- define "fms-operator.workerSelectorLabels" -}}
app.kubernetes.io/managed-by: fms-operator
app.kubernetes.io/component: worker
{{- end }}
