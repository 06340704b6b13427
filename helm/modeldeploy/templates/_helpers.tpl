{{/* Chart name, overridable by nameOverride. */}}
{{- define "modeldeploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, suffixed with the chart name unless it already holds it. */}}
{{- define "modeldeploy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "modeldeploy.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels that select the operator's pods; never change them after an install. */}}
{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modeldeploy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "modeldeploy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: modeldeploy
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "modeldeploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modeldeploy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* "true" when the local provider runs its endpoints as Deployments in the cluster. */}}
{{- define "modeldeploy.localInCluster" -}}
{{- if and (eq .Values.provider "local") (eq .Values.local.hosting "kubernetes") }}true{{ end }}
{{- end }}

{{- define "modeldeploy.endpointNamespace" -}}
{{- default .Release.Namespace .Values.local.endpointNamespace }}
{{- end }}

{{/* "true" when the local provider keeps its state on a PersistentVolumeClaim. */}}
{{- define "modeldeploy.localPersistence" -}}
{{- if and (eq .Values.provider "local") .Values.local.persistence.enabled }}true{{ end }}
{{- end }}

{{/* Claim of the local provider's state: an existing one, or the chart's. */}}
{{- define "modeldeploy.localClaimName" -}}
{{- default (printf "%s-local" (include "modeldeploy.fullname" .)) .Values.local.persistence.existingClaim }}
{{- end }}

{{/* MODELDEPLOY_LOCAL_DIR: the claim's mount, or the image's default home (HOME=/tmp) on the
     /tmp emptyDir, which is lost with the pod. */}}
{{- define "modeldeploy.localDir" -}}
{{- if include "modeldeploy.localPersistence" . }}/var/lib/modeldeploy{{ else }}/tmp/.local/share/modeldeploy{{ end }}
{{- end }}

{{/* Name of kopf's peering object with highAvailability: the value, or the full name. */}}
{{- define "modeldeploy.peeringName" -}}
{{- default (include "modeldeploy.fullname" .) .Values.highAvailability.peering }}
{{- end }}

{{/* What highAvailability cannot do, refused at render time. */}}
{{- define "modeldeploy.haChecks" -}}
{{- if .Values.highAvailability.enabled }}
{{- if eq .Values.provider "local" }}
{{- fail "highAvailability needs provider sagemaker: the local provider keeps its registry inside the operator's pod" }}
{{- end }}
{{- range .Values.watchNamespaces }}
{{- if regexMatch "[*?!\\[\\]]" . }}
{{- fail (printf "highAvailability needs each watched namespace named (a KopfPeering is created in each); %q is a pattern" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
