{{/* Names ----------------------------------------------------------------------------- */}}

{{- define "llm-service.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llm-service.gateway" -}}{{ include "llm-service.fullname" . }}-gateway{{- end -}}
{{- define "llm-service.inference" -}}{{ include "llm-service.fullname" . }}-inference{{- end -}}
{{- define "llm-service.postgresql" -}}{{ include "llm-service.fullname" . }}-postgresql{{- end -}}
{{- define "llm-service.redis" -}}{{ include "llm-service.fullname" . }}-redis{{- end -}}

{{/* The Secret the operator makes; the one the chart makes for trials. */}}
{{- define "llm-service.secret" -}}
{{- .Values.secrets.existingSecret | default (include "llm-service.fullname" .) -}}
{{- end -}}
{{- define "llm-service.generatedSecret" -}}{{ include "llm-service.fullname" . }}-generated{{- end -}}
{{- define "llm-service.inferenceKeysSecret" -}}
{{- .Values.inference.apiKeys.existingSecret | default (printf "%s-keys" (include "llm-service.inference" .)) -}}
{{- end -}}

{{/* Which Secret holds a key: the chart's own for what it generates, else the operator's. */}}
{{- define "llm-service.secretFor" -}}
{{- $key := index . 0 -}}
{{- $root := index . 1 -}}
{{- $v := $root.Values -}}
{{- if or (and (eq $key "DATABASE_URL") $v.postgresql.enabled) (and (eq $key "REDIS_URL") $v.redis.enabled) (and (has $key (list "JWT_SECRET" "METRICS_TOKEN")) $v.secrets.generate) (has $key (list "POSTGRES_PASSWORD" "REDIS_PASSWORD")) -}}
{{- include "llm-service.generatedSecret" $root -}}
{{- else -}}
{{- include "llm-service.secret" $root -}}
{{- end -}}
{{- end -}}

{{/* An env entry read from a Secret: (list NAME KEY root optional). */}}
{{- define "llm-service.secretEnv" -}}
{{- $name := index . 0 -}}
{{- $key := index . 1 -}}
{{- $root := index . 2 -}}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "llm-service.secretFor" (list $key $root) }}
      key: {{ $key }}
      {{- if index . 3 }}
      optional: true
      {{- end }}
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------- */}}

{{- define "llm-service.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "llm-service.labels" -}}
{{ include "llm-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: llm-service
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Images ---------------------------------------------------------------------------- */}}

{{- define "llm-service.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "llm-service.inferenceImage" -}}
{{- $i := .Values.inference.image -}}
{{- printf "%s:%s" ($i.repository | default .Values.image.repository) ($i.tag | default .Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Security: the image's user (uid 10001), no privilege, a read-only root filesystem. */}}

{{- define "llm-service.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 10001 }}
runAsGroup: {{ .uid | default 10001 }}
fsGroup: {{ .uid | default 10001 }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "llm-service.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Spread replicas over nodes unless the values say otherwise: (dict "root" . "component" C "affinity" A) */}}
{{- define "llm-service.affinity" -}}
{{- if .affinity -}}
{{ toYaml .affinity }}
{{- else -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "llm-service.selectorLabels" . | nindent 12 }}
{{- end -}}
{{- end -}}

{{/* Settings ------------------------------------------------------------------------- */}}

{{/* Settings that are secrets: never plain values. */}}
{{- define "llm-service.refusePlainSecrets" -}}
{{- range $name, $_ := .env -}}
{{- if has (upper $name) (list "JWT_SECRET" "JWT_CONSTANT" "DATABASE_URL" "REDIS_URL" "METRICS_TOKEN" "LLM_REMOTE_API_KEYS") -}}
{{- fail (printf "%s.env.%s: a secret; put it in the Secret (secrets.existingSecret), not in values" $.where $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Plain settings from a NAME: value map, sorted by name. */}}
{{- define "llm-service.plainEnv" -}}
{{- range $name := keys . | sortAlpha }}
- name: {{ $name }}
  value: {{ index $ $name | toString | quote }}
{{- end -}}
{{- end -}}

{{/* The nodes' pool for LLM_MODELS: alias=URL-0|URL-1|..., each URL#the nodes' alias. */}}
{{- define "llm-service.pool" -}}
{{- $inference := include "llm-service.inference" . -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.inference.replicaCount) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s.%s.svc.%s:8000/v1#%s" $inference $i $inference $.Release.Namespace $.Values.clusterDomain $.Values.inference.modelAlias) -}}
{{- end -}}
{{- printf "%s=%s" .Values.gateway.modelAlias (join "|" $urls) -}}
{{- end -}}

{{/* Inference memory in MiB: model + KV cache (context x slots) + saved states + overhead. */}}
{{- define "llm-service.inferenceMemoryMiB" -}}
{{- $v := .Values.inference -}}
{{- $kv := div (add (mul $v.llm.contextSize $v.llm.parallel $v.sizing.kvKiBPerToken) 1023) 1024 -}}
{{- add $v.sizing.modelMiB $kv $v.llm.stateCacheMB $v.sizing.overheadMiB -}}
{{- end -}}

{{/* Whole CPUs of a quantity ("4", 2, "1500m"), at least 1. */}}
{{- define "llm-service.cpus" -}}
{{- $cpu := toString . -}}
{{- if hasSuffix "m" $cpu -}}
{{- max 1 (div (trimSuffix "m" $cpu | atoi) 1000) -}}
{{- else -}}
{{- max 1 ($cpu | float64 | floor | int) -}}
{{- end -}}
{{- end -}}

{{/* The grace period: (list preStop shutdownGrace explicit where). */}}
{{- define "llm-service.terminationGrace" -}}
{{- $preStop := int (index . 0) -}}
{{- $drain := int (index . 1) -}}
{{- $explicit := index . 2 -}}
{{- if $explicit -}}
{{- if le (int $explicit) (add $preStop $drain 2) -}}
{{- fail (printf "%s.terminationGracePeriodSeconds=%v must exceed preStopSeconds + shutdownGraceSeconds + 2 (%d)" (index . 3) $explicit (add $preStop $drain 2)) -}}
{{- end -}}
{{- int $explicit -}}
{{- else -}}
{{- add $preStop $drain 10 -}}
{{- end -}}
{{- end -}}

{{/* /health probes on the http port: (dict "startupFailures" N) */}}
{{- define "llm-service.probes" -}}
startupProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: {{ .startupFailures }}
readinessProbe:
  httpGet: {path: /health, port: http}
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 2
livenessProbe:
  # Only whether the process answers: /health is 503 while the database or a model server
  # is down, which a restart does not mend (readiness takes the pod out of service then).
  httpGet: {path: /health/live, port: http}
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
{{- end -}}
