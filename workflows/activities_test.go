package workflows

import (
	"context"
	"errors"
	"fmt"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/distcache/distcache/workflows/registry"
)

// fakeRegistry answers every call with err (and records progress).
type fakeRegistry struct {
	err      error
	progress [3]int64
}

func (f *fakeRegistry) AllocateGenerationForRun(context.Context, Definition, string, string) (int64, int64, error) {
	return 1, 0, f.err
}
func (f *fakeRegistry) SetState(context.Context, string, int64, string, *int64) error { return f.err }
func (f *fakeRegistry) RecordProgress(_ context.Context, _ string, _, done, off, end int64) error {
	f.progress = [3]int64{done, off, end}
	return f.err
}
func (f *fakeRegistry) Cutover(ctx context.Context, name string, gen int64, _ bool, swap registry.SwapFunc) (int64, int64, error) {
	if f.err != nil {
		return 0, 0, f.err
	}
	return gen, 0, swap(ctx, name, gen)
}
func (f *fakeRegistry) MarkRetired(context.Context, string, int64) (bool, error) { return true, f.err }
func (f *fakeRegistry) DeleteProjection(ctx context.Context, name string, clear registry.ClearFunc) ([]int64, error) {
	if f.err != nil {
		return nil, f.err
	}
	return []int64{1}, clear(ctx, name)
}

// fakeDescriber returns one pending activity with the given heartbeat.
type fakeDescriber struct {
	activityID string
	heartbeat  *BackfillProgress
	err        error
}

func (f fakeDescriber) DescribeWorkflow(context.Context, string, string) (*client.WorkflowExecutionDescription, error) {
	if f.err != nil {
		return nil, f.err
	}
	resp := &workflowservice.DescribeWorkflowExecutionResponse{}
	if f.heartbeat != nil {
		details, err := converter.GetDefaultDataConverter().ToPayloads(*f.heartbeat)
		if err != nil {
			return nil, err
		}
		resp.PendingActivities = append(resp.PendingActivities, pendingActivity(f.activityID, details))
	}
	return &client.WorkflowExecutionDescription{RawResponse: resp}, nil
}

func (fakeDescriber) ExecuteWorkflow(context.Context, client.StartWorkflowOptions, interface{}, ...interface{}) (client.WorkflowRun, error) {
	return nil, errors.New("not used")
}

func TestActivityErrorsAreTyped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		regErr   error
		call     func(*Activities) error
		wantType string
	}{
		{name: "cutover precondition", regErr: fmt.Errorf("cutover: %w", registry.ErrPrecondition),
			call: func(a *Activities) error {
				_, err := a.Cutover(context.Background(), CutoverParams{Projection: "p", Rollback: true})
				return err
			},
			wantType: ErrTypePrecondition},
		{name: "set state not found", regErr: fmt.Errorf("x: %w", registry.ErrNotFound),
			call: func(a *Activities) error {
				return a.SetGenerationState(context.Background(), SetStateParams{Projection: "p", Generation: 9})
			},
			wantType: ErrTypeNotFound},
		{name: "allocate invalid definition",
			call: func(a *Activities) error {
				_, err := a.AllocateGeneration(context.Background(), AllocateParams{Definition: Definition{Name: "p"}})
				return err
			},
			wantType: ErrTypeInvalidDefinition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &Activities{Registry: &fakeRegistry{err: tt.regErr}, Pointer: nopPointer{}}
			err := tt.call(a)
			if !hasAppErrorType(err, tt.wantType) {
				t.Fatalf("error = %v, want application error type %s", err, tt.wantType)
			}
		})
	}
	// A plain database failure stays retryable (no application error type).
	a := &Activities{Registry: &fakeRegistry{err: errors.New("connection reset")}}
	err := a.SetGenerationState(context.Background(), SetStateParams{Projection: "p", Generation: 1})
	if err == nil || hasAppErrorType(err, ErrTypeNotFound) || hasAppErrorType(err, ErrTypePrecondition) {
		t.Errorf("transient error = %v, want it untyped (retryable)", err)
	}
}

func TestRecordProgressReadsTheBackfillHeartbeat(t *testing.T) {
	t.Parallel()
	hb := BackfillProgress{Offset: 70, EndOffset: 100, RecordsDone: 70, RatePerSec: 12.5}
	tests := []struct {
		name    string
		desc    fakeDescriber
		want    BackfillProgress
		wantErr bool
	}{
		{name: "heartbeat present", desc: fakeDescriber{activityID: backfillActivityID, heartbeat: &hb}, want: hb},
		{name: "no heartbeat yet", desc: fakeDescriber{}, want: BackfillProgress{}},
		{name: "other activity", desc: fakeDescriber{activityID: "other", heartbeat: &hb}, want: BackfillProgress{}},
		{name: "describe fails", desc: fakeDescriber{err: serviceerror.NewUnavailable("down")}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := &fakeRegistry{}
			a := &Activities{Registry: reg, Temporal: tt.desc}
			got, err := a.RecordProgress(context.Background(), RecordProgressParams{
				Projection: "p", Generation: 1, WorkflowID: "projection/p", ActivityID: backfillActivityID,
			})
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error, want the describe failure")
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("RecordProgress = %+v, %v; want %+v", got, err, tt.want)
			}
			if tt.want != (BackfillProgress{}) && reg.progress != [3]int64{70, 70, 100} {
				t.Errorf("registry progress = %v, want [70 70 100]", reg.progress)
			}
		})
	}
}

func pendingActivity(id string, details *commonpb.Payloads) *workflowpb.PendingActivityInfo {
	return &workflowpb.PendingActivityInfo{ActivityId: id, HeartbeatDetails: details}
}

type nopPointer struct{}

func (nopPointer) Cutover(context.Context, string, int64) error { return nil }
func (nopPointer) RetireGeneration(context.Context, string, int64, int) (int64, error) {
	return 0, nil
}
func (nopPointer) DeletePointer(context.Context, string) error { return nil }

func TestBuildEndedReportsOutcomes(t *testing.T) {
	t.Parallel()
	var got []string
	a := &Activities{Registry: &fakeRegistry{}, Pointer: nopPointer{},
		BuildEnded: func(p, outcome string) { got = append(got, p+":"+outcome) }}
	ctx := context.Background()
	for _, st := range []string{StateBackfilling, StateTailing, StateFailed} {
		if err := a.SetGenerationState(ctx, SetStateParams{Projection: "p", Generation: 2, State: st}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Cutover(ctx, CutoverParams{Projection: "q", Generation: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Cutover(ctx, CutoverParams{Projection: "q", Rollback: true}); err != nil {
		t.Fatal(err)
	}
	// A registry write that failed reports nothing.
	a.Registry = &fakeRegistry{err: errors.New("connection reset")}
	_ = a.SetGenerationState(ctx, SetStateParams{Projection: "r", Generation: 1, State: StateFailed})
	_, _ = a.Cutover(ctx, CutoverParams{Projection: "r", Generation: 1})
	want := []string{"p:" + BuildFailed, "q:" + BuildLive}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("BuildEnded saw %v, want %v (no rollback, no intermediate state, no failed write)", got, want)
	}
}
