{{/* Chart name. */}}
{{- define "nicotask.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, plus the chart name unless the release already contains it. */}}
{{- define "nicotask.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "nicotask.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "nicotask.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nicotask
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "operator"). */}}
{{- define "nicotask.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nicotask.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "nicotask.componentLabels" -}}
{{ include "nicotask.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "nicotask.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* ServiceAccount name of one component. */}}
{{- define "nicotask.serviceAccountName" -}}
{{- $values := index .ctx.Values .component -}}
{{- default (printf "%s-%s" (include "nicotask.fullname" .ctx) .component) $values.serviceAccount.name -}}
{{- end -}}

{{/* Peering is on with more than one operator replica or when asked for. */}}
{{- define "nicotask.peeringEnabled" -}}
{{- if or .Values.operator.peering.enabled (gt (int .Values.operator.replicas) 1) -}}true{{- end -}}
{{- end -}}

{{- define "nicotask.peeringName" -}}
{{- default (include "nicotask.fullname" .) .Values.operator.peering.name -}}
{{- end -}}

{{/* Environment shared by every component. */}}
{{- define "nicotask.commonEnv" -}}
- name: NICOTASK_JSON_LOGS
  value: {{ .Values.jsonLogs | quote }}
{{- end -}}

{{/* Temporal connection (operator and worker; the shim never talks to Temporal). */}}
{{- define "nicotask.temporalEnv" -}}
- name: NICOTASK_TEMPORAL_ADDRESS
  value: {{ .Values.temporal.address | quote }}
- name: NICOTASK_TEMPORAL_NAMESPACE
  value: {{ .Values.temporal.namespace | quote }}
- name: NICOTASK_TASK_QUEUE
  value: {{ .Values.temporal.taskQueue | quote }}
{{- if .Values.temporal.tls.enabled }}
- name: NICOTASK_TEMPORAL_TLS
  value: "true"
{{- if .Values.temporal.tls.secretName }}
{{- if .Values.temporal.tls.caKey }}
- name: NICOTASK_TEMPORAL_TLS_CA_FILE
  value: /etc/nicotask/temporal-tls/{{ .Values.temporal.tls.caKey }}
{{- end }}
{{- if .Values.temporal.tls.certKey }}
- name: NICOTASK_TEMPORAL_TLS_CERT_FILE
  value: /etc/nicotask/temporal-tls/{{ .Values.temporal.tls.certKey }}
{{- end }}
{{- if .Values.temporal.tls.keyKey }}
- name: NICOTASK_TEMPORAL_TLS_KEY_FILE
  value: /etc/nicotask/temporal-tls/{{ .Values.temporal.tls.keyKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "nicotask.tlsMount" -}}
{{- if and .Values.temporal.tls.enabled .Values.temporal.tls.secretName }}
- name: temporal-tls
  mountPath: /etc/nicotask/temporal-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "nicotask.tlsVolume" -}}
{{- if and .Values.temporal.tls.enabled .Values.temporal.tls.secretName }}
- name: temporal-tls
  secret:
    secretName: {{ .Values.temporal.tls.secretName }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by the Deployments: (dict "ctx" $ "component" "operator"). */}}
{{- define "nicotask.podCommon" -}}
{{- $values := index .ctx.Values .component -}}
serviceAccountName: {{ include "nicotask.serviceAccountName" . }}
# No Docker-link variables: the Service `nicotask-shim` would inject
# NICOTASK_SHIM_PORT=tcp://... into every pod, which is a nicotask setting.
enableServiceLinks: false
{{- with .ctx.Values.hostAliases }}
hostAliases:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
