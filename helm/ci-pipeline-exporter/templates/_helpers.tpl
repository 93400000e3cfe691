{{- define "cipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cipe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "cipe.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cipe.labels" -}}
app.kubernetes.io/name: {{ include "cipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cipe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cipe.secretName" -}}
{{- default (include "cipe.fullname" .) .Values.github.existingSecret -}}
{{- end -}}

{{- /* The StatefulSet's governing Service: headless, so each pod has a stable DNS name. */}}
{{- define "cipe.headlessName" -}}
{{- printf "%s-headless" (include "cipe.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{- define "cipe.webhookName" -}}
{{- printf "%s-webhook" (include "cipe.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "cipe.webhookSecretName" -}}
{{- default (include "cipe.webhookName" .) .Values.webhooks.existingSecret -}}
{{- end -}}

{{- /* What the chart sets in config github.webhooks, and from which value: the same key in
  config.github.webhooks is refused rather than silently winning or losing. */}}
{{- define "cipe.webhookOwnedKeys" -}}
listen: webhooks.port
path: webhooks.path
secret_env: webhooks.secret or webhooks.existingSecret (the pod's $GITHUB_WEBHOOK_SECRET)
secret_file: webhooks.secret or webhooks.existingSecret (the pod's $GITHUB_WEBHOOK_SECRET)
reconcile_interval: webhooks.reconcileInterval
forward_url: replicas and the headless Service
{{- end -}}

{{- /* config github.webhooks as the chart sets it; with several shards an event for another
  shard's repository is forwarded to that pod through the headless Service. */}}
{{- define "cipe.webhooksConfig" -}}
{{- $port := int .Values.webhooks.port -}}
{{- $hooks := dict "listen" (printf "0.0.0.0:%d" $port) "path" .Values.webhooks.path "secret_env" "GITHUB_WEBHOOK_SECRET" "reconcile_interval" .Values.webhooks.reconcileInterval -}}
{{- if gt (int .Values.replicas) 1 -}}
{{- $url := printf "http://%s-{index}.%s.%s.svc:%d%s" (include "cipe.fullname" .) (include "cipe.headlessName" .) .Release.Namespace $port .Values.webhooks.path -}}
{{- $_ := set $hooks "forward_url" $url -}}
{{- end -}}
{{- toYaml $hooks -}}
{{- end -}}

{{- /* The values the webhook wiring depends on, refused with a message naming the value. */}}
{{- define "cipe.checkWebhooks" -}}
{{- if .Values.webhooks.enabled -}}
{{- if not (or .Values.webhooks.secret .Values.webhooks.existingSecret) -}}
{{- fail "webhooks.enabled: set webhooks.existingSecret (a Secret with the key GITHUB_WEBHOOK_SECRET) or webhooks.secret" -}}
{{- end -}}
{{- $metrics := regexReplaceAll "^.*:" (toString (.Values.config.listen | default "0.0.0.0:9469")) "" -}}
{{- if eq (toString (int .Values.webhooks.port)) $metrics -}}
{{- fail (printf "webhooks.port: %d is the metrics port (config.listen); the webhook listener needs its own" (int .Values.webhooks.port)) -}}
{{- end -}}
{{- $github := .Values.config.github | default dict -}}
{{- if hasKey $github "webhooks" -}}
{{- $own := $github.webhooks -}}
{{- if not (kindIs "map" $own) -}}
{{- fail "config.github.webhooks: a mapping of extra keys (e.g. max_body_bytes), or leave it out: the chart sets it from webhooks" -}}
{{- end -}}
{{- range $key, $from := include "cipe.webhookOwnedKeys" . | fromYaml -}}
{{- if hasKey $own $key -}}
{{- fail (printf "config.github.webhooks.%s: set by the chart from %s when webhooks.enabled; remove it" $key $from) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* The exporter's config file: .Values.config, with github.webhooks from `webhooks` when
  enabled (the user's other github.webhooks keys, e.g. max_body_bytes, are kept). */}}
{{- /* A pod without GitHub credentials would only crash-loop: refused when rendering. */}}
{{- define "cipe.checkGithub" -}}
{{- if .Values.config.github -}}
{{- if not (or .Values.github.token .Values.github.existingSecret .Values.github.app.enabled) -}}
{{- fail "github: set github.existingSecret (a Secret with the key GITHUB_TOKEN, or app.pem with github.app.enabled) or github.token" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cipe.config" -}}
{{- include "cipe.checkGithub" . -}}
{{- include "cipe.checkWebhooks" . -}}
{{- $config := deepCopy .Values.config -}}
{{- if .Values.webhooks.enabled -}}
{{- $github := $config.github | default dict -}}
{{- $own := $github.webhooks | default dict -}}
{{- $_ := set $github "webhooks" (merge (include "cipe.webhooksConfig" . | fromYaml) $own) -}}
{{- $_ := set $config "github" $github -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
