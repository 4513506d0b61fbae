package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
	"github.com/distcache/distcache/services/control-plane/internal/api"
	"github.com/distcache/distcache/services/control-plane/internal/auth"
	"github.com/distcache/distcache/services/control-plane/internal/cpmetrics"
	"github.com/distcache/distcache/services/control-plane/internal/modelcatalog"
	"github.com/distcache/distcache/services/control-plane/internal/server"
	"github.com/distcache/distcache/workflows"
)

const (
	goodToken  = "test-token-0123456789abcdef"
	otherToken = "second-token-0123456789abcd"
)

// testModels are the models the test servers know.
var testModels = modelcatalog.Static{"users": {"id", "email", "name", "status", "org_id"}, "orgs": {"id", "slug"}}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type stack struct {
	conn    *grpc.ClientConn
	client  pb.ControlPlaneClient
	baseURL string
	reg     *memRegistry
	tc      *fakeTemporal
	logs    *syncBuffer
	ready   func(context.Context) error
	metrics *cpmetrics.Metrics
	// temporalDown makes api.Settings.TemporalErr and the server's Degraded report Temporal down.
	temporalDown atomic.Bool
}

// stackSetup changes what startStack serves (tests of the server's own guards).
type stackSetup struct {
	// wrap replaces the API service the servers serve, given the real one.
	wrap func(pb.ControlPlaneServer) pb.ControlPlaneServer
	// register adds test-only services to the gRPC server.
	register func(*grpc.Server)
	// gatewayTarget, when set, is the address the gateway calls instead of the gRPC server's.
	gatewayTarget string
}

// startStack starts the gRPC and HTTP servers on free loopback ports, as run does, with an
// in-memory registry and a fake Temporal client.
func startStack(t testing.TB, setups ...func(*stackSetup)) *stack {
	t.Helper()
	var setup stackSetup
	for _, f := range setups {
		f(&setup)
	}
	st := &stack{reg: newMemRegistry(), tc: newFakeTemporal(), logs: &syncBuffer{}}
	log := slog.New(slog.NewJSONHandler(st.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tErr := func() error {
		if st.temporalDown.Load() {
			return errors.New("temporal is unavailable: connection refused")
		}
		return nil
	}
	svc := api.New(st.reg, st.tc, testModels, api.Settings{Namespace: "default", UIURL: "http://ui.test", TemporalErr: tErr}, log)
	var service pb.ControlPlaneServer = svc
	if setup.wrap != nil {
		service = setup.wrap(svc)
	}
	st.metrics = cpmetrics.New()
	metrics := st.metrics
	opts := server.Options{
		Service: service, Tokens: auth.NewTokens([]string{goodToken, otherToken}), Logger: log, Metrics: metrics,
		Gatherer: metrics.Registry, OpenAPI: pb.OpenAPI,
		Ready: map[string]func(context.Context) error{"redis": func(ctx context.Context) error {
			if st.ready != nil {
				return st.ready(ctx)
			}
			return nil
		}},
		Degraded: map[string]func(context.Context) error{"temporal": func(context.Context) error { return tErr() }},
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := server.NewGRPC(opts)
	if setup.register != nil {
		setup.register(gs)
	}
	target := gl.Addr().String()
	if setup.gatewayTarget != "" {
		target = setup.gatewayTarget
	}
	ctx, cancel := context.WithCancel(context.Background())
	h, err := server.NewHTTP(ctx, opts, target)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = gs.Serve(gl) }()
	go func() { _ = hs.Serve(hl) }()
	conn, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		_ = hs.Close()
		gs.Stop()
		cancel()
	})
	st.conn = conn
	st.client = pb.NewControlPlaneClient(conn)
	st.baseURL = "http://" + hl.Addr().String()
	return st
}

// withToken returns a context carrying token as the authorization metadata ("" for none).
func withToken(token string) context.Context {
	ctx := context.Background()
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", token)
}

func (st *stack) do(t testing.TB, method, path, authz string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, st.baseURL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func validCreate() *pb.CreateProjectionRequest {
	return &pb.CreateProjectionRequest{Projection: &pb.ProjectionDefinition{
		Name: "users_by_email", Model: "users", KeyTemplate: "{email}", LowercaseKey: true,
		Fields: []string{"id", "email"}, Filter: &pb.Filter{Field: "status", Op: "eq", Values: []string{"active"}},
	}}
}

func TestGRPCAuth(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	tests := []struct {
		name  string
		authz string
		want  codes.Code
	}{
		{name: "missing", authz: "", want: codes.Unauthenticated},
		{name: "wrong token", authz: "Bearer wrong-token-0123456789abcdef", want: codes.Unauthenticated},
		{name: "token without scheme", authz: goodToken, want: codes.Unauthenticated},
		{name: "basic scheme", authz: "Basic " + goodToken, want: codes.Unauthenticated},
		{name: "prefix of token", authz: "Bearer " + goodToken[:len(goodToken)-1], want: codes.Unauthenticated},
		{name: "good token", authz: "Bearer " + goodToken, want: codes.NotFound},
		{name: "second token, lowercase scheme", authz: "bearer " + otherToken, want: codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := st.client.GetProjection(withToken(tt.authz), &pb.GetProjectionRequest{Name: "nope"})
			if got := status.Code(err); got != tt.want {
				t.Errorf("GetProjection with %s: code %v (%v), want %v", tt.name, got, err, tt.want)
			}
		})
	}
	// An unauthenticated call never reaches the service: nothing was started or created.
	_, err := st.client.CreateProjection(withToken(""), validCreate())
	if status.Code(err) != codes.Unauthenticated || st.reg.has("users_by_email") || len(st.tc.startedIDs()) != 0 {
		t.Errorf("unauthenticated create: %v, registered %v, started %v", err, st.reg.has("users_by_email"), st.tc.startedIDs())
	}
}

func TestRESTAuth(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	body, _ := json.Marshal(map[string]any{"name": "p", "model": "users", "key_template": "{id}", "fields": []string{"id"}})
	tests := []struct {
		name   string
		method string
		path   string
		authz  string
		body   []byte
		want   int
	}{
		{name: "get, missing", method: "GET", path: "/v1/projections/nope", want: 401},
		{name: "get, wrong", method: "GET", path: "/v1/projections/nope", authz: "Bearer nope-nope-nope-nope-nope", want: 401},
		{name: "list, no scheme", method: "GET", path: "/v1/projections", authz: goodToken, want: 401},
		{name: "create, missing", method: "POST", path: "/v1/projections", body: body, want: 401},
		{name: "status, missing", method: "GET", path: "/v1/projections/p/status", want: 401},
		{name: "get, good", method: "GET", path: "/v1/projections/nope", authz: "Bearer " + goodToken, want: 404},
		{name: "list, good", method: "GET", path: "/v1/projections", authz: "Bearer " + otherToken, want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, hdr, b := st.do(t, tt.method, tt.path, tt.authz, tt.body)
			if code != tt.want {
				t.Fatalf("%s %s: status %d (%s), want %d", tt.method, tt.path, code, b, tt.want)
			}
			if code == 401 {
				var e struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				}
				if err := json.Unmarshal(b, &e); err != nil || e.Code != int(codes.Unauthenticated) || e.Message == "" {
					t.Errorf("401 body = %s, want JSON with code 16 and a message", b)
				}
				if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate = %q, want Bearer", hdr.Get("WWW-Authenticate"))
				}
			}
		})
	}
	if st.reg.has("p") {
		t.Error("an unauthenticated REST create registered the projection")
	}
	// Tokens never reach the logs, whether accepted or refused.
	if logs := st.logs.String(); strings.Contains(logs, goodToken) || strings.Contains(logs, otherToken) || strings.Contains(logs, "nope-nope") {
		t.Errorf("a token appears in the logs:\n%s", logs)
	}
}

// fieldViolations returns the fields of the BadRequest detail of err.
func fieldViolations(err error) []string {
	st, _ := status.FromError(err)
	var out []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, v.GetField())
			}
		}
	}
	return out
}

func TestGRPCValidation(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	ctx := func() context.Context { return withToken("Bearer " + goodToken) }
	mutate := func(f func(*pb.ProjectionDefinition)) *pb.CreateProjectionRequest {
		r := validCreate()
		f(r.Projection)
		return r
	}
	tests := []struct {
		name string
		req  *pb.CreateProjectionRequest
		want []string
	}{
		{name: "no projection", req: &pb.CreateProjectionRequest{}, want: []string{"projection"}},
		{name: "bad name", req: mutate(func(d *pb.ProjectionDefinition) { d.Name = "Bad:Name" }), want: []string{"projection.name"}},
		{name: "unknown model", req: mutate(func(d *pb.ProjectionDefinition) { d.Model = "invoices" }), want: []string{"projection.model"}},
		{name: "template syntax", req: mutate(func(d *pb.ProjectionDefinition) { d.KeyTemplate = "{email" }), want: []string{"projection.key_template"}},
		{name: "template field not in model", req: mutate(func(d *pb.ProjectionDefinition) { d.KeyTemplate = "{org_id}:{slug}" }), want: []string{"projection.key_template"}},
		{name: "field not in model", req: mutate(func(d *pb.ProjectionDefinition) { d.Fields = []string{"id", "phone"} }), want: []string{"projection.fields[1]"}},
		{name: "duplicate field", req: mutate(func(d *pb.ProjectionDefinition) { d.Fields = []string{"id", "id"} }), want: []string{"projection.fields[1]"}},
		{name: "no fields", req: mutate(func(d *pb.ProjectionDefinition) { d.Fields = nil }), want: []string{"projection.fields"}},
		{name: "filter op", req: mutate(func(d *pb.ProjectionDefinition) { d.Filter.Op = "like" }), want: []string{"projection.filter.op"}},
		{name: "filter field not in model", req: mutate(func(d *pb.ProjectionDefinition) { d.Filter.Field = "deleted" }), want: []string{"projection.filter.field"}},
		{name: "several", req: mutate(func(d *pb.ProjectionDefinition) { d.Name = ""; d.Fields = []string{"x-y"} }), want: []string{"projection.name", "projection.fields[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := st.client.CreateProjection(ctx(), tt.req)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("code = %v (%v), want InvalidArgument", status.Code(err), err)
			}
			if got := fieldViolations(err); !slices.Equal(got, tt.want) {
				t.Errorf("field violations = %v, want %v (%v)", got, tt.want, err)
			}
			for _, f := range tt.want {
				if !strings.Contains(status.Convert(err).Message(), f) {
					t.Errorf("message %q does not name %s", status.Convert(err).Message(), f)
				}
			}
		})
	}
	// Other RPCs validate their own fields.
	other := []struct {
		name string
		call func() error
		want string
	}{
		{"cutover generation", func() error {
			_, err := st.client.Cutover(ctx(), &pb.CutoverRequest{Name: "users_by_email", Generation: 0})
			return err
		}, "generation"},
		{"rollback name", func() error { _, err := st.client.Rollback(ctx(), &pb.RollbackRequest{Name: "a b"}); return err }, "name"},
		{"list page size", func() error {
			_, err := st.client.ListProjections(ctx(), &pb.ListProjectionsRequest{PageSize: -1})
			return err
		}, "page_size"},
		{"list page token", func() error {
			_, err := st.client.ListProjections(ctx(), &pb.ListProjectionsRequest{PageToken: "!!"})
			return err
		}, "page_token"},
		{"update rename", func() error {
			r := validCreate()
			r.Projection.Name = "other"
			_, err := st.client.UpdateProjection(ctx(), &pb.UpdateProjectionRequest{Name: "users_by_email", Projection: r.Projection})
			return err
		}, "projection.name"},
	}
	for _, tt := range other {
		err := tt.call()
		if status.Code(err) != codes.InvalidArgument || !slices.Equal(fieldViolations(err), []string{tt.want}) {
			t.Errorf("%s: %v, violations %v; want InvalidArgument on %s", tt.name, err, fieldViolations(err), tt.want)
		}
	}
	if len(st.tc.startedIDs()) != 0 {
		t.Errorf("invalid requests started workflows: %v", st.tc.startedIDs())
	}
}

type restError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Details []struct {
		Type            string `json:"@type"`
		FieldViolations []struct {
			Field       string `json:"field"`
			Description string `json:"description"`
		} `json:"field_violations"`
	} `json:"details"`
}

func (e restError) fields() []string {
	var out []string
	for _, d := range e.Details {
		for _, v := range d.FieldViolations {
			out = append(out, v.Field)
		}
	}
	return out
}

func TestRESTValidation(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	authz := "Bearer " + goodToken
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantFields []string // nil: only a 400 with a message naming wantText
		wantText   string
	}{
		{name: "bad template", method: "POST", path: "/v1/projections",
			body:       `{"name":"p","model":"users","key_template":"{email","fields":["id"]}`,
			wantFields: []string{"projection.key_template"}},
		{name: "template field missing from model", method: "POST", path: "/v1/projections",
			body:       `{"name":"p","model":"users","key_template":"{slug}","fields":["id"]}`,
			wantFields: []string{"projection.key_template"}},
		{name: "bad filter", method: "POST", path: "/v1/projections",
			body:       `{"name":"p","model":"users","key_template":"{id}","fields":["id"],"filter":{"field":"status","op":"in"}}`,
			wantFields: []string{"projection.filter.values"}},
		{name: "update with bad field", method: "PUT", path: "/v1/projections/p",
			body:       `{"model":"users","key_template":"{id}","fields":["id","nope"]}`,
			wantFields: []string{"projection.fields[1]"}},
		{name: "cutover generation", method: "POST", path: "/v1/projections/p:cutover", body: `{"generation":"-3"}`,
			wantFields: []string{"generation"}},
		{name: "unknown JSON field", method: "POST", path: "/v1/projections",
			body: `{"name":"p","model":"users","key_tmpl":"{id}","fields":["id"]}`, wantText: "key_tmpl"},
		{name: "not JSON", method: "POST", path: "/v1/projections", body: `{"name":`, wantText: ""},
		{name: "wrong type", method: "POST", path: "/v1/projections", body: `{"name":"p","fields":"id"}`, wantText: "fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, hdr, b := st.do(t, tt.method, tt.path, authz, []byte(tt.body))
			if code != http.StatusBadRequest {
				t.Fatalf("status %d (%s), want 400", code, b)
			}
			if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type = %q, want JSON", ct)
			}
			var e restError
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("body %s is not JSON: %v", b, err)
			}
			if e.Code != int(codes.InvalidArgument) || e.Message == "" {
				t.Errorf("body = %s, want code 3 and a message", b)
			}
			if tt.wantFields != nil && !slices.Equal(e.fields(), tt.wantFields) {
				t.Errorf("field violations = %v, want %v (%s)", e.fields(), tt.wantFields, b)
			}
			if tt.wantText != "" && !strings.Contains(e.Message, tt.wantText) {
				t.Errorf("message %q does not name %q", e.Message, tt.wantText)
			}
		})
	}
}

func TestRESTCreateGetListAndAlreadyRunning(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	authz := "Bearer " + goodToken
	body := `{"name":"users_by_email","model":"users","key_template":"{email}","lowercase_key":true,"fields":["id","email"]}`
	code, _, b := st.do(t, "POST", "/v1/projections", authz, []byte(body))
	if code != 200 {
		t.Fatalf("create: %d %s", code, b)
	}
	var op struct {
		Projection struct {
			Definition struct {
				Name        string   `json:"name"`
				KeyTemplate string   `json:"key_template"`
				Fields      []string `json:"fields"`
			} `json:"definition"`
		} `json:"projection"`
		Workflow struct {
			WorkflowID string `json:"workflow_id"`
			RunID      string `json:"run_id"`
			UIURL      string `json:"ui_url"`
		} `json:"workflow"`
	}
	if err := json.Unmarshal(b, &op); err != nil {
		t.Fatal(err)
	}
	if op.Projection.Definition.Name != "users_by_email" || op.Projection.Definition.KeyTemplate != "{email}" {
		t.Errorf("created = %s", b)
	}
	wantID := workflows.BuildWorkflowID("users_by_email")
	if op.Workflow.WorkflowID != wantID || op.Workflow.UIURL != "http://ui.test/namespaces/default/workflows/projection%2Fusers_by_email/"+op.Workflow.RunID {
		t.Errorf("workflow = %+v, want id %s with a UI link", op.Workflow, wantID)
	}
	// The build got the topic of the model and the definition.
	st.tc.mu.Lock()
	bp, ok := st.tc.args[0].(workflows.BuildParams)
	st.tc.mu.Unlock()
	if !ok || bp.Topic != "distcache.users" || bp.Reason != workflows.ReasonCreate || bp.Definition.Name != "users_by_email" {
		t.Errorf("build params = %+v", st.tc.args[0])
	}

	// Same name again: 409 AlreadyExists from the registry.
	if code, _, b := st.do(t, "POST", "/v1/projections", authz, []byte(body)); code != http.StatusConflict {
		t.Errorf("second create: %d %s, want 409", code, b)
	}
	// A replay while the build runs: 409 Aborted, "already running".
	code, _, b = st.do(t, "POST", "/v1/projections/users_by_email:replay", authz, []byte(`{}`))
	var e restError
	_ = json.Unmarshal(b, &e)
	if code != http.StatusConflict || e.Code != int(codes.Aborted) || !strings.Contains(e.Message, "already running") {
		t.Errorf("replay while building: %d %s, want 409 Aborted already running", code, b)
	}
	// Get and list.
	if code, _, b := st.do(t, "GET", "/v1/projections/users_by_email", authz, nil); code != 200 || !strings.Contains(string(b), `"key_template":"{email}"`) {
		t.Errorf("get: %d %s", code, b)
	}
	code, _, b = st.do(t, "GET", "/v1/projections?page_size=10", authz, nil)
	if code != 200 || !strings.Contains(string(b), `"users_by_email"`) {
		t.Errorf("list: %d %s", code, b)
	}
}

func TestCreateRollsBackWhenWorkflowCannotStart(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	// A delete is running under the build id: the create must not leave the name registered.
	st.tc.running[workflows.BuildWorkflowID("users_by_email")] = true
	_, err := st.client.CreateProjection(withToken("Bearer "+goodToken), validCreate())
	if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("create = %v, want Aborted already running", err)
	}
	if st.reg.has("users_by_email") {
		t.Error("the projection stayed registered although its workflow never started")
	}
}

// TestTemporalDown: while Temporal is reported down, every call that starts a workflow answers
// 503 UNAVAILABLE naming Temporal without touching the registry, reads answer from the registry,
// and /readyz is 200 "degraded". A start that fails because Temporal does not answer (the
// report lagging behind) is UNAVAILABLE too, and the create is taken back.
func TestTemporalDown(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	authz := "Bearer " + goodToken
	if _, err := st.client.CreateProjection(withToken(authz), validCreate()); err != nil {
		t.Fatal(err)
	}
	st.tc.reset()
	st.temporalDown.Store(true)
	def := `{"name":"other","model":"users","key_template":"{email}","fields":["id","email"]}`
	writes := []struct{ method, path, body string }{
		{"POST", "/v1/projections", def},
		{"PUT", "/v1/projections/users_by_email", `{"name":"users_by_email","model":"users","key_template":"{email}","fields":["id"]}`},
		{"POST", "/v1/projections/users_by_email:replay", `{}`},
		{"POST", "/v1/projections/users_by_email:cutover", `{"generation":1}`},
		{"POST", "/v1/projections/users_by_email:rollback", `{}`},
		{"DELETE", "/v1/projections/users_by_email", ""},
	}
	for _, w := range writes {
		var body []byte
		if w.body != "" {
			body = []byte(w.body)
		}
		code, _, b := st.do(t, w.method, w.path, authz, body)
		var e restError
		_ = json.Unmarshal(b, &e)
		if code != http.StatusServiceUnavailable || e.Code != int(codes.Unavailable) || !strings.Contains(e.Message, "Temporal") {
			t.Errorf("%s %s while Temporal is down: %d %s, want 503 UNAVAILABLE naming Temporal", w.method, w.path, code, b)
		}
	}
	if st.reg.has("other") || len(st.tc.startedIDs()) != 0 {
		t.Errorf("refused calls left a trace: registered %v, started %v", st.reg.has("other"), st.tc.startedIDs())
	}
	for _, path := range []string{"/v1/projections/users_by_email", "/v1/projections", "/v1/projections/users_by_email/status"} {
		if code, _, b := st.do(t, "GET", path, authz, nil); code != 200 || !strings.Contains(string(b), "users_by_email") {
			t.Errorf("GET %s while Temporal is down: %d %s, want 200", path, code, b)
		}
	}
	if code, _, b := st.do(t, "GET", "/readyz", "", nil); code != 200 || !strings.Contains(string(b), `"status":"degraded: temporal"`) || strings.Contains(string(b), "refused") {
		t.Errorf("/readyz while Temporal is down = %d %s, want 200 \"degraded: temporal\" without the error's text", code, b)
	}

	// Temporal reported up, but the start fails to reach it.
	st.temporalDown.Store(false)
	st.tc.mu.Lock()
	st.tc.unavailable = true
	st.tc.mu.Unlock()
	_, err := st.client.CreateProjection(withToken(authz), &pb.CreateProjectionRequest{Projection: &pb.ProjectionDefinition{
		Name: "other", Model: "users", KeyTemplate: "{email}", Fields: []string{"id"},
	}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "Temporal") {
		t.Errorf("create while the start fails to reach Temporal = %v, want Unavailable naming Temporal", err)
	}
	if st.reg.has("other") {
		t.Error("the projection stayed registered although its workflow never started")
	}
	if code, _, b := st.do(t, "GET", "/readyz", "", nil); code != 200 || !strings.Contains(string(b), `"status":"ok"`) {
		t.Errorf("/readyz with Temporal up = %d %s, want 200 ok", code, b)
	}
}

func TestHealthReadyMetricsOpenAPI(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	if code, _, b := st.do(t, "GET", "/healthz", "", nil); code != 200 {
		t.Errorf("/healthz = %d %s", code, b)
	}
	if code, _, b := st.do(t, "GET", "/readyz", "", nil); code != 200 {
		t.Errorf("/readyz = %d %s", code, b)
	}
	st.ready = func(context.Context) error { return errors.New("redis: connection refused") }
	if code, _, b := st.do(t, "GET", "/readyz", "", nil); code != 503 || !strings.Contains(string(b), `"status":"not ready: redis"`) || strings.Contains(string(b), "refused") {
		t.Errorf("/readyz when redis is down = %d %s, want 503 \"not ready: redis\" without the error's text", code, b)
	}
	// One authenticated and one refused call, then the counter shows both codes.
	st.do(t, "GET", "/v1/projections/x", "Bearer "+goodToken, nil)
	_, _ = st.client.GetProjection(withToken(""), &pb.GetProjectionRequest{Name: "x"})
	code, _, b := st.do(t, "GET", "/metrics", "", nil)
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`distcache_controlplane_requests_total{code="NotFound",method="/distcache.v1.ControlPlane/GetProjection"} 1`,
		`distcache_controlplane_requests_total{code="Unauthenticated",method="/distcache.v1.ControlPlane/GetProjection"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	code, _, b = st.do(t, "GET", "/openapi.json", "", nil)
	var doc struct {
		Swagger string                    `json:"swagger"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if code != 200 || json.Unmarshal(b, &doc) != nil || doc.Swagger != "2.0" {
		t.Fatalf("/openapi.json = %d, not a Swagger 2.0 document", code)
	}
	for path, method := range map[string]string{
		"/v1/projections": "post", "/v1/projections/{name}": "put", "/v1/projections/{name}:rollback": "post",
		"/v1/projections/{name}/status": "get", "/v1/projections/{name}:cutover": "post",
	} {
		if _, ok := doc.Paths[path][method]; !ok {
			t.Errorf("OpenAPI lacks %s %s", method, path)
		}
	}
}

func TestGRPCListPagesAndNotFound(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	ctx := withToken("Bearer " + goodToken)
	for _, n := range []string{"c", "a", "e", "b", "d"} {
		d := validCreate().Projection
		d.Name = n
		if _, err := st.client.CreateProjection(ctx, &pb.CreateProjectionRequest{Projection: d}); err != nil {
			t.Fatalf("create %s: %v", n, err)
		}
	}
	var got []string
	token := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		resp, err := st.client.ListProjections(ctx, &pb.ListProjectionsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetProjections()) > 2 {
			t.Fatalf("page of %d, want at most 2", len(resp.GetProjections()))
		}
		for _, p := range resp.GetProjections() {
			got = append(got, p.GetDefinition().GetName())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if want := []string{"a", "b", "c", "d", "e"}; !slices.Equal(got, want) {
		t.Errorf("listed %v, want %v", got, want)
	}
	for name, call := range map[string]func() error{
		"get":    func() error { _, err := st.client.GetProjection(ctx, &pb.GetProjectionRequest{Name: "zz"}); return err },
		"status": func() error { _, err := st.client.GetStatus(ctx, &pb.GetStatusRequest{Name: "zz"}); return err },
		"replay": func() error {
			_, err := st.client.ReplayProjection(ctx, &pb.ReplayProjectionRequest{Name: "zz"})
			return err
		},
		"delete": func() error {
			_, err := st.client.DeleteProjection(ctx, &pb.DeleteProjectionRequest{Name: "zz"})
			return err
		},
		"rollback": func() error {
			_, err := st.client.Rollback(ctx, &pb.RollbackRequest{Name: "zz"})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.NotFound {
			t.Errorf("%s of an unknown projection: %v, want NotFound", name, err)
		}
	}
	// Status of a known projection with nothing running: the projection, no running build.
	s, err := st.client.GetStatus(ctx, &pb.GetStatusRequest{Name: "a"})
	if err != nil || s.GetProjection().GetDefinition().GetName() != "a" || s.GetRunning() != nil {
		t.Errorf("status of a = %v, %v", s, err)
	}
}
