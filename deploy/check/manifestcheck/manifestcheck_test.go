package manifestcheck

import (
	"errors"
	"strings"
	"testing"
)

// good is a small rendered chart that follows every rule; each case below breaks one.
const good = `
# Source: distcache/templates/serviceaccount.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web, metrics: "true"}
    spec:
      serviceAccountName: app
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
      containers:
        - name: web
          image: registry.example.com/web:1.2.3
          ports:
            - {name: http, containerPort: 8080}
          env:
            - name: DATABASE_URL
              valueFrom:
                secretKeyRef: {name: db, key: url}
          readinessProbe:
            httpGet: {path: /readyz, port: http}
          livenessProbe:
            httpGet: {path: /healthz, port: http}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {memory: 128Mi}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
---
apiVersion: v1
kind: Service
metadata:
  name: app
  labels: {metrics: "true"}
spec:
  selector: {app: web}
  ports:
    - {name: http, port: 8080, targetPort: http}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: app
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: web}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: app
spec:
  selector:
    matchLabels: {metrics: "true"}
  endpoints:
    - {port: http, path: /metrics, interval: 30s, scrapeTimeout: 10s}
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: app
spec:
  groups:
    - name: app
      rules:
        - alert: AppDown
          expr: up{job="app"} == 0
          for: 5m
          labels: {severity: critical}
          annotations: {summary: app is down}
        - record: job:app_requests:rate5m
          expr: sum by (job) (rate(app_requests_total[5m]))
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-dashboard
  labels: {grafana_dashboard: "1"}
data:
  app.json: |-
    {"uid": "app", "title": "app", "panels": [{"id": 1, "type": "timeseries"}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: app
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress, Egress]
  ingress:
    - from: [{podSelector: {}}]
      ports: [{port: http, protocol: TCP}]
  egress:
    - ports: [{port: 5432, protocol: TCP}]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  backoffLimit: 1
  activeDeadlineSeconds: 600
  template:
    metadata:
      labels: {app: migrate}
    spec:
      restartPolicy: Never
      securityContext:
        runAsNonRoot: true
      containers:
        - name: migrate
          image: registry.example.com/web:1.2.3
          command: [/usr/local/bin/distcache-migrate]
          args: [up, core]
          resources:
            requests: {cpu: 50m, memory: 64Mi}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
`

func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		manifest string
		want     error  // nil: passes
		wantText string // part of the message naming what is wrong
	}{
		{name: "good", manifest: good},
		{
			name:     "network policy selecting nothing",
			manifest: strings.Replace(good, "    matchLabels: {app: web}\n  policyTypes", "    matchLabels: {app: api}\n  policyTypes", 1),
			want:     ErrPolicy,
			wantText: "matches no pod template",
		},
		{
			name:     "network policy naming a port the pods lack",
			manifest: strings.Replace(good, "ports: [{port: http, protocol: TCP}]", "ports: [{port: grpc, protocol: TCP}]", 1),
			want:     ErrPolicy,
			wantText: `port "grpc"`,
		},
		{
			name:     "network policy with a misspelt field",
			manifest: strings.Replace(good, "policyTypes: [Ingress, Egress]\n  ingress:", "policyTypes: [Ingress, Egress]\n  ingres:", 1),
			want:     ErrDecode,
			wantText: "ingres",
		},
		{
			name:     "unknown field",
			manifest: strings.Replace(good, "  replicas: 2\n", "  replicas: 2\n  replica: 2\n", 1),
			want:     ErrDecode,
			wantText: `unknown field "spec.replica"`,
		},
		{
			name:     "misspelt nested field",
			manifest: strings.Replace(good, "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true", 1),
			want:     ErrDecode,
			wantText: "readOnlyRootFileSystem",
		},
		{
			name:     "field name in the wrong case",
			manifest: strings.Replace(good, "  replicas: 2\n", "  Replicas: 2\n", 1),
			want:     ErrDecode,
			wantText: "Replicas",
		},
		{
			name:     "duplicate field",
			manifest: strings.Replace(good, "  replicas: 2\n", "  replicas: 2\n  replicas: 3\n", 1),
			want:     ErrDecode,
			wantText: "replicas",
		},
		{
			name:     "wrong type",
			manifest: strings.Replace(good, "  replicas: 2\n", "  replicas: two\n", 1),
			want:     ErrDecode,
			wantText: "Deployment",
		},
		{
			name:     "unknown field in PrometheusRule",
			manifest: strings.Replace(good, "          for: 5m\n", "          for: 5m\n          severity: critical\n", 1),
			want:     ErrDecode,
			wantText: "severity",
		},
		{
			name:     "PrometheusRule rule both alert and record",
			manifest: strings.Replace(good, "        - record: job:app_requests:rate5m\n", "        - record: job:app_requests:rate5m\n          alert: AppBusy\n", 1),
			want:     ErrPrometheusRule,
			wantText: "exactly one of alert and record",
		},
		{
			name:     "PrometheusRule bad duration",
			manifest: strings.Replace(good, "for: 5m", "for: 5 minutes", 1),
			want:     ErrPrometheusRule,
			wantText: "not a Prometheus duration",
		},
		{
			name:     "dashboard ConfigMap that is not JSON",
			manifest: strings.Replace(good, `{"uid": "app",`, `{uid: "app",`, 1),
			want:     ErrDashboard,
			wantText: "app.json",
		},
		{
			name:     "dashboard without panels",
			manifest: strings.Replace(good, `"panels": [{"id": 1, "type": "timeseries"}]`, `"panels": []`, 1),
			want:     ErrDashboard,
			wantText: "want a uid, a title and panels",
		},
		{
			name:     "unknown field in ServiceMonitor",
			manifest: strings.Replace(good, "path: /metrics,", "pathh: /metrics,", 1),
			want:     ErrDecode,
			wantText: "pathh",
		},
		{
			name:     "unknown kind",
			manifest: good + "---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
			want:     ErrUnknownKind,
			wantText: "Widget",
		},
		{
			name:     "image on latest",
			manifest: strings.Replace(good, "web:1.2.3", "web:latest", 1),
			want:     ErrPolicy,
			wantText: "not pinned",
		},
		{
			name:     "no readiness probe",
			manifest: strings.Replace(good, "          readinessProbe:\n            httpGet: {path: /readyz, port: http}\n", "", 1),
			want:     ErrPolicy,
			wantText: "no readinessProbe",
		},
		{
			name:     "probe on an undeclared port",
			manifest: strings.Replace(good, "httpGet: {path: /healthz, port: http}", "httpGet: {path: /healthz, port: metrics}", 1),
			want:     ErrPolicy,
			wantText: `probe port "metrics"`,
		},
		{
			name:     "writable root filesystem",
			manifest: strings.Replace(good, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", 1),
			want:     ErrPolicy,
			wantText: "readOnlyRootFilesystem",
		},
		{
			name:     "capabilities kept",
			manifest: strings.Replace(good, "capabilities: {drop: [ALL]}", "capabilities: {drop: [NET_RAW]}", 1),
			want:     ErrPolicy,
			wantText: "drop ALL",
		},
		{
			name:     "root allowed",
			manifest: strings.Replace(good, "        runAsNonRoot: true\n", "", 1),
			want:     ErrPolicy,
			wantText: "runAsNonRoot",
		},
		{
			name:     "no resource requests",
			manifest: strings.Replace(good, "            requests: {cpu: 100m, memory: 64Mi}\n", "", 1),
			want:     ErrPolicy,
			wantText: "resource requests",
		},
		{
			name:     "env number in exponent notation",
			manifest: strings.Replace(good, "          env:\n", "          env:\n            - name: INDEX_CACHE_ENTRIES\n              value: \"1e+06\"\n", 1),
			want:     ErrPolicy,
			wantText: `env INDEX_CACHE_ENTRIES is "1e+06"`,
		},
		{
			name:     "Service selects nothing",
			manifest: strings.Replace(good, "  selector: {app: web}\n", "  selector: {app: wbe}\n", 1),
			want:     ErrPolicy,
			wantText: "matches no pod template",
		},
		{
			name:     "Service targets an undeclared port",
			manifest: strings.Replace(good, "targetPort: http}", "targetPort: web}", 1),
			want:     ErrPolicy,
			wantText: `targets "web"`,
		},
		{
			name:     "PDB selects nothing",
			manifest: strings.Replace(good, "  minAvailable: 1\n  selector:\n    matchLabels: {app: web}", "  minAvailable: 1\n  selector:\n    matchLabels: {app: db}", 1),
			want:     ErrPolicy,
			wantText: "PodDisruptionBudget app",
		},
		{
			name:     "ServiceMonitor port missing on the Service",
			manifest: strings.Replace(good, "- {port: http, path", "- {port: metrics, path", 1),
			want:     ErrServiceMonitor,
			wantText: `no port named "metrics"`,
		},
		{
			name:     "ServiceMonitor bad interval",
			manifest: strings.Replace(good, "interval: 30s", "interval: 30 seconds", 1),
			want:     ErrServiceMonitor,
			wantText: "interval",
		},
		{
			name:     "duplicate object",
			manifest: good + "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: app}\n",
			want:     ErrPolicy,
			wantText: "same kind and name",
		},
		{
			name:     "Job without a deadline",
			manifest: strings.Replace(good, "  activeDeadlineSeconds: 600\n", "", 1),
			want:     ErrPolicy,
			wantText: "no activeDeadlineSeconds",
		},
		{
			name:     "Job without a backoff limit",
			manifest: strings.Replace(good, "  backoffLimit: 1\n", "", 1),
			want:     ErrPolicy,
			wantText: "no backoffLimit",
		},
		{
			name:     "Job restarting in place",
			manifest: strings.Replace(good, "restartPolicy: Never", "restartPolicy: Always", 1),
			want:     ErrPolicy,
			wantText: `restartPolicy "Always"`,
		},
		{
			name:     "hook that is never replaced",
			manifest: strings.Replace(good, "    helm.sh/hook-delete-policy: before-hook-creation\n", "", 1),
			want:     ErrPolicy,
			wantText: "before-hook-creation",
		},
		{
			name:     "hook deleted only on success",
			manifest: strings.Replace(good, "hook-delete-policy: before-hook-creation", "hook-delete-policy: hook-succeeded", 1),
			want:     ErrPolicy,
			wantText: "Job migrate",
		},
		{
			name:     "empty stream",
			manifest: "---\n# nothing\n",
			want:     ErrDecode,
			wantText: "no manifests",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.manifest == good && tt.want != nil {
				t.Fatal("test case does not change the manifest")
			}
			err := Check(strings.NewReader(tt.manifest))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Check() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Check() = %v, want an error wrapping %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Check() = %q, want it to mention %q", err, tt.wantText)
			}
		})
	}
}

func TestDecodeTypes(t *testing.T) {
	t.Parallel()
	objs, err := Decode(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.GVK.Kind+"/"+o.Name)
	}
	want := "ServiceAccount/app Deployment/app Service/app PodDisruptionBudget/app ServiceMonitor/app PrometheusRule/app ConfigMap/app-dashboard NetworkPolicy/default-deny NetworkPolicy/app Job/migrate"
	if strings.Join(got, " ") != want {
		t.Errorf("decoded %v, want %s", got, want)
	}
}
