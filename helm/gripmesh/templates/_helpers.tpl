{{/*
Chart name.
*/}}
{{- define "gripmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every object (63 characters minus room for "-control-publish").
*/}}
{{- define "gripmesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Namespace of every object.
*/}}
{{- define "gripmesh.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "gripmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Standard labels (app.kubernetes.io/*) of every object.
*/}}
{{- define "gripmesh.labels" -}}
helm.sh/chart: {{ include "gripmesh.chart" . }}
{{ include "gripmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gripmesh
{{- end }}

{{/*
Selector labels shared by every tier.
*/}}
{{- define "gripmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gripmesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one tier's objects. Call with (dict "root" $ "tier" "edge").
*/}}
{{- define "gripmesh.tierLabels" -}}
{{ include "gripmesh.labels" .root }}
app.kubernetes.io/component: {{ .tier }}
{{- end }}

{{/*
Selector labels of one tier. Call with (dict "root" $ "tier" "edge").
*/}}
{{- define "gripmesh.tierSelectorLabels" -}}
{{ include "gripmesh.selectorLabels" .root }}
app.kubernetes.io/component: {{ .tier }}
{{- end }}

{{/*
Name of one tier's objects. Call with (dict "root" $ "tier" "edge").
*/}}
{{- define "gripmesh.tierName" -}}
{{- printf "%s-%s" (include "gripmesh.fullname" .root) .tier }}
{{- end }}

{{/*
ServiceAccount name.
*/}}
{{- define "gripmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gripmesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "gripmesh.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
The NATS URL(s); the chart refuses to render without one.
*/}}
{{- define "gripmesh.natsUrl" -}}
{{- required "nats.url is required (e.g. nats://nats:4222; see the README for installing the official NATS chart)" .Values.nats.url }}
{{- end }}

{{/*
Secret and key holding the publish token.
*/}}
{{- define "gripmesh.publishSecretName" -}}
{{- if .Values.publish.existingSecret }}
{{- .Values.publish.existingSecret }}
{{- else }}
{{- printf "%s-publish" (include "gripmesh.fullname" .) }}
{{- end }}
{{- end }}

{{- define "gripmesh.sigSecretName" -}}
{{- if .Values.sigKey.existingSecret }}
{{- .Values.sigKey.existingSecret }}
{{- else }}
{{- printf "%s-sig" (include "gripmesh.fullname" .) }}
{{- end }}
{{- end }}

{{- define "gripmesh.publishSecretKey" -}}
{{- if .Values.publish.existingSecret }}
{{- .Values.publish.existingSecretKey }}
{{- else }}
{{- "token" }}
{{- end }}
{{- end }}

{{/*
authz.mode, checked; authz.gateway is required unless authz is disabled.
*/}}
{{- define "gripmesh.authzMode" -}}
{{- $mode := .Values.authz.mode }}
{{- if not (has $mode (list "deployment" "sidecar" "disabled")) }}
{{- fail (printf "authz.mode must be deployment, sidecar or disabled, not %q" $mode) }}
{{- end }}
{{- if and (ne $mode "disabled") (not .Values.authz.gateway) }}
{{- fail (printf "authz.gateway (the API gateway URL) is required with authz.mode=%s" $mode) }}
{{- end }}
{{- $mode }}
{{- end }}

{{/*
The URL edges use to reach authz (--authz), empty when authz is disabled.
*/}}
{{- define "gripmesh.authzUrl" -}}
{{- $mode := include "gripmesh.authzMode" . }}
{{- if eq $mode "sidecar" }}
{{- "http://127.0.0.1:9191" }}
{{- else if eq $mode "deployment" }}
{{- printf "http://%s.%s.svc:%d" (include "gripmesh.tierName" (dict "root" . "tier" "authz")) (include "gripmesh.namespace" .) (int .Values.authz.service.port) }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds of a tier: covers preStop sleep + drain + margin.
Call with (dict "root" $ "tier" "edge").
*/}}
{{- define "gripmesh.terminationGracePeriod" -}}
{{- $d := .root.Values.drain }}
{{- $min := add (int $d.preStopSleepSeconds) (int $d.timeoutSeconds) }}
{{- $own := (index .root.Values .tier).terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $own }}
{{- add $min (int $d.marginSeconds) }}
{{- else if lt (int $own) (int $min) }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must cover drain.preStopSleepSeconds + drain.timeoutSeconds (%d)" .tier (int $own) (int $min)) }}
{{- else }}
{{- int $own }}
{{- end }}
{{- end }}

{{/*
The preStop hook: a sleep, so that endpoints are removed before the listener stops accepting.
*/}}
{{- define "gripmesh.lifecycle" -}}
{{- if gt (int .Values.drain.preStopSleepSeconds) 0 -}}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int .Values.drain.preStopSleepSeconds }}
{{- end }}
{{- end }}

{{/*
Environment every tier gets.
*/}}
{{- define "gripmesh.commonEnv" -}}
{{- /* NATS_PASSWORD is not a gripmesh variable: it is substituted into GRIPMESH_NATS. */ -}}
{{- if .Values.nats.auth.existingSecret -}}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.nats.auth.existingSecret }}
      key: {{ .Values.nats.auth.passwordKey }}
- name: GRIPMESH_NATS
  value: {{ regexReplaceAll "^([a-z]+://)" (include "gripmesh.natsUrl" .) (printf "${1}%s:$(NATS_PASSWORD)@" .Values.nats.auth.user) | quote }}
{{- else -}}
- name: GRIPMESH_NATS
  value: {{ include "gripmesh.natsUrl" . | quote }}
{{- end }}
{{- if .Values.nats.credsSecret }}
- name: GRIPMESH_NATS_CREDS
  value: /etc/gripmesh-nats/creds/nats.creds
{{- end }}
{{- if .Values.nats.tls.existingSecret }}
- name: GRIPMESH_NATS_TLS_CA
  value: /etc/gripmesh-nats/tls/ca.crt
{{- end }}
{{- with .Values.clusterKey.existingSecret }}
- name: GRIPMESH_CLUSTER_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.clusterKey.existingSecretKey }}
{{- end }}
- name: GRIPMESH_DRAIN_TIMEOUT
  value: {{ .Values.drain.timeoutSeconds | int | quote }}
- name: GRIPMESH_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end }}

{{/*
Mounts of the NATS credentials and TLS Secrets (see gripmesh.natsVolumes).
*/}}
{{- define "gripmesh.natsVolumeMounts" -}}
{{- if .Values.nats.credsSecret }}
- name: nats-creds
  mountPath: /etc/gripmesh-nats/creds
  readOnly: true
{{- end }}
{{- if .Values.nats.tls.existingSecret }}
- name: nats-tls
  mountPath: /etc/gripmesh-nats/tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "gripmesh.natsVolumes" -}}
{{- with .Values.nats.credsSecret }}
- name: nats-creds
  secret:
    secretName: {{ . }}
{{- end }}
{{- with .Values.nats.tls.existingSecret }}
- name: nats-tls
  secret:
    secretName: {{ . }}
{{- end }}
{{- end }}

{{/*
Readiness and liveness probes on a named admin port. Neither depends on downstream services
beyond what /readyz reports for the tier itself.
*/}}
{{- define "gripmesh.probes" -}}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ . }}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
  successThreshold: 1
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ . }}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
  successThreshold: 1
{{- end }}

{{/*
The authz container (own Deployment or edge sidecar). Call with (dict "root" $ "sidecar" bool).
*/}}
{{- define "gripmesh.authzContainer" -}}
{{- $root := .root -}}
- name: authz
  image: {{ include "gripmesh.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  {{- if .sidecar }}
  # A native sidecar: starts before the edge and stops after it.
  restartPolicy: Always
  {{- end }}
  args:
    - authz
    - --gateway
    - {{ $root.Values.authz.gateway | quote }}
    - --listen
    - {{ ternary "127.0.0.1:9191" "0.0.0.0:9191" .sidecar | quote }}
    - --admin-listen
    - "0.0.0.0:9103"
    {{- with $root.Values.authz.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  env:
    {{- include "gripmesh.commonEnv" $root | nindent 4 }}
    {{- with $root.Values.authz.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    {{- if not .sidecar }}
    - name: grpc
      containerPort: 9191
      protocol: TCP
    {{- end }}
    - name: {{ ternary "authz-admin" "admin" .sidecar }}
      containerPort: 9103
      protocol: TCP
  {{- if .sidecar }}
  startupProbe:
    httpGet:
      path: /healthz
      port: authz-admin
    periodSeconds: 1
    failureThreshold: 30
  {{- end }}
  {{- include "gripmesh.probes" (ternary "authz-admin" "admin" .sidecar) | nindent 2 }}
  {{- if not .sidecar }}
  {{- with include "gripmesh.lifecycle" $root }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- end }}
  resources:
    {{- toYaml $root.Values.authz.resources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- with include "gripmesh.natsVolumeMounts" $root }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
Pod-level fields shared by every tier. Call with (dict "root" $ "tier" "edge").
*/}}
{{- define "gripmesh.podCommon" -}}
{{- $root := .root }}
{{- $t := index $root.Values .tier -}}
serviceAccountName: {{ include "gripmesh.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
terminationGracePeriodSeconds: {{ include "gripmesh.terminationGracePeriod" . }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $t.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $t.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $t.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $t.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $t.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $t.topologySpreadConstraints | nindent 2 }}
{{- else if and $root.Values.topologySpread.enabled $root.Values.topologySpread.topologyKeys }}
topologySpreadConstraints:
  {{- range $root.Values.topologySpread.topologyKeys }}
  - maxSkew: {{ $root.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "gripmesh.tierSelectorLabels" (dict "root" $root "tier" $.tier) | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
  {{- end }}
{{- end }}
{{- end }}

{{/*
Pod metadata of a tier. Call with (dict "root" $ "tier" "edge").
*/}}
{{- define "gripmesh.podMetadata" -}}
{{- $t := index .root.Values .tier -}}
labels:
  {{- include "gripmesh.tierLabels" . | nindent 2 }}
  {{- with $t.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $scrape := dict }}
{{- if .root.Values.metrics.scrapeAnnotations }}
{{- /* A stock Prometheus (the kubernetes-pods job of its example configuration) scrapes pods
       annotated like this; no Prometheus Operator needed. */}}
{{- $port := get (dict "edge" "9101" "control" "9102" "authz" "9103") .tier }}
{{- $scrape = dict "prometheus.io/scrape" "true" "prometheus.io/port" $port "prometheus.io/path" "/metrics" }}
{{- end }}
{{- $annotations := merge (deepCopy ($t.podAnnotations | default dict)) $scrape }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
