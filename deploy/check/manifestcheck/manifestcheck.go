// Package manifestcheck validates rendered Kubernetes manifests (helm template output) offline:
// every document is decoded strictly into its Kubernetes API type (k8s.io/api), so an unknown,
// misspelt, duplicated or wrongly typed field fails, the way the API server would reject it;
// a Prometheus Operator ServiceMonitor or PrometheusRule, whose Go types are not vendored, is
// checked against the structure of monitoring.coreos.com/v1 the same way. Then the rules distcache's chart
// promises are checked across documents: pinned images, probes, resources, a non-root
// read-only security context, no environment value in exponent notation, Services and
// PodDisruptionBudgets that select pods, ServiceMonitors that select Services with the named
// port, PrometheusRules whose rules are each one alert or one recording rule with an
// expression, and Grafana dashboard ConfigMaps whose every value is a dashboard's JSON.
package manifestcheck

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Sentinel errors; every problem wraps one of them (errors.Is).
var (
	ErrDecode         = errors.New("manifest does not decode strictly")
	ErrUnknownKind    = errors.New("unknown kind")
	ErrPolicy         = errors.New("chart rule broken")
	ErrServiceMonitor = errors.New("invalid ServiceMonitor")
	ErrPrometheusRule = errors.New("invalid PrometheusRule")
	ErrDashboard      = errors.New("invalid Grafana dashboard ConfigMap")
)

// Object is one decoded document.
type Object struct {
	Doc  int // 1-based position in the stream
	GVK  schema.GroupVersionKind
	Name string
	Obj  any // a typed k8s.io/api object, or *ServiceMonitor
}

func (o Object) String() string { return fmt.Sprintf("%s %s (document %d)", o.GVK.Kind, o.Name, o.Doc) }

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme, batchv1.AddToScheme,
		networkingv1.AddToScheme, rbacv1.AddToScheme, autoscalingv2.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err) // static registration of k8s.io/api types cannot fail
		}
	}
	return s
}()

// ServiceMonitorGVK is the Prometheus Operator's ServiceMonitor.
var ServiceMonitorGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}

// PrometheusRuleGVK is the Prometheus Operator's PrometheusRule.
var PrometheusRuleGVK = schema.GroupVersionKind{Group: "monitoring.coreos.com", Version: "v1", Kind: "PrometheusRule"}

// DashboardLabel is the label the Grafana sidecar loads dashboard ConfigMaps by (the chart's
// default monitoring.grafanaDashboards.label).
const DashboardLabel = "grafana_dashboard"

// Decode reads a YAML stream of manifests and decodes every non-empty document strictly.
func Decode(r io.Reader) ([]Object, error) {
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var objs []Object
	var errs []error
	for doc := 1; ; doc++ {
		raw, err := yr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return objs, fmt.Errorf("%w: read document %d: %v", ErrDecode, doc, err)
		}
		if isEmptyDoc(raw) {
			doc--
			continue
		}
		o, err := decodeOne(doc, raw)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs = append(objs, o)
	}
	return objs, errors.Join(errs...)
}

func isEmptyDoc(raw []byte) bool {
	for _, line := range bytes.Split(raw, []byte("\n")) {
		l := bytes.TrimSpace(line)
		if len(l) > 0 && l[0] != '#' && !bytes.Equal(l, []byte("---")) {
			return false
		}
	}
	return true
}

func decodeOne(doc int, raw []byte) (Object, error) {
	// YAMLToJSONStrict rejects duplicate keys; the JSON decoder below rejects unknown fields
	// and, like the API server, matches field names case-sensitively.
	js, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return Object{}, fmt.Errorf("%w: document %d: %v", ErrDecode, doc, err)
	}
	var tm metav1.TypeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return Object{}, fmt.Errorf("%w: document %d: %v", ErrDecode, doc, err)
	}
	gv, err := schema.ParseGroupVersion(tm.APIVersion)
	if err != nil || tm.Kind == "" || tm.APIVersion == "" {
		return Object{}, fmt.Errorf("%w: document %d: apiVersion %q kind %q", ErrDecode, doc, tm.APIVersion, tm.Kind)
	}
	gvk := gv.WithKind(tm.Kind)
	var obj any
	switch gvk {
	case ServiceMonitorGVK:
		obj = &ServiceMonitor{}
	case PrometheusRuleGVK:
		obj = &PrometheusRule{}
	default:
		ro, err := scheme.New(gvk)
		if err != nil {
			return Object{}, fmt.Errorf("%w: document %d: %s", ErrUnknownKind, doc, gvk)
		}
		obj = ro
	}
	strict, err := kjson.UnmarshalStrict(js, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return Object{}, fmt.Errorf("%w: document %d (%s): %v", ErrDecode, doc, gvk.Kind, err)
	}
	if len(strict) > 0 {
		return Object{}, fmt.Errorf("%w: document %d (%s): %v", ErrDecode, doc, gvk.Kind, errors.Join(strict...))
	}
	meta, ok := obj.(metav1.Object)
	if !ok {
		return Object{}, fmt.Errorf("%w: document %d: %s has no metadata", ErrDecode, doc, gvk)
	}
	return Object{Doc: doc, GVK: gvk, Name: meta.GetName(), Obj: obj}, nil
}

// Check decodes the stream and applies every rule; it returns all problems joined, or nil.
func Check(r io.Reader) error {
	objs, err := Decode(r)
	if err != nil {
		return err
	}
	if len(objs) == 0 {
		return fmt.Errorf("%w: no manifests", ErrDecode)
	}
	return CheckObjects(objs)
}

// workload is a pod template with the name of the object that owns it.
type workload struct {
	obj      Object
	template corev1.PodTemplateSpec
	// long-running workloads need probes; Jobs do not.
	longRunning bool
}

// CheckObjects applies the cross-document rules to decoded objects.
func CheckObjects(objs []Object) error {
	var errs []error
	fail := func(o Object, sentinel error, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %w: %s", o, sentinel, fmt.Sprintf(format, args...)))
	}

	seen := map[string]Object{}
	var workloads []workload
	var services []*corev1.Service
	var serviceObjs []Object
	for _, o := range objs {
		key := o.GVK.Kind + "/" + o.Name
		if prev, dup := seen[key]; dup {
			fail(o, ErrPolicy, "same kind and name as %s", prev)
		}
		seen[key] = o
		if msgs := validation.IsDNS1123Subdomain(o.Name); len(msgs) > 0 {
			fail(o, ErrPolicy, "name %q: %s", o.Name, strings.Join(msgs, "; "))
		}
		if meta, ok := o.Obj.(metav1.Object); ok {
			checkHook(o, meta.GetAnnotations(), fail)
		}
		switch v := o.Obj.(type) {
		case *appsv1.Deployment:
			workloads = append(workloads, workload{o, v.Spec.Template, true})
			checkSelector(o, v.Spec.Selector, v.Spec.Template.Labels, fail)
		case *appsv1.StatefulSet:
			workloads = append(workloads, workload{o, v.Spec.Template, true})
			checkSelector(o, v.Spec.Selector, v.Spec.Template.Labels, fail)
		case *appsv1.DaemonSet:
			workloads = append(workloads, workload{o, v.Spec.Template, true})
			checkSelector(o, v.Spec.Selector, v.Spec.Template.Labels, fail)
		case *batchv1.Job:
			workloads = append(workloads, workload{o, v.Spec.Template, false})
			checkJob(o, v, fail)
		case *corev1.Service:
			services = append(services, v)
			serviceObjs = append(serviceObjs, o)
		}
	}

	for _, w := range workloads {
		checkPod(w, fail)
	}

	// Services select pods and target ports those pods declare.
	for i, svc := range services {
		o := serviceObjs[i]
		if len(svc.Spec.Selector) == 0 {
			if svc.Spec.Type != corev1.ServiceTypeExternalName {
				fail(o, ErrPolicy, "no selector")
			}
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		matched := matchingPods(workloads, sel)
		if len(matched) == 0 {
			fail(o, ErrPolicy, "selector %s matches no pod template", sel)
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.String() == "" || p.TargetPort.IntValue() != 0 {
				continue
			}
			for _, w := range matched {
				if !hasNamedPort(w.template.Spec, p.TargetPort.StrVal) {
					fail(o, ErrPolicy, "port %s targets %q, which %s does not declare", p.Name, p.TargetPort.StrVal, w.obj)
				}
			}
		}
	}

	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *policyv1.PodDisruptionBudget:
			if (v.Spec.MinAvailable == nil) == (v.Spec.MaxUnavailable == nil) {
				fail(o, ErrPolicy, "set exactly one of minAvailable and maxUnavailable")
			}
			sel, err := metav1.LabelSelectorAsSelector(v.Spec.Selector)
			if err != nil || v.Spec.Selector == nil || sel.Empty() {
				fail(o, ErrPolicy, "needs a non-empty selector")
				continue
			}
			if len(matchingPods(workloads, sel)) == 0 {
				fail(o, ErrPolicy, "selector %s matches no pod template", sel)
			}
		case *ServiceMonitor:
			checkServiceMonitor(o, v, services, fail)
		case *PrometheusRule:
			checkPrometheusRule(o, v, fail)
		case *corev1.ConfigMap:
			if _, ok := v.Labels[DashboardLabel]; ok {
				checkDashboards(o, v, fail)
			}
		case *networkingv1.NetworkPolicy:
			checkNetworkPolicy(o, v, workloads, fail)
		}
	}
	return errors.Join(errs...)
}

// checkJob: a Job is bounded in time and in retries (a hung or failing migration would otherwise
// hold a Helm install or upgrade for as long as Helm waits, or retry six times with back-off),
// and its pods never restart in place.
func checkJob(o Object, j *batchv1.Job, fail func(Object, error, string, ...any)) {
	if j.Spec.ActiveDeadlineSeconds == nil {
		fail(o, ErrPolicy, "no activeDeadlineSeconds: a hung Job runs (and holds a Helm hook) forever")
	}
	if j.Spec.BackoffLimit == nil {
		fail(o, ErrPolicy, "no backoffLimit: a failing Job is retried six times by default")
	}
	if rp := j.Spec.Template.Spec.RestartPolicy; rp != corev1.RestartPolicyNever && rp != corev1.RestartPolicyOnFailure {
		fail(o, ErrPolicy, "restartPolicy %q, want Never or OnFailure", rp)
	}
}

// checkHook: a Helm hook resource (helm.sh/hook) outlives its release's upgrade: without
// helm.sh/hook-delete-policy before-hook-creation the next install or upgrade fails, the object
// being there already.
func checkHook(o Object, annotations map[string]string, fail func(Object, error, string, ...any)) {
	if annotations["helm.sh/hook"] == "" {
		return
	}
	policies := strings.Split(annotations["helm.sh/hook-delete-policy"], ",")
	for i := range policies {
		policies[i] = strings.TrimSpace(policies[i])
	}
	if !slices.Contains(policies, "before-hook-creation") {
		fail(o, ErrPolicy, "Helm hook without helm.sh/hook-delete-policy before-hook-creation: the next upgrade would find it and fail")
	}
}

// checkNetworkPolicy: a policy selects pods of the chart (an empty selector selects them all),
// and every port it names in an ingress rule is a port those pods declare (a misspelt name
// would silently allow nothing).
func checkNetworkPolicy(o Object, np *networkingv1.NetworkPolicy, ws []workload, fail func(Object, error, string, ...any)) {
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		fail(o, ErrPolicy, "podSelector: %v", err)
		return
	}
	matched := matchingPods(ws, sel)
	if len(matched) == 0 {
		fail(o, ErrPolicy, "podSelector %s matches no pod template", sel)
		return
	}
	for i, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port == nil || p.Port.IntValue() != 0 {
				continue
			}
			for _, w := range matched {
				if !hasNamedPort(w.template.Spec, p.Port.StrVal) {
					fail(o, ErrPolicy, "ingress rule %d: port %q is not a port of %s", i, p.Port.StrVal, w.obj)
				}
			}
		}
	}
}

func checkSelector(o Object, sel *metav1.LabelSelector, podLabels map[string]string, fail func(Object, error, string, ...any)) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || sel == nil || s.Empty() {
		fail(o, ErrPolicy, "needs a non-empty selector")
		return
	}
	if !s.Matches(labels.Set(podLabels)) {
		fail(o, ErrPolicy, "selector %s does not match its own pod template labels", s)
	}
}

func matchingPods(ws []workload, sel labels.Selector) []workload {
	var out []workload
	for _, w := range ws {
		if sel.Matches(labels.Set(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func hasNamedPort(spec corev1.PodSpec, name string) bool {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

func checkPod(w workload, fail func(Object, error, string, ...any)) {
	o, spec := w.obj, w.template.Spec
	psc := spec.SecurityContext
	podNonRoot := psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	if psc != nil && psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		fail(o, ErrPolicy, "pod runAsUser 0")
	}
	if len(spec.Containers) == 0 {
		fail(o, ErrPolicy, "no containers")
	}
	all := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for i, c := range all {
		isInit := i < len(spec.InitContainers)
		where := "container " + c.Name
		if err := checkImage(c.Image); err != nil {
			fail(o, ErrPolicy, "%s: %v", where, err)
		}
		if sc := c.SecurityContext; sc == nil {
			fail(o, ErrPolicy, "%s: no securityContext", where)
		} else {
			checkContainerSecurity(o, where, sc, podNonRoot, fail)
		}
		if len(c.Resources.Requests) == 0 {
			fail(o, ErrPolicy, "%s: no resource requests", where)
		}
		for _, e := range c.Env {
			if exponentNumber.MatchString(e.Value) {
				fail(o, ErrPolicy, "%s: env %s is %q, a number in exponent notation that no service parses as an integer (helm printed a float: pipe the value through int64)", where, e.Name, e.Value)
			}
		}
		if !w.longRunning || isInit {
			continue
		}
		if c.ReadinessProbe == nil {
			fail(o, ErrPolicy, "%s: no readinessProbe", where)
		}
		if c.LivenessProbe == nil {
			fail(o, ErrPolicy, "%s: no livenessProbe", where)
		}
		for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
			if p == nil || p.HTTPGet == nil {
				continue
			}
			if port := p.HTTPGet.Port; port.IntValue() == 0 && !hasNamedPort(corev1.PodSpec{Containers: []corev1.Container{c}}, port.StrVal) {
				fail(o, ErrPolicy, "%s: probe port %q is not a port of the container", where, port.StrVal)
			}
		}
	}
}

// exponentNumber matches what Helm renders for a large integer value that it decoded as a float
// and printed without int64 ("1e+06" for 1000000).
var exponentNumber = regexp.MustCompile(`^[+-]?[0-9]+(\.[0-9]+)?[eE][+-]?[0-9]+$`)

func checkContainerSecurity(o Object, where string, sc *corev1.SecurityContext, podNonRoot bool, fail func(Object, error, string, ...any)) {
	if !podNonRoot && (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) {
		fail(o, ErrPolicy, "%s: runAsNonRoot is not true (pod or container)", where)
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		fail(o, ErrPolicy, "%s: runAsUser 0", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		fail(o, ErrPolicy, "%s: readOnlyRootFilesystem is not true", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		fail(o, ErrPolicy, "%s: allowPrivilegeEscalation is not false", where)
	}
	if sc.Privileged != nil && *sc.Privileged {
		fail(o, ErrPolicy, "%s: privileged", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, corev1.Capability("ALL")) {
		fail(o, ErrPolicy, "%s: capabilities do not drop ALL", where)
	} else if len(sc.Capabilities.Add) > 0 {
		fail(o, ErrPolicy, "%s: adds capabilities %v", where, sc.Capabilities.Add)
	}
}

func checkImage(ref string) error {
	if ref == "" {
		return errors.New("no image")
	}
	name, digest, ok := strings.Cut(ref, "@")
	if ok {
		if !strings.HasPrefix(digest, "sha256:") {
			return fmt.Errorf("image %q: malformed digest", ref)
		}
		return nil
	}
	last := name[strings.LastIndexByte(name, '/')+1:]
	_, tag, hasTag := strings.Cut(last, ":")
	if !hasTag || tag == "" || tag == "latest" {
		return fmt.Errorf("image %q is not pinned to a tag or digest", ref)
	}
	return nil
}

// ServiceMonitor mirrors the part of monitoring.coreos.com/v1 ServiceMonitor that a chart
// sets. Fields outside it fail strict decoding, which is the point: a misspelt field would be
// silently dropped by the API server's structural pruning.
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ServiceMonitorSpec `json:"spec"`
}

// ServiceMonitorSpec is the checked subset of the ServiceMonitor spec.
type ServiceMonitorSpec struct {
	JobLabel          string               `json:"jobLabel,omitempty"`
	TargetLabels      []string             `json:"targetLabels,omitempty"`
	PodTargetLabels   []string             `json:"podTargetLabels,omitempty"`
	Endpoints         []Endpoint           `json:"endpoints"`
	Selector          metav1.LabelSelector `json:"selector"`
	NamespaceSelector *NamespaceSelector   `json:"namespaceSelector,omitempty"`
	SampleLimit       *uint64              `json:"sampleLimit,omitempty"`
}

// NamespaceSelector selects the namespaces of the Services.
type NamespaceSelector struct {
	Any        bool     `json:"any,omitempty"`
	MatchNames []string `json:"matchNames,omitempty"`
}

// Endpoint is one scraped port.
type Endpoint struct {
	Port              string              `json:"port,omitempty"`
	TargetPort        *string             `json:"targetPort,omitempty"`
	Path              string              `json:"path,omitempty"`
	Scheme            string              `json:"scheme,omitempty"`
	Params            map[string][]string `json:"params,omitempty"`
	Interval          string              `json:"interval,omitempty"`
	ScrapeTimeout     string              `json:"scrapeTimeout,omitempty"`
	HonorLabels       bool                `json:"honorLabels,omitempty"`
	HonorTimestamps   *bool               `json:"honorTimestamps,omitempty"`
	Relabelings       []map[string]any    `json:"relabelings,omitempty"`
	MetricRelabelings []map[string]any    `json:"metricRelabelings,omitempty"`
}

// promDuration is the Prometheus Operator's Duration pattern.
var promDuration = regexp.MustCompile(`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`)

func checkServiceMonitor(o Object, sm *ServiceMonitor, services []*corev1.Service, fail func(Object, error, string, ...any)) {
	if len(sm.Spec.Endpoints) == 0 {
		fail(o, ErrServiceMonitor, "no endpoints")
	}
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || sel.Empty() {
		fail(o, ErrServiceMonitor, "needs a non-empty selector")
		return
	}
	var matched []*corev1.Service
	for _, s := range services {
		if sel.Matches(labels.Set(s.Labels)) {
			matched = append(matched, s)
		}
	}
	if len(matched) == 0 {
		fail(o, ErrServiceMonitor, "selector %s matches no Service", sel)
	}
	for i, ep := range sm.Spec.Endpoints {
		if ep.Port == "" && ep.TargetPort == nil {
			fail(o, ErrServiceMonitor, "endpoint %d: set port (a Service port name) or targetPort", i)
		}
		if ep.Scheme != "" && ep.Scheme != "http" && ep.Scheme != "https" {
			fail(o, ErrServiceMonitor, "endpoint %d: scheme %q", i, ep.Scheme)
		}
		if ep.Path != "" && !strings.HasPrefix(ep.Path, "/") {
			fail(o, ErrServiceMonitor, "endpoint %d: path %q does not start with /", i, ep.Path)
		}
		for field, d := range map[string]string{"interval": ep.Interval, "scrapeTimeout": ep.ScrapeTimeout} {
			if d != "" && !promDuration.MatchString(d) {
				fail(o, ErrServiceMonitor, "endpoint %d: %s %q is not a Prometheus duration", i, field, d)
			}
		}
		if ep.Port == "" {
			continue
		}
		for _, s := range matched {
			if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
				fail(o, ErrServiceMonitor, "endpoint %d: Service %s has no port named %q", i, s.Name, ep.Port)
			}
		}
	}
}

// PrometheusRule mirrors monitoring.coreos.com/v1 PrometheusRule (the fields Prometheus's own
// rule files have); anything else fails strict decoding.
type PrometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              PrometheusRuleSpec `json:"spec"`
}

// PrometheusRuleSpec holds the rule groups.
type PrometheusRuleSpec struct {
	Groups []RuleGroup `json:"groups"`
}

// RuleGroup is one group of rules.
type RuleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Limit    *int   `json:"limit,omitempty"`
	Rules    []Rule `json:"rules"`
}

// Rule is an alerting or a recording rule.
type Rule struct {
	Record        string            `json:"record,omitempty"`
	Alert         string            `json:"alert,omitempty"`
	Expr          string            `json:"expr"`
	For           string            `json:"for,omitempty"`
	KeepFiringFor string            `json:"keep_firing_for,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

func checkPrometheusRule(o Object, pr *PrometheusRule, fail func(Object, error, string, ...any)) {
	if len(pr.Spec.Groups) == 0 {
		fail(o, ErrPrometheusRule, "no groups")
	}
	names := map[string]bool{}
	for _, g := range pr.Spec.Groups {
		if g.Name == "" || names[g.Name] {
			fail(o, ErrPrometheusRule, "group name %q empty or repeated", g.Name)
		}
		names[g.Name] = true
		if len(g.Rules) == 0 {
			fail(o, ErrPrometheusRule, "group %s has no rules", g.Name)
		}
		for i, r := range g.Rules {
			if (r.Alert == "") == (r.Record == "") {
				fail(o, ErrPrometheusRule, "group %s rule %d: set exactly one of alert and record", g.Name, i)
			}
			if strings.TrimSpace(r.Expr) == "" {
				fail(o, ErrPrometheusRule, "group %s rule %d (%s%s): no expr", g.Name, i, r.Alert, r.Record)
			}
			for field, d := range map[string]string{"for": r.For, "keep_firing_for": r.KeepFiringFor} {
				if d != "" && !promDuration.MatchString(d) {
					fail(o, ErrPrometheusRule, "group %s rule %d: %s %q is not a Prometheus duration", g.Name, i, field, d)
				}
			}
		}
	}
}

// checkDashboards: every value of a dashboard ConfigMap is a dashboard (JSON with a uid, a
// title and panels), under a key ending in .json, and no two share a uid.
func checkDashboards(o Object, cm *corev1.ConfigMap, fail func(Object, error, string, ...any)) {
	if len(cm.Data) == 0 {
		fail(o, ErrDashboard, "no data")
	}
	for key, v := range cm.Data {
		if !strings.HasSuffix(key, ".json") {
			fail(o, ErrDashboard, "key %q does not end in .json", key)
		}
		var d struct {
			UID    string           `json:"uid"`
			Title  string           `json:"title"`
			Panels []map[string]any `json:"panels"`
		}
		if err := json.Unmarshal([]byte(v), &d); err != nil {
			fail(o, ErrDashboard, "%s: %v", key, err)
			continue
		}
		if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
			fail(o, ErrDashboard, "%s: want a uid, a title and panels", key)
		}
	}
}
