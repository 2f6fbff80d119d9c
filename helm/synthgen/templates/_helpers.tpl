{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "synthgen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name prefix of every resource. */}}
{{- define "synthgen.fullname" -}}
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

{{- define "synthgen.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "synthgen.labels" -}}
helm.sh/chart: {{ include "synthgen.chart" . }}
{{ include "synthgen.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "synthgen.selectorLabels" -}}
app.kubernetes.io/name: {{ include "synthgen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector labels of one component: include "synthgen.componentSelectorLabels" (list $ "api") */}}
{{- define "synthgen.componentSelectorLabels" -}}
{{ include "synthgen.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "synthgen.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "synthgen.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference: include "synthgen.image" (dict "root" $ "gpu" true) */}}
{{- define "synthgen.image" -}}
{{- $root := .root -}}
{{- $tag := default $root.Chart.AppVersion $root.Values.image.tag -}}
{{- if .gpu -}}
{{- $tag = printf "%s%s" $tag $root.Values.image.gpuTagSuffix -}}
{{- end -}}
{{- printf "%s:%s" $root.Values.image.repository $tag -}}
{{- end -}}

{{- define "synthgen.redisFullname" -}}
{{- printf "%s-redis" (include "synthgen.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fail early on an inconsistent Redis choice. */}}
{{- define "synthgen.validateRedis" -}}
{{- $external := or .Values.externalRedis.url .Values.externalRedis.existingSecret -}}
{{- if and .Values.redis.enabled $external -}}
{{- fail "externalRedis.url/existingSecret is set while redis.enabled is true: set redis.enabled=false to use the external Redis" -}}
{{- end -}}
{{- if not (or .Values.redis.enabled $external) -}}
{{- fail "no Redis: set redis.enabled=true, or externalRedis.url, or externalRedis.existingSecret" -}}
{{- end -}}
{{- end -}}

{{/* REDIS_URL when it is not read from a Secret. */}}
{{- define "synthgen.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s:%d/0" (include "synthgen.redisFullname" .) (int .Values.redis.port) -}}
{{- else -}}
{{- .Values.externalRedis.url -}}
{{- end -}}
{{- end -}}

{{/* Pod annotations shared by api and worker: config checksum and Prometheus scraping. */}}
{{- define "synthgen.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.containerPort | int64 | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* REDIS_URL from externalRedis.existingSecret, as env list items; empty when the ConfigMap carries it. */}}
{{- define "synthgen.redisSecretEnv" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.existingSecret -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretKey }}
{{- end -}}
{{- end -}}
