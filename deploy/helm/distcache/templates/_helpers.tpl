{{/* Names, labels and the pieces every component's pod shares. */}}

{{- define "distcache.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* distcache.componentName: <fullname>-<component>; call with (dict "root" $ "component" "core-publisher"). */}}
{{- define "distcache.componentName" -}}
{{- printf "%s-%s" (include "distcache.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "distcache.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "distcache.labels" -}}
{{ include "distcache.selectorLabels" . }}
app.kubernetes.io/part-of: distcache
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "distcache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "distcache.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* distcache.image: the image of one service; call with (dict "root" $ "service" "core-publisher"). */}}
{{- define "distcache.image" -}}
{{- $img := .root.Values.image -}}
{{- $repo := printf "%s/%s/%s" $img.registry $img.repositoryPrefix .service -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* distcache.secretEnv: an env entry read from a Secret; (dict "name" "VAR" "ref" .Values.postgres.core "what" "postgres.core"), ref holding existingSecret and key. */}}
{{- define "distcache.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "%s.existingSecret is required" .what) .ref.existingSecret | quote }}
      key: {{ required (printf "%s.key is required" .what) .ref.key | quote }}
{{- end -}}

{{/* distcache.kafkaEnv: broker connection for a service whose variables start with .prefix.
Every service reads the same <PREFIX>_KAFKA_* variables (libs/svcconfig/kafkaconf). */}}
{{- define "distcache.kafkaEnv" -}}
{{- $k := .root.Values.kafka -}}
- name: {{ .prefix }}KAFKA_BROKERS
  value: {{ required "kafka.brokers is required" (join "," $k.brokers) | quote }}
- name: {{ .prefix }}TOPIC_PREFIX
  value: {{ $k.topicPrefix | quote }}
{{- if $k.tls.enabled }}
- name: {{ .prefix }}KAFKA_TLS
  value: "true"
{{- if and $k.tls.existingSecret $k.tls.caKey }}
- name: {{ .prefix }}KAFKA_TLS_CA_FILE
  value: {{ printf "/etc/distcache/kafka-tls/%s" $k.tls.caKey | quote }}
{{- end }}
{{- if and $k.tls.existingSecret $k.tls.certKey }}
- name: {{ .prefix }}KAFKA_TLS_CERT_FILE
  value: {{ printf "/etc/distcache/kafka-tls/%s" $k.tls.certKey | quote }}
- name: {{ .prefix }}KAFKA_TLS_KEY_FILE
  value: {{ printf "/etc/distcache/kafka-tls/%s" (required "kafka.tls.keyKey is required with kafka.tls.certKey" $k.tls.keyKey) | quote }}
{{- end }}
{{- end }}
{{- if $k.sasl.mechanism }}
{{- if and (eq $k.sasl.mechanism "PLAIN") (not $k.tls.enabled) (not $k.sasl.allowPlaintext) }}
{{- fail "kafka.sasl.mechanism=PLAIN sends the password in clear text: set kafka.tls.enabled, or kafka.sasl.allowPlaintext on a trusted network" }}
{{- end }}
- name: {{ .prefix }}KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: {{ .prefix }}KAFKA_SASL_USERNAME
  value: {{ required "kafka.sasl.username is required with kafka.sasl.mechanism" $k.sasl.username | quote }}
{{ include "distcache.secretEnv" (dict "name" (printf "%sKAFKA_SASL_PASSWORD" .prefix) "ref" $k.sasl.password "what" "kafka.sasl.password") }}
{{- if $k.sasl.allowPlaintext }}
- name: {{ .prefix }}KAFKA_SASL_ALLOW_PLAINTEXT
  value: "true"
{{- end }}
{{- end }}
{{- end -}}

{{/* distcache.redisEnv: Redis connection for a service whose variables start with .prefix.
Every service reads the same <PREFIX>_REDIS_* variables (libs/svcconfig/redisconf). */}}
{{- define "distcache.redisEnv" -}}
{{- $r := .root.Values.redis -}}
{{- if eq $r.mode "sentinel" }}
- name: {{ .prefix }}REDIS_SENTINEL_MASTER
  value: {{ required "redis.sentinel.masterName is required with redis.mode=sentinel" $r.sentinel.masterName | quote }}
{{- if not $r.sentinel.addrs }}
{{- fail "redis.sentinel.addrs: list the sentinels with redis.mode=sentinel" }}
{{- end }}
- name: {{ .prefix }}REDIS_SENTINEL_ADDRS
  value: {{ join "," $r.sentinel.addrs | quote }}
{{- with $r.sentinel.username }}
- name: {{ $.prefix }}REDIS_SENTINEL_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if $r.sentinel.password.existingSecret }}
{{ include "distcache.secretEnv" (dict "name" (printf "%sREDIS_SENTINEL_PASSWORD" .prefix) "ref" $r.sentinel.password "what" "redis.sentinel.password") }}
{{- end }}
{{- else if eq $r.mode "cluster" }}
{{- if not $r.clusterNodes }}
{{- fail "redis.clusterNodes: list at least one seed node with redis.mode=cluster" }}
{{- end }}
- name: {{ .prefix }}REDIS_ADDRS
  value: {{ join "," $r.clusterNodes | quote }}
- name: {{ .prefix }}REDIS_CLUSTER
  value: "true"
{{- else }}
- name: {{ .prefix }}REDIS_ADDRS
  value: {{ required "redis.primary is required with redis.mode=replicas" $r.primary | quote }}
{{- end }}
{{- if $r.tls }}
- name: {{ .prefix }}REDIS_TLS
  value: "true"
{{- if $r.tlsSecret.existingSecret }}
{{- with $r.tlsSecret.caKey }}
- name: {{ $.prefix }}REDIS_TLS_CA_FILE
  value: {{ printf "/etc/distcache/redis-tls/%s" . | quote }}
{{- end }}
{{- if and $r.tlsSecret.certKey $r.tlsSecret.keyKey }}
- name: {{ .prefix }}REDIS_TLS_CERT_FILE
  value: {{ printf "/etc/distcache/redis-tls/%s" $r.tlsSecret.certKey | quote }}
- name: {{ .prefix }}REDIS_TLS_KEY_FILE
  value: {{ printf "/etc/distcache/redis-tls/%s" $r.tlsSecret.keyKey | quote }}
{{- else if or $r.tlsSecret.certKey $r.tlsSecret.keyKey }}
{{- fail "redis.tlsSecret: set certKey and keyKey together" }}
{{- end }}
{{- end }}
{{- else if $r.tlsSecret.existingSecret }}
{{- fail "redis.tlsSecret needs redis.tls: true" }}
{{- end }}
{{- with $r.username }}
- name: {{ $.prefix }}REDIS_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if $r.password.existingSecret }}
{{ include "distcache.secretEnv" (dict "name" (printf "%sREDIS_PASSWORD" .prefix) "ref" $r.password "what" "redis.password") }}
{{- end }}
{{- end -}}

{{/* distcache.kafkaTLSVolume / Mount: the Kafka TLS Secret, when there is one. */}}
{{- define "distcache.kafkaTLSVolume" -}}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.existingSecret -}}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret | quote }}
    defaultMode: 0440
{{- end }}
{{- end -}}
{{- define "distcache.kafkaTLSMount" -}}
{{- if and .Values.kafka.tls.enabled .Values.kafka.tls.existingSecret -}}
- name: kafka-tls
  mountPath: /etc/distcache/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* distcache.httpProbes: liveness on /healthz, readiness on /readyz, a startup probe that gives
migrations time; (dict "port" "http" ["scheme" "HTTPS"]). */}}
{{- define "distcache.httpProbes" -}}
{{- $scheme := .scheme | default "HTTP" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}, scheme: {{ $scheme }}}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}, scheme: {{ $scheme }}}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}, scheme: {{ $scheme }}}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 3
{{- end -}}

{{/* distcache.temporalEnv: the Temporal connection variables under a prefix; (dict "root" $
"prefix" "CONTROLPLANE_"). */}}
{{- define "distcache.temporalEnv" -}}
{{- $t := .root.Values.temporal -}}
- name: {{ .prefix }}TEMPORAL_HOSTPORT
  value: {{ required "temporal.hostPort is required" $t.hostPort | quote }}
- name: {{ .prefix }}TEMPORAL_NAMESPACE
  value: {{ $t.namespace | quote }}
{{- if $t.tls.enabled }}
- name: {{ .prefix }}TEMPORAL_TLS
  value: "true"
{{- with $t.tls.serverName }}
- name: {{ $.prefix }}TEMPORAL_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- if $t.tls.existingSecret }}
{{- with $t.tls.caKey }}
- name: {{ $.prefix }}TEMPORAL_TLS_CA_FILE
  value: {{ printf "/etc/distcache/temporal-tls/%s" . | quote }}
{{- end }}
{{- if and $t.tls.certKey $t.tls.keyKey }}
- name: {{ $.prefix }}TEMPORAL_TLS_CERT_FILE
  value: {{ printf "/etc/distcache/temporal-tls/%s" $t.tls.certKey | quote }}
- name: {{ $.prefix }}TEMPORAL_TLS_KEY_FILE
  value: {{ printf "/etc/distcache/temporal-tls/%s" $t.tls.keyKey | quote }}
{{- else if or $t.tls.certKey $t.tls.keyKey }}
{{- fail "temporal.tls: set certKey and keyKey together" }}
{{- end }}
{{- end }}
{{- end }}
{{- with $t.apiKey.existingSecret }}
{{- if not $t.tls.enabled }}
{{- fail "temporal.apiKey needs temporal.tls.enabled: the key would travel in clear text" }}
{{- end }}
- name: {{ $.prefix }}TEMPORAL_API_KEY
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: {{ $t.apiKey.key | quote }}}
{{- end }}
{{- end -}}
{{- define "distcache.redisTLSVolume" -}}
{{- if and .Values.redis.tls .Values.redis.tlsSecret.existingSecret -}}
- name: redis-tls
  secret:
    secretName: {{ .Values.redis.tlsSecret.existingSecret | quote }}
    defaultMode: 0440
{{- end }}
{{- end -}}
{{- define "distcache.redisTLSMount" -}}
{{- if and .Values.redis.tls .Values.redis.tlsSecret.existingSecret -}}
- name: redis-tls
  mountPath: /etc/distcache/redis-tls
  readOnly: true
{{- end }}
{{- end -}}
{{- define "distcache.temporalTLSVolume" -}}
{{- if and .Values.temporal.tls.enabled .Values.temporal.tls.existingSecret -}}
- name: temporal-tls
  secret:
    secretName: {{ .Values.temporal.tls.existingSecret | quote }}
    defaultMode: 0440
{{- end }}
{{- end -}}
{{- define "distcache.temporalTLSMount" -}}
{{- if and .Values.temporal.tls.enabled .Values.temporal.tls.existingSecret -}}
- name: temporal-tls
  mountPath: /etc/distcache/temporal-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* distcache.podSpecCommon: what every pod shares; call with (dict "root" $ "c" .Values.<component>). */}}
{{- define "distcache.podSpecCommon" -}}
serviceAccountName: {{ include "distcache.serviceAccountName" .root }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .c.terminationGracePeriodSeconds }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* distcache.affinity: the component's affinity, or by default a preference to spread its
pods over nodes; (dict "root" $ "c" .Values.<component> "component" "core-publisher"). */}}
{{- define "distcache.affinity" -}}
affinity:
{{- if .c.affinity }}
  {{- toYaml .c.affinity | nindent 2 }}
{{- else }}
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "distcache.selectorLabels" (dict "root" .root "component" .component) | nindent 14 }}
{{- end }}
{{- end -}}

{{/* distcache.pdb: a PodDisruptionBudget; (dict "root" $ "c" .Values.<component> "component" "core-publisher"). */}}
{{- define "distcache.pdb" -}}
{{- if .c.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "distcache.componentName" . }}
  labels:
    {{- include "distcache.labels" . | nindent 4 }}
spec:
  {{- if hasKey .c.pdb "minAvailable" }}
  minAvailable: {{ .c.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .c.pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "distcache.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* distcache.npPortsOf: the distinct ports of "host:port" addresses plus extra, as a JSON array;
(dict "addrs" (list "kafka-0:9092") "extra" (list 9093)). */}}
{{- define "distcache.npPortsOf" -}}
{{- $ports := list -}}
{{- range .addrs -}}
{{- $p := regexFind "[0-9]+$" (toString .) -}}
{{- if $p }}{{ $ports = append $ports (atoi $p) }}{{ end -}}
{{- end -}}
{{- range .extra }}{{ $ports = append $ports (int .) }}{{ end -}}
{{- $ports | uniq | toJson -}}
{{- end -}}

{{/* distcache.npEgress: an egress rule to (dict "ports" (list 5432) "to" (list ...peers)); no
"to": any address, on those ports only. */}}
{{- define "distcache.npEgress" -}}
{{- if not .ports }}{{ fail "networkPolicy: a dependency has no port (set networkPolicy.egress.<dependency>.ports)" }}{{ end -}}
- ports:
    {{- range .ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- with .to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* distcache.npDNS: egress to DNS (UDP and TCP 53) at networkPolicy.egress.dns.to (default: any). */}}
{{- define "distcache.npDNS" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
  {{- with .egress.dns.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* distcache.durationSeconds: a Go duration ("15s", "1m30s", "500ms"; values.schema.json's
pattern) in seconds, as a float; call with the string. */}}
{{- define "distcache.durationSeconds" -}}
{{- $unit := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" (toString .) -1 -}}
{{- $u := regexFind "(ns|us|µs|ms|s|m|h)$" . -}}
{{- $total = addf $total (mulf (float64 (trimSuffix $u .)) (get $unit $u)) -}}
{{- end -}}
{{- $total -}}
{{- end -}}
