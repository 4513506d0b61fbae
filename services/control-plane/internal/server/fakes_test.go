package server_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/workflows/registry"
)

// memRegistry is an in-memory api.Registry for tests that are about the API edge (auth,
// validation, JSON); the real registry is tested against PostgreSQL in workflows/registry.
type memRegistry struct {
	mu    sync.Mutex
	projs map[string]registry.Projection
	// gens and rebuilds are what Generations and Rebuilds answer, by projection.
	gens     map[string][]registry.Generation
	rebuilds map[string]map[int64]registry.Rebuild
	// consumers is what Consumers answers, by projection.
	consumers map[string]map[int64]registry.Consumer
}

func newMemRegistry() *memRegistry { return &memRegistry{projs: map[string]registry.Projection{}} }

func (m *memRegistry) CreateProjection(_ context.Context, d projection.Definition) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.projs[d.Name]; ok {
		return fmt.Errorf("create %q: %w", d.Name, registry.ErrExists)
	}
	m.projs[d.Name] = registry.Projection{Definition: d}
	return nil
}

func (m *memRegistry) AbandonProjection(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.projs, name)
	return nil
}

func (m *memRegistry) GetProjection(_ context.Context, name string) (registry.Projection, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.projs[name]
	if !ok {
		return registry.Projection{}, fmt.Errorf("get %q: %w", name, registry.ErrNotFound)
	}
	return p, nil
}

func (m *memRegistry) ListProjections(_ context.Context, after string, limit int) ([]registry.Projection, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []string
	for n := range m.projs {
		if n > after {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []registry.Projection
	for _, n := range names {
		if len(out) == limit {
			break
		}
		out = append(out, m.projs[n])
	}
	return out, nil
}

func (m *memRegistry) Generations(_ context.Context, name string) ([]registry.Generation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gens[name], nil
}

func (m *memRegistry) Rebuilds(_ context.Context, name string) (map[int64]registry.Rebuild, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rebuilds[name], nil
}

func (m *memRegistry) Consumers(_ context.Context, name string) (map[int64]registry.Consumer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.consumers[name], nil
}

func (m *memRegistry) has(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.projs[name]
	return ok
}

// fakeTemporal starts nothing: it records the starts and refuses a second start of a running
// workflow id the way the server does (serviceerror.WorkflowExecutionAlreadyStarted).
type fakeTemporal struct {
	mu      sync.Mutex
	running map[string]bool
	starts  []client.StartWorkflowOptions
	args    []any
	// unavailable makes every start fail as a Temporal that does not answer does.
	unavailable bool
	// described are the runs DescribeWorkflow answers, by workflow id (NotFound otherwise), and
	// results what GetWorkflow(...).Get returns, by run id.
	described map[string]*client.WorkflowExecutionDescription
	results   map[string]error
}

// describe makes DescribeWorkflow answer a run of id (type typ, status st) with the given
// pending activities, whose result (once closed) is result.
func (f *fakeTemporal) describe(id, runID, typ string, st enumspb.WorkflowExecutionStatus, result error, pending ...*workflowpb.PendingActivityInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.described == nil {
		f.described, f.results = map[string]*client.WorkflowExecutionDescription{}, map[string]error{}
	}
	f.described[id] = &client.WorkflowExecutionDescription{RawResponse: &workflowservice.DescribeWorkflowExecutionResponse{
		WorkflowExecutionInfo: &workflowpb.WorkflowExecutionInfo{
			Execution: &commonpb.WorkflowExecution{WorkflowId: id, RunId: runID},
			Type:      &commonpb.WorkflowType{Name: typ},
			Status:    st,
		},
		PendingActivities: pending,
	}}
	f.results[runID] = result
	f.running[id] = st == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
}

func newFakeTemporal() *fakeTemporal { return &fakeTemporal{running: map[string]bool{}} }

func (f *fakeTemporal) ExecuteWorkflow(_ context.Context, o client.StartWorkflowOptions, _ interface{}, args ...interface{}) (client.WorkflowRun, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unavailable {
		return nil, serviceerror.NewUnavailable("connection refused")
	}
	if f.running[o.ID] && o.WorkflowIDConflictPolicy != enumspb.WORKFLOW_ID_CONFLICT_POLICY_TERMINATE_EXISTING {
		return nil, serviceerror.NewWorkflowExecutionAlreadyStarted("workflow execution already started", "", "run-1")
	}
	delete(f.described, o.ID)
	f.running[o.ID] = true
	f.starts = append(f.starts, o)
	f.args = append(f.args, args...)
	return fakeRun{id: o.ID, runID: fmt.Sprintf("run-%d", len(f.starts))}, nil
}

func (f *fakeTemporal) startedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, s := range f.starts {
		ids = append(ids, s.ID)
	}
	return slices.Clone(ids)
}

func (f *fakeTemporal) DescribeWorkflow(_ context.Context, id, _ string) (*client.WorkflowExecutionDescription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.described[id]; ok {
		return d, nil
	}
	return nil, serviceerror.NewNotFound("workflow " + id + " not found")
}

func (f *fakeTemporal) QueryWorkflow(context.Context, string, string, string, ...interface{}) (converter.EncodedValue, error) {
	return nil, serviceerror.NewNotFound("no workflow")
}

func (f *fakeTemporal) GetWorkflow(_ context.Context, id, runID string) client.WorkflowRun {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fakeRun{id: id, runID: runID, err: f.results[runID]}
}

type fakeRun struct {
	id, runID string
	err       error
}

func (r fakeRun) GetID() string                  { return r.id }
func (r fakeRun) GetRunID() string               { return r.runID }
func (r fakeRun) GetFirstExecutionRunID() string { return r.runID }
func (r fakeRun) Get(context.Context, any) error { return r.err }
func (r fakeRun) GetWithOptions(context.Context, any, client.WorkflowRunGetOptions) error {
	return nil
}

func (f *fakeTemporal) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running = map[string]bool{}
	f.starts = nil
	f.args = nil
}

func (m *memRegistry) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.projs = map[string]registry.Projection{}
}
