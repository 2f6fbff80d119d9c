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
{{- if and .Values.externalRedis.cluster .Values.redis.enabled -}}
{{- fail "externalRedis.cluster is set while redis.enabled is true: the in-cluster Redis is a single server; set redis.enabled=false and externalRedis.url to a node of your Redis Cluster" -}}
{{- end -}}
{{- if and .Values.externalRedis.cluster .Values.worker.keda.enabled (eq .Values.worker.keda.trigger "redis-streams") -}}
{{- fail "externalRedis.cluster with worker.keda.trigger redis-streams: on a cluster the queue has one stream pair per shard; set worker.keda.trigger=prometheus (it scales on the lag the api reports over all shards)" -}}
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

{{/* SYNTHGEN_MODELS_DIR: the image's directory, or the mounted models volume. */}}
{{- define "synthgen.modelsDir" -}}
{{- if eq .Values.models.source "image" -}}
{{- .Values.config.modelsDir -}}
{{- else -}}
{{- .Values.models.mountPath -}}
{{- end -}}
{{- end -}}

{{/* Fail early on an incomplete models or autoscaling choice. */}}
{{- define "synthgen.validate" -}}
{{- include "synthgen.validateRedis" . -}}
{{- if and (eq .Values.models.source "pvc") (not .Values.models.pvc.existingClaim) -}}
{{- fail "models.source=pvc needs models.pvc.existingClaim" -}}
{{- end -}}
{{- if and (eq .Values.models.source "initContainer") (not .Values.models.initContainer.command) (not .Values.models.initContainer.url) -}}
{{- fail "models.source=initContainer needs models.initContainer.url (or your own models.initContainer.command)" -}}
{{- end -}}
{{- $keda := .Values.worker.keda -}}
{{- if $keda.enabled -}}
{{- if lt (int $keda.maxReplicaCount) (int $keda.minReplicaCount) -}}
{{- fail "worker.keda.maxReplicaCount must not be below worker.keda.minReplicaCount" -}}
{{- end -}}
{{- if and (eq $keda.trigger "redis-streams") (not .Values.redis.enabled) (not $keda.redisStreams.address) -}}
{{- fail "worker.keda.redisStreams.address (host:port) is required with an external Redis" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.api.autoscaling.enabled (lt (int .Values.api.autoscaling.maxReplicas) (int .Values.api.autoscaling.minReplicas)) -}}
{{- fail "api.autoscaling.maxReplicas must not be below api.autoscaling.minReplicas" -}}
{{- end -}}
{{- end -}}

{{/* Whether the api mounts a keys file, and the Secret it comes from. */}}
{{- define "synthgen.apiKeysSecret" -}}
{{- if .Values.apiKeys.existingSecret -}}
{{- .Values.apiKeys.existingSecret -}}
{{- else if .Values.apiKeys.keys -}}
{{- printf "%s-api-keys" (include "synthgen.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Volume mounts of the models volume, as list items; empty for models from the image. */}}
{{- define "synthgen.modelsVolumeMount" -}}
{{- if ne .Values.models.source "image" -}}
- name: models
  mountPath: {{ .Values.models.mountPath }}
  readOnly: true
  {{- if and (eq .Values.models.source "pvc") .Values.models.pvc.subPath }}
  subPath: {{ .Values.models.pvc.subPath }}
  {{- end }}
{{- end -}}
{{- end -}}

{{/* The models volume, as list items; empty for models from the image. */}}
{{- define "synthgen.modelsVolume" -}}
{{- if eq .Values.models.source "pvc" -}}
- name: models
  persistentVolumeClaim:
    claimName: {{ .Values.models.pvc.existingClaim }}
    readOnly: true
{{- else if eq .Values.models.source "initContainer" -}}
- name: models
  emptyDir:
    sizeLimit: {{ .Values.models.initContainer.sizeLimit }}
{{- end -}}
{{- end -}}

{{/* Init container that fills the models volume, as list items; empty unless models.source=initContainer. */}}
{{- define "synthgen.modelsInitContainer" -}}
{{- if eq .Values.models.source "initContainer" -}}
{{- $init := .Values.models.initContainer -}}
- name: fetch-models
  image: "{{ $init.image.repository }}:{{ $init.image.tag }}"
  imagePullPolicy: {{ $init.image.pullPolicy }}
  {{- if $init.command }}
  command:
    {{- toYaml $init.command | nindent 4 }}
  {{- else }}
  command: ["sh", "-ec", "curl -fsSL --retry 3 \"$MODELS_URL\" | tar -xz -C \"$MODELS_DIR\" && ls -l \"$MODELS_DIR\""]
  {{- end }}
  {{- with $init.args }}
  args:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  env:
    - name: MODELS_DIR
      value: {{ .Values.models.mountPath | quote }}
    - name: MODELS_URL
      value: {{ $init.url | quote }}
    - name: HOME
      value: /tmp
    {{- with $init.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  resources:
    {{- toYaml $init.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: {{ .Values.models.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- end -}}
{{- end -}}

{{/* PodDisruptionBudget spec fields of one component's pdb values. */}}
{{- define "synthgen.pdbSpec" -}}
{{- if ne (toString .minAvailable) "" -}}
minAvailable: {{ .minAvailable }}
{{- else -}}
maxUnavailable: {{ .maxUnavailable }}
{{- end -}}
{{- end -}}
