// Package api implements the control-plane's gRPC service distcache.v1.ControlPlane: it validates
// requests, keeps the registry and starts the Temporal workflows of package workflows. gRPC codes
// are chosen here, at the edge; the HTTP mapping is grpc-gateway's (see server.go).
package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/projection"
	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
	"github.com/distcache/distcache/services/control-plane/internal/modelcatalog"
	"github.com/distcache/distcache/workflows"
	"github.com/distcache/distcache/workflows/registry"
)

// Registry is the part of the projection registry the API uses; *registry.Store implements it.
type Registry interface {
	CreateProjection(ctx context.Context, d projection.Definition) error
	AbandonProjection(ctx context.Context, name string) error
	GetProjection(ctx context.Context, name string) (registry.Projection, error)
	ListProjections(ctx context.Context, after string, limit int) ([]registry.Projection, error)
	Generations(ctx context.Context, name string) ([]registry.Generation, error)
}

var _ Registry = (*registry.Store)(nil)

// Temporal is the part of the Temporal client the API uses; client.Client implements it.
type Temporal interface {
	ExecuteWorkflow(ctx context.Context, options client.StartWorkflowOptions, workflow interface{}, args ...interface{}) (client.WorkflowRun, error)
	DescribeWorkflow(ctx context.Context, workflowID, runID string) (*client.WorkflowExecutionDescription, error)
	QueryWorkflow(ctx context.Context, workflowID, runID, queryType string, args ...interface{}) (converter.EncodedValue, error)
	GetWorkflow(ctx context.Context, workflowID, runID string) client.WorkflowRun
}

// Operator is implemented by client.Client: the API asks its operator service which search
// attributes the namespace has before it starts a workflow that would set them. A Temporal
// without it counts as a namespace without them.
type Operator interface {
	OperatorService() operatorservice.OperatorServiceClient
}

var _ Operator = client.Client(nil)

// Settings are the service's knobs (see package config for their variables and defaults).
type Settings struct {
	Namespace      string
	UIURL          string // Temporal UI base URL; empty: no links
	TopicPrefix    string
	RetireGrace    time.Duration
	RetireDrain    time.Duration
	MaxLag         int64
	CatchUpTimeout time.Duration
	// ProgressInterval is BuildParams.ProgressInterval (0: the workflow's default).
	ProgressInterval time.Duration
	// PointerWait bounds how long Cutover and Rollback wait for their workflow (default 30s).
	PointerWait time.Duration
	// ConsumerStale is the age past which a generation's consumer report says that no replica
	// is reporting (default DefaultConsumerStale).
	ConsumerStale time.Duration
	// TemporalErr, when set, reports whether Temporal answers (nil: it does). While it returns an
	// error, the calls that start a workflow answer Unavailable at once and GetStatus leaves out
	// the running workflow; Get, List and Status read only the registry.
	TemporalErr func() error
}

// statusTemporalTimeout bounds GetStatus's calls to Temporal: status is served from the
// registry, the running workflow's progress is extra.
const statusTemporalTimeout = 5 * time.Second

// msgTemporalDown ends the Unavailable message of a call that needs Temporal while it is down.
const msgTemporalDown = "Temporal is unavailable, so projection workflows cannot start; retry when it is back (Get, List and Status still answer)"

// Service implements pb.ControlPlaneServer.
type Service struct {
	pb.UnimplementedControlPlaneServer
	reg     Registry
	tc      Temporal
	catalog modelcatalog.Catalog
	set     Settings
	log     *slog.Logger

	saMu      sync.Mutex
	saOK      bool      // the namespace had workflows.SearchAttributes at saChecked
	saChecked time.Time // zero: never checked
	saMissing string    // what the last warning named ("": none given)
}

var _ pb.ControlPlaneServer = (*Service)(nil)

// New returns the service.
func New(reg Registry, tc Temporal, cat modelcatalog.Catalog, set Settings, log *slog.Logger) *Service {
	if set.PointerWait <= 0 {
		set.PointerWait = 30 * time.Second
	}
	if set.ConsumerStale <= 0 {
		set.ConsumerStale = DefaultConsumerStale
	}
	if set.TopicPrefix == "" {
		set.TopicPrefix = events.DefaultTopicPrefix
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{reg: reg, tc: tc, catalog: cat, set: set, log: log}
}

// Paging of ListProjections.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// ---- validation ----

type violations struct {
	list []*errdetails.BadRequest_FieldViolation
}

func (v *violations) add(field, desc string) {
	v.list = append(v.list, &errdetails.BadRequest_FieldViolation{Field: field, Description: desc})
}

func (v *violations) addDefinition(prefix string, err error) {
	var ve *projection.ValidationError
	if errors.As(err, &ve) {
		for _, x := range ve.Violations {
			v.add(prefix+x.Field, x.Description)
		}
		return
	}
	v.add(strings.TrimSuffix(prefix, "."), err.Error())
}

func (v *violations) err() error {
	if len(v.list) == 0 {
		return nil
	}
	parts := make([]string, len(v.list))
	for i, f := range v.list {
		parts[i] = f.Field + ": " + f.Description
	}
	st := status.New(codes.InvalidArgument, "invalid request: "+strings.Join(parts, "; "))
	if withDetails, err := st.WithDetails(&errdetails.BadRequest{FieldViolations: v.list}); err == nil {
		st = withDetails
	}
	return st.Err()
}

func (v *violations) name(field, name string) {
	if err := projection.CheckName(field, name); err != nil {
		v.addDefinition("", err)
	}
}

// checkDefinition validates a definition on its own and against its model's fields. It returns
// a gRPC error (InvalidArgument naming the fields, or Unavailable when the model catalog fails).
func (s *Service) checkDefinition(ctx context.Context, prefix string, d projection.Definition, v *violations) error {
	if err := d.Validate(); err != nil {
		v.addDefinition(prefix, err)
	}
	if d.Model != "" && len(v.list) == 0 {
		fields, err := s.catalog.Fields(ctx, d.Model)
		switch {
		case errors.Is(err, modelcatalog.ErrUnknownModel):
			v.add(prefix+"model", fmt.Sprintf("unknown model %q", d.Model))
		case err != nil:
			s.log.Error("model catalog", "model", d.Model, "err", err)
			return status.Errorf(codes.Unavailable, "cannot read the fields of model %q", d.Model)
		default:
			if err := d.ValidateAgainst(fields); err != nil {
				v.addDefinition(prefix, err)
			}
		}
	}
	return v.err()
}

func fromPB(d *pb.ProjectionDefinition) projection.Definition {
	if d == nil {
		return projection.Definition{}
	}
	out := projection.Definition{
		Name: d.GetName(), Model: d.GetModel(), KeyTemplate: d.GetKeyTemplate(),
		LowercaseKey: d.GetLowercaseKey(), Fields: d.GetFields(),
	}
	if f := d.GetFilter(); f != nil {
		out.Filter = &projection.Filter{Field: f.GetField(), Op: f.GetOp(), Values: f.GetValues()}
	}
	return out
}

func toPB(d projection.Definition) *pb.ProjectionDefinition {
	out := &pb.ProjectionDefinition{
		Name: d.Name, Model: d.Model, KeyTemplate: d.KeyTemplate, LowercaseKey: d.LowercaseKey, Fields: d.Fields,
	}
	if d.Filter != nil {
		out.Filter = &pb.Filter{Field: d.Filter.Field, Op: d.Filter.Op, Values: d.Filter.Values}
	}
	return out
}

func projectionPB(p registry.Projection) *pb.Projection {
	return &pb.Projection{
		Definition:         toPB(p.Definition),
		CurrentGeneration:  p.Current,
		PreviousGeneration: p.Previous,
		CreatedAt:          timestamppb.New(p.CreatedAt),
		UpdatedAt:          timestamppb.New(p.UpdatedAt),
	}
}

// ---- error mapping ----

// grpcError maps an error of the registry or Temporal to a status; unknown errors are logged and
// reported as Internal without their text (which may hold connection details).
func (s *Service) grpcError(op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	var appErr *temporal.ApplicationError
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, registry.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, registry.ErrPrecondition):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.As(err, &started):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%s: %v", op, err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%s: %v", op, err)
	case errors.As(err, &appErr):
		if c, ok := appErrorCode(err); ok {
			return status.Error(c, rootMessage(err))
		}
	}
	s.log.Error("request failed", "op", op, "err", err)
	return status.Errorf(codes.Internal, "%s failed", op)
}

// requireTemporal answers Unavailable, naming Temporal, while Settings.TemporalErr reports it down.
func (s *Service) requireTemporal(op string) error {
	if s.set.TemporalErr == nil {
		return nil
	}
	if err := s.set.TemporalErr(); err != nil {
		s.log.Warn("refused: temporal is unavailable", "op", op, "err", err)
		return status.Errorf(codes.Unavailable, "%s: %s", op, msgTemporalDown)
	}
	return nil
}

// temporalError maps the error of a call that starts a workflow: a failure to reach Temporal
// (Unavailable, or the SDK's own deadline while the caller's context is still live) is
// Unavailable naming Temporal; anything else goes through grpcError.
func (s *Service) temporalError(ctx context.Context, op string, err error) error {
	var unavailable *serviceerror.Unavailable
	var deadline *serviceerror.DeadlineExceeded
	timedOut := errors.As(err, &deadline) || errors.Is(err, context.DeadlineExceeded)
	if errors.As(err, &unavailable) || (timedOut && ctx.Err() == nil) {
		s.log.Warn("temporal call failed", "op", op, "err", err)
		return status.Errorf(codes.Unavailable, "%s: %s", op, msgTemporalDown)
	}
	return s.grpcError(op, err)
}

// appErrorCode finds a workflows.ErrType* application error anywhere in err's chain.
func appErrorCode(err error) (codes.Code, bool) {
	for ; err != nil; err = errors.Unwrap(err) {
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) {
			return 0, false
		}
		switch appErr.Type() {
		case workflows.ErrTypeNotFound:
			return codes.NotFound, true
		case workflows.ErrTypePrecondition:
			return codes.FailedPrecondition, true
		case workflows.ErrTypeInvalidDefinition:
			return codes.InvalidArgument, true
		}
		err = appErr
	}
	return 0, false
}

// rootMessage is the message of the innermost application error (the activity's own words).
func rootMessage(err error) string {
	msg := err.Error()
	for ; err != nil; err = errors.Unwrap(err) {
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) {
			msg = appErr.Message()
			err = appErr
		}
	}
	return msg
}

// alreadyRunning words the Aborted error of a second workflow for one projection.
func alreadyRunning(name, id string) error {
	return status.Errorf(codes.Aborted, "projection %q: workflow %s is already running; wait for it to finish (see GetStatus)", name, id)
}

// ---- workflows ----

// searchAttrsTTL is how long the answer of a search attribute check holds: a namespace whose
// attributes are registered while the service runs gets them on its next workflows within it.
const searchAttrsTTL = time.Minute

// searchAttributes reports whether the namespace has workflows.SearchAttributes registered (with
// their types), asking Temporal's operator service at most once per searchAttrsTTL. Workflows
// are given them only then: the server fails every workflow task that upserts an attribute it
// does not know, and refuses a start that names one. Missing attributes are logged once, with
// what to run.
func (s *Service) searchAttributes(ctx context.Context) bool {
	s.saMu.Lock()
	defer s.saMu.Unlock()
	if !s.saChecked.IsZero() && time.Since(s.saChecked) < searchAttrsTTL {
		return s.saOK
	}
	op, ok := s.tc.(Operator)
	if !ok {
		s.saOK, s.saChecked = false, time.Now()
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := op.OperatorService().ListSearchAttributes(cctx, &operatorservice.ListSearchAttributesRequest{Namespace: s.set.Namespace})
	if err != nil {
		// Not cached: the next start asks again.
		s.log.Warn("list search attributes; starting the workflow without them", "err", err)
		return false
	}
	missing := workflows.MissingSearchAttributes(resp.GetCustomAttributes())
	s.saOK, s.saChecked = len(missing) == 0, time.Now()
	if m := strings.Join(missing, ", "); m != s.saMissing {
		s.saMissing = m
		if m != "" {
			s.log.Warn("the Temporal namespace lacks distcache's search attributes: workflows start without them, so the UI cannot filter builds by projection or phase; register them (docs/operations.md)",
				"namespace", s.set.Namespace, "missing", m)
		} else {
			s.log.Info("the Temporal namespace has distcache's search attributes", "namespace", s.set.Namespace)
		}
	}
	return s.saOK
}

func (s *Service) workflowPB(id, runID string) *pb.Workflow {
	return &pb.Workflow{WorkflowId: id, RunId: runID, UiUrl: s.uiURL(id, runID)}
}

// uiURL links a workflow in the Temporal UI: <ui>/namespaces/<ns>/workflows/<id>[/<run>].
func (s *Service) uiURL(id, runID string) string {
	if s.set.UIURL == "" || id == "" {
		return ""
	}
	u := s.set.UIURL + "/namespaces/" + url.PathEscape(s.set.Namespace) + "/workflows/" + url.PathEscape(id)
	if runID != "" {
		u += "/" + url.PathEscape(runID)
	}
	return u
}

func (s *Service) startOptions(id, summary string) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                workflows.ControlPlaneTaskQueue,
		WorkflowIDReusePolicy:                    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		StaticSummary:                            summary,
	}
}

// startBuild starts BuildWorkflow; Aborted when a build or delete of the projection runs.
func (s *Service) startBuild(ctx context.Context, d projection.Definition, reason string) (*pb.Workflow, error) {
	id := workflows.BuildWorkflowID(d.Name)
	opts := s.startOptions(id, reason+" projection "+d.Name)
	opts.Memo = map[string]interface{}{"projection": d.Name, "reason": reason}
	sa := s.searchAttributes(ctx)
	if sa {
		opts.TypedSearchAttributes = workflows.StartSearchAttributes(d.Name, 0, workflows.PhaseAllocating)
	}
	run, err := s.tc.ExecuteWorkflow(ctx, opts, workflows.WorkflowBuild, workflows.BuildParams{
		Definition:       d,
		Topic:            events.Topic(s.set.TopicPrefix, d.Model),
		Reason:           reason,
		RetireGrace:      s.set.RetireGrace,
		MaxLag:           s.set.MaxLag,
		CatchUpTimeout:   s.set.CatchUpTimeout,
		ProgressInterval: s.set.ProgressInterval,
		SearchAttributes: sa,
	})
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return nil, alreadyRunning(d.Name, id)
	}
	if err != nil {
		return nil, s.temporalError(ctx, "start workflow", err)
	}
	s.log.Info("workflow started", "workflow_id", id, "run_id", run.GetRunID(), "reason", reason)
	return s.workflowPB(id, run.GetRunID()), nil
}

// ---- RPCs ----

// CreateProjection implements pb.ControlPlaneServer.
func (s *Service) CreateProjection(ctx context.Context, req *pb.CreateProjectionRequest) (*pb.ProjectionOperation, error) {
	v := &violations{}
	if req.GetProjection() == nil {
		v.add("projection", "is required")
		return nil, v.err()
	}
	d := fromPB(req.GetProjection())
	if err := s.checkDefinition(ctx, "projection.", d, v); err != nil {
		return nil, err
	}
	if err := s.requireTemporal("create projection"); err != nil {
		return nil, err
	}
	if err := s.reg.CreateProjection(ctx, d); err != nil {
		return nil, s.grpcError("create projection", err)
	}
	wf, err := s.startBuild(ctx, d, workflows.ReasonCreate)
	if err != nil {
		// The registry row without a workflow would block the name: take it back.
		if aerr := s.reg.AbandonProjection(context.WithoutCancel(ctx), d.Name); aerr != nil {
			s.log.Error("abandon projection", "projection", d.Name, "err", aerr)
		}
		return nil, err
	}
	p, err := s.reg.GetProjection(ctx, d.Name)
	if err != nil {
		return nil, s.grpcError("get projection", err)
	}
	return &pb.ProjectionOperation{Projection: projectionPB(p), Workflow: wf}, nil
}

// GetProjection implements pb.ControlPlaneServer.
func (s *Service) GetProjection(ctx context.Context, req *pb.GetProjectionRequest) (*pb.Projection, error) {
	v := &violations{}
	v.name("name", req.GetName())
	if err := v.err(); err != nil {
		return nil, err
	}
	p, err := s.reg.GetProjection(ctx, req.GetName())
	if err != nil {
		return nil, s.grpcError("get projection", err)
	}
	return projectionPB(p), nil
}

// ListProjections implements pb.ControlPlaneServer.
func (s *Service) ListProjections(ctx context.Context, req *pb.ListProjectionsRequest) (*pb.ListProjectionsResponse, error) {
	v := &violations{}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		v.add("page_size", "must not be negative")
	case size == 0:
		size = DefaultPageSize
	case size > MaxPageSize:
		size = MaxPageSize
	}
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || projection.CheckName("", string(b)) != nil {
			v.add("page_token", "is not a token from a previous response")
		}
		after = string(b)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	ps, err := s.reg.ListProjections(ctx, after, size+1)
	if err != nil {
		return nil, s.grpcError("list projections", err)
	}
	resp := &pb.ListProjectionsResponse{}
	if len(ps) > size {
		ps = ps[:size]
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(ps[len(ps)-1].Name))
	}
	for _, p := range ps {
		resp.Projections = append(resp.Projections, projectionPB(p))
	}
	return resp, nil
}

// DeleteProjection implements pb.ControlPlaneServer. A build of the projection that is running is
// terminated (its generation is retired and unlinked by the delete); a delete that gave up
// (phase delete_failed in GetStatus) is started again, even though the registry no longer lists
// the projection; a delete that is running answers Aborted.
func (s *Service) DeleteProjection(ctx context.Context, req *pb.DeleteProjectionRequest) (*pb.ProjectionOperation, error) {
	v := &violations{}
	v.name("name", req.GetName())
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.requireTemporal("delete projection"); err != nil {
		return nil, err
	}
	name := req.GetName()
	id := workflows.BuildWorkflowID(name)
	last, err := s.lastRun(ctx, id)
	if err != nil {
		return nil, s.temporalError(ctx, "describe workflow", err)
	}
	proj := &pb.Projection{Definition: &pb.ProjectionDefinition{Name: name}}
	p, err := s.reg.GetProjection(ctx, name)
	switch {
	case err == nil:
		proj = projectionPB(p)
	case errors.Is(err, registry.ErrNotFound) && last.isDelete() && last.failed():
		// The registry step may have succeeded before a later step gave up: start it again.
	default:
		return nil, s.grpcError("get projection", err)
	}
	if last.running() && last.isDelete() {
		return nil, alreadyRunning(name, id)
	}
	opts := s.startOptions(id, "delete projection "+name)
	opts.Memo = map[string]interface{}{"projection": name, "reason": "delete"}
	params := workflows.DeleteParams{Projection: name, Drain: s.set.RetireDrain, SearchAttributes: s.searchAttributes(ctx)}
	if params.SearchAttributes {
		opts.TypedSearchAttributes = workflows.StartSearchAttributes(name, 0, workflows.PhaseDeleting)
	}
	if last.running() {
		// A build: the delete takes its place in one step (Temporal terminates it), so no new
		// build can slip in between.
		opts.WorkflowIDConflictPolicy = enumspb.WORKFLOW_ID_CONFLICT_POLICY_TERMINATE_EXISTING
		params.TerminatedBuild = true
		s.log.Info("delete terminates the running build", "projection", name, "workflow_id", id, "run_id", last.runID)
	}
	run, err := s.tc.ExecuteWorkflow(ctx, opts, workflows.WorkflowDelete, params)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return nil, alreadyRunning(name, id)
	}
	if err != nil {
		return nil, s.temporalError(ctx, "start workflow", err)
	}
	return &pb.ProjectionOperation{Projection: proj, Workflow: s.workflowPB(id, run.GetRunID())}, nil
}

// workflowRun is what DescribeWorkflow says of the newest run of a workflow id.
type workflowRun struct {
	desc   *client.WorkflowExecutionDescription // nil: no run
	status enumspb.WorkflowExecutionStatus
	typ    string
	runID  string
}

func (r workflowRun) running() bool  { return r.status == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING }
func (r workflowRun) failed() bool   { return r.status == enumspb.WORKFLOW_EXECUTION_STATUS_FAILED }
func (r workflowRun) isDelete() bool { return r.typ == workflows.WorkflowDelete }

// lastRun describes the newest run of workflow id; no run is not an error.
func (s *Service) lastRun(ctx context.Context, id string) (workflowRun, error) {
	desc, err := s.tc.DescribeWorkflow(ctx, id, "")
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return workflowRun{}, nil
	}
	if err != nil {
		return workflowRun{}, err
	}
	info := desc.RawResponse.GetWorkflowExecutionInfo()
	return workflowRun{desc: desc, status: info.GetStatus(), typ: info.GetType().GetName(), runID: info.GetExecution().GetRunId()}, nil
}

// Phases of BuildStatus for a delete.
const (
	PhaseDeleting     = workflows.PhaseDeleting
	PhaseDeleteFailed = workflows.PhaseDeleteFailed
)

// deleteStatus reports a delete run: deleting, with the attempt and last error of its step in
// progress while that step is retried, or delete_failed with the workflow's error.
func (s *Service) deleteStatus(ctx context.Context, id string, r workflowRun) *pb.BuildStatus {
	bs := &pb.BuildStatus{Workflow: s.workflowPB(id, r.runID), Phase: PhaseDeleting}
	if !r.running() {
		bs.Phase = PhaseDeleteFailed
		err := s.tc.GetWorkflow(ctx, id, r.runID).Get(ctx, nil)
		if err != nil {
			bs.Error = rootMessage(err)
		}
		return bs
	}
	for _, a := range r.desc.RawResponse.GetPendingActivities() {
		if a.GetAttempt() > 1 || a.GetLastFailure() != nil {
			bs.Attempt = a.GetAttempt()
			bs.Error = a.GetLastFailure().GetMessage()
		}
	}
	return bs
}

// UpdateProjection implements pb.ControlPlaneServer.
func (s *Service) UpdateProjection(ctx context.Context, req *pb.UpdateProjectionRequest) (*pb.ProjectionOperation, error) {
	v := &violations{}
	v.name("name", req.GetName())
	if req.GetProjection() == nil {
		v.add("projection", "is required")
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	d := fromPB(req.GetProjection())
	if d.Name == "" {
		d.Name = req.GetName()
	}
	if d.Name != req.GetName() {
		v.add("projection.name", fmt.Sprintf("%q differs from the projection being updated, %q (a projection cannot be renamed)", d.Name, req.GetName()))
		return nil, v.err()
	}
	if err := s.checkDefinition(ctx, "projection.", d, v); err != nil {
		return nil, err
	}
	if err := s.requireTemporal("update projection"); err != nil {
		return nil, err
	}
	p, err := s.reg.GetProjection(ctx, d.Name)
	if err != nil {
		return nil, s.grpcError("get projection", err)
	}
	wf, err := s.startBuild(ctx, d, workflows.ReasonUpdate)
	if err != nil {
		return nil, err
	}
	return &pb.ProjectionOperation{Projection: projectionPB(p), Workflow: wf}, nil
}

// ReplayProjection implements pb.ControlPlaneServer.
func (s *Service) ReplayProjection(ctx context.Context, req *pb.ReplayProjectionRequest) (*pb.ProjectionOperation, error) {
	v := &violations{}
	v.name("name", req.GetName())
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.requireTemporal("replay projection"); err != nil {
		return nil, err
	}
	p, err := s.reg.GetProjection(ctx, req.GetName())
	if err != nil {
		return nil, s.grpcError("get projection", err)
	}
	wf, err := s.startBuild(ctx, p.Definition, workflows.ReasonReplay)
	if err != nil {
		return nil, err
	}
	return &pb.ProjectionOperation{Projection: projectionPB(p), Workflow: wf}, nil
}

// Cutover implements pb.ControlPlaneServer.
func (s *Service) Cutover(ctx context.Context, req *pb.CutoverRequest) (*pb.CutoverResponse, error) {
	v := &violations{}
	v.name("name", req.GetName())
	if req.GetGeneration() <= 0 {
		v.add("generation", "must be a positive generation number")
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	return s.movePointer(ctx, workflows.PointerParams{Projection: req.GetName(), Generation: req.GetGeneration()})
}

// Rollback implements pb.ControlPlaneServer.
func (s *Service) Rollback(ctx context.Context, req *pb.RollbackRequest) (*pb.CutoverResponse, error) {
	v := &violations{}
	v.name("name", req.GetName())
	if err := v.err(); err != nil {
		return nil, err
	}
	return s.movePointer(ctx, workflows.PointerParams{Projection: req.GetName(), Rollback: true})
}

// movePointer runs PointerWorkflow and waits for its result. A request the registry shows to be
// impossible (no such generation, one that is not kept up to date, nothing to roll back to) is
// refused before any workflow starts; the workflow's own checks, under the projection's row
// lock, still catch a change in between.
func (s *Service) movePointer(ctx context.Context, p workflows.PointerParams) (*pb.CutoverResponse, error) {
	op := "cutover"
	if p.Rollback {
		op = "rollback"
	}
	if err := s.requireTemporal(op); err != nil {
		return nil, err
	}
	proj, err := s.reg.GetProjection(ctx, p.Projection)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "projection %q does not exist", p.Projection)
	}
	if err != nil {
		return nil, s.grpcError("get projection", err)
	}
	target, err := s.checkPointerMove(ctx, proj, p)
	if err != nil {
		return nil, err
	}
	p.RetireGrace = s.set.RetireGrace
	p.SearchAttributes = s.searchAttributes(ctx)
	id := workflows.PointerWorkflowID(p.Projection)
	summary := fmt.Sprintf("cutover %s to generation %d", p.Projection, p.Generation)
	if p.Rollback {
		summary = fmt.Sprintf("rollback %s to generation %d", p.Projection, target)
	}
	opts := s.startOptions(id, summary)
	if p.SearchAttributes {
		opts.TypedSearchAttributes = workflows.StartSearchAttributes(p.Projection, target, "")
	}
	run, err := s.tc.ExecuteWorkflow(ctx, opts, workflows.WorkflowPointer, p)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &started) {
		return nil, alreadyRunning(p.Projection, id)
	}
	if err != nil {
		return nil, s.temporalError(ctx, "start workflow", err)
	}
	wctx, cancel := context.WithTimeout(ctx, s.set.PointerWait)
	defer cancel()
	var res workflows.CutoverResult
	if err := run.Get(wctx, &res); err != nil {
		return nil, s.grpcError("cutover", err)
	}
	return &pb.CutoverResponse{
		CurrentGeneration:  res.Current,
		PreviousGeneration: res.Previous,
		Workflow:           s.workflowPB(id, run.GetRunID()),
	}, nil
}

// checkPointerMove refuses, from the registry, a pointer move that cannot succeed, with a
// message saying what is missing; it returns the generation the move targets.
func (s *Service) checkPointerMove(ctx context.Context, proj registry.Projection, p workflows.PointerParams) (int64, error) {
	target := p.Generation
	if p.Rollback {
		if proj.Previous == 0 {
			return 0, status.Error(codes.FailedPrecondition, "nothing to roll back to: no previous generation is retained")
		}
		target = proj.Previous
	}
	if target == proj.Current {
		return target, nil // cutting over to the current generation changes nothing, and succeeds
	}
	gens, err := s.reg.Generations(ctx, proj.Name)
	if err != nil {
		return 0, s.grpcError("generations", err)
	}
	var kept []string
	state := ""
	for _, g := range slices.Backward(gens) { // oldest first
		if slices.Contains(registry.CutoverStates, g.State) {
			kept = append(kept, strconv.FormatInt(g.Generation, 10))
		}
		if g.Generation == target {
			state = g.State
		}
	}
	keptList := "none"
	if len(kept) > 0 {
		keptList = strings.Join(kept, ", ")
	}
	switch {
	case state == "" && p.Rollback:
		return 0, status.Errorf(codes.FailedPrecondition, "nothing to roll back to: the previous generation %d no longer exists (kept: %s)", target, keptList)
	case state == "":
		return 0, status.Errorf(codes.NotFound, "generation %d does not exist (kept: %s)", target, keptList)
	case !slices.Contains(registry.CutoverStates, state) && p.Rollback:
		return 0, status.Errorf(codes.FailedPrecondition, "nothing to roll back to: the previous generation %d is %s (kept: %s)", target, state, keptList)
	case !slices.Contains(registry.CutoverStates, state):
		return 0, status.Errorf(codes.FailedPrecondition, "generation %d is %s: a cutover needs a generation that is kept up to date (kept: %s)", target, state, keptList)
	}
	return target, nil
}

// GetStatus implements pb.ControlPlaneServer.
func (s *Service) GetStatus(ctx context.Context, req *pb.GetStatusRequest) (*pb.ProjectionStatus, error) {
	v := &violations{}
	v.name("name", req.GetName())
	if err := v.err(); err != nil {
		return nil, err
	}
	p, err := s.reg.GetProjection(ctx, req.GetName())
	if errors.Is(err, registry.ErrNotFound) && (s.set.TemporalErr == nil || s.set.TemporalErr() == nil) {
		// Deleted: while its delete runs, or after it gave up, say so.
		tctx, cancel := context.WithTimeout(ctx, statusTemporalTimeout)
		bs := s.runningBuild(tctx, req.GetName())
		cancel()
		if bs != nil && (bs.Phase == PhaseDeleting || bs.Phase == PhaseDeleteFailed) {
			return &pb.ProjectionStatus{Projection: &pb.Projection{Definition: &pb.ProjectionDefinition{Name: req.GetName()}}, Running: bs}, nil
		}
	}
	if err != nil {
		return nil, s.grpcError("get projection", err)
	}
	gens, err := s.reg.Generations(ctx, p.Name)
	if err != nil {
		return nil, s.grpcError("generations", err)
	}
	out := &pb.ProjectionStatus{Projection: projectionPB(p)}
	rebuilds := s.rebuilds(ctx, p.Name)
	consumers, now := s.consumers(ctx, p.Name), time.Now()
	for _, g := range gens {
		gs := &pb.GenerationStatus{
			Generation: g.Generation,
			State:      g.State,
			Definition: toPB(g.Definition),
			Backfill: &pb.BackfillProgress{
				RecordsDone: g.RecordsDone, Offset: g.Offset, EndOffset: g.EndOffset,
				Lag: max(g.EndOffset-g.Offset, 0),
			},
			Workflow:  s.workflowPB(g.WorkflowID, g.RunID),
			CreatedAt: timestamppb.New(g.CreatedAt),
			UpdatedAt: timestamppb.New(g.UpdatedAt),
		}
		if r, ok := rebuilds[g.Generation]; ok {
			gs.Rebuild = &pb.GenerationRebuild{Reason: r.Reason, Detail: r.Detail, Since: timestamppb.New(r.Since)}
		}
		if consumers != nil && slices.Contains(registry.CutoverStates, g.State) {
			c, ok := consumers[g.Generation]
			gs.Consumer = consumerPB(c, ok, now, s.set.ConsumerStale)
		}
		out.Generations = append(out.Generations, gs)
	}
	if s.set.TemporalErr == nil || s.set.TemporalErr() == nil {
		tctx, cancel := context.WithTimeout(ctx, statusTemporalTimeout)
		out.Running = s.runningBuild(tctx, p.Name)
		cancel()
	}
	return out, nil
}

// RebuildReader is implemented by registry.Store: the generations the cache-producer reports it
// is rebuilding in place (its topic re-created, or Redis lost their data). A Registry without it
// shows none.
type RebuildReader interface {
	Rebuilds(ctx context.Context, name string) (map[int64]registry.Rebuild, error)
}

var _ RebuildReader = (*registry.Store)(nil)

// rebuilds reads the rebuilds reported for projection name's generations; a failure leaves them
// out (logged): the rest of the status still holds.
func (s *Service) rebuilds(ctx context.Context, name string) map[int64]registry.Rebuild {
	rr, ok := s.reg.(RebuildReader)
	if !ok {
		return nil
	}
	m, err := rr.Rebuilds(ctx, name)
	if err != nil {
		s.log.Warn("read the generations' rebuilds", "projection", name, "err", err)
		return nil
	}
	return m
}

// runningBuild describes the projection's running build (or running or failed delete) workflow
// and asks a build for its progress. Any failure leaves the field unset: status is served from
// the registry regardless, and while Temporal is down GetStatus does not ask.
func (s *Service) runningBuild(ctx context.Context, name string) *pb.BuildStatus {
	id := workflows.BuildWorkflowID(name)
	r, err := s.lastRun(ctx, id)
	if err != nil {
		s.log.Warn("describe workflow", "workflow_id", id, "err", err)
		return nil
	}
	if r.isDelete() && (r.failed() || r.running()) {
		return s.deleteStatus(ctx, id, r)
	}
	if !r.running() || r.typ != workflows.WorkflowBuild {
		return nil
	}
	runID := r.runID
	bs := &pb.BuildStatus{Workflow: s.workflowPB(id, runID)}
	val, err := s.tc.QueryWorkflow(ctx, id, runID, workflows.QueryProgress)
	if err != nil {
		s.log.Warn("query workflow progress", "workflow_id", id, "err", err)
		return bs
	}
	var pr workflows.Progress
	if err := val.Get(&pr); err != nil {
		s.log.Warn("decode workflow progress", "workflow_id", id, "err", err)
		return bs
	}
	bs.Generation = pr.Generation
	bs.Phase = pr.Phase
	bs.Lag = pr.Lag
	bs.Backfill = &pb.BackfillProgress{
		RecordsDone: pr.Backfill.RecordsDone, Offset: pr.Backfill.Offset, EndOffset: pr.Backfill.EndOffset,
		RatePerSec: pr.Backfill.RatePerSec, Lag: max(pr.Backfill.EndOffset-pr.Backfill.Offset, 0),
	}
	return bs
}
