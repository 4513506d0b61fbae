package workflows

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/distcache/distcache/workflows/registry"
)

// Registry is the part of the projection registry the activities use; *registry.Store
// implements it.
type Registry interface {
	AllocateGenerationForRun(ctx context.Context, d Definition, workflowID, runID string) (gen, current int64, err error)
	SetState(ctx context.Context, name string, gen int64, state string, offset *int64) error
	RecordProgress(ctx context.Context, name string, gen, recordsDone, offset, endOffset int64) error
	Cutover(ctx context.Context, name string, gen int64, rollback bool, swap registry.SwapFunc) (current, previous int64, err error)
	MarkRetired(ctx context.Context, name string, gen int64) (bool, error)
	DeleteProjection(ctx context.Context, name string, clear registry.ClearFunc) (gens []int64, err error)
}

var _ Registry = (*registry.Store)(nil)

// Pointer is the Redis side, implemented by *distcache.Publisher: every pointer operation goes
// through it (Cutover, DeletePointer: each moves the pointer and appends the control event that
// clients follow, atomically).
type Pointer interface {
	Cutover(ctx context.Context, proj string, gen int64) error
	DeletePointer(ctx context.Context, proj string) error
	RetireGeneration(ctx context.Context, proj string, gen int64, batch int) (int64, error)
}

// Temporal is the part of the Temporal client the activities use; client.Client implements it.
type Temporal interface {
	DescribeWorkflow(ctx context.Context, workflowID, runID string) (*client.WorkflowExecutionDescription, error)
	ExecuteWorkflow(ctx context.Context, options client.StartWorkflowOptions, workflow interface{}, args ...interface{}) (client.WorkflowRun, error)
}

// Activities are the control-plane's activities (registry, pointer, retirement). Register them
// with RegisterActivities.
type Activities struct {
	Registry Registry
	Pointer  Pointer
	Temporal Temporal
	// UnlinkBatch is the SCAN COUNT / UNLINK batch size (0: 1000).
	UnlinkBatch int
	// RetireDrain is RetireWorkflowParams.Drain for scheduled retirements (0: DefaultDrain).
	RetireDrain time.Duration
	// BuildEnded, when set, is told each generation that ends a build: outcome BuildLive when a
	// cutover (not a rollback) made it current, BuildFailed when it was marked failed. An
	// activity retried after its registry write committed reports twice.
	BuildEnded func(projection, outcome string)
	Logger     *slog.Logger
}

// Build outcomes reported to Activities.BuildEnded.
const (
	BuildLive   = "live"
	BuildFailed = "failed"
)

// RegisterActivities registers a's activities on w under their Activity* names.
func RegisterActivities(w interface {
	RegisterActivityWithOptions(a interface{}, options activity.RegisterOptions)
}, a *Activities) {
	reg := func(f interface{}, name string) {
		w.RegisterActivityWithOptions(f, activity.RegisterOptions{Name: name})
	}
	reg(a.AllocateGeneration, ActivityAllocateGeneration)
	reg(a.SetGenerationState, ActivitySetGenerationState)
	reg(a.RecordProgress, ActivityRecordProgress)
	reg(a.Cutover, ActivityCutover)
	reg(a.MarkRetired, ActivityMarkRetired)
	reg(a.UnlinkGeneration, ActivityUnlinkGeneration)
	reg(a.DeleteProjection, ActivityDeleteProjection)
	reg(a.ScheduleRetire, ActivityScheduleRetire)
}

// appError maps registry sentinels to final application errors; anything else stays retryable.
func appError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, registry.ErrNotFound):
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeNotFound, err)
	case errors.Is(err, registry.ErrPrecondition), errors.Is(err, registry.ErrExists):
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypePrecondition, err)
	}
	return err
}

// AllocateGeneration implements ActivityAllocateGeneration.
func (a *Activities) AllocateGeneration(ctx context.Context, p AllocateParams) (AllocateResult, error) {
	if err := p.Definition.Validate(); err != nil {
		return AllocateResult{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeInvalidDefinition, err)
	}
	gen, current, err := a.Registry.AllocateGenerationForRun(ctx, p.Definition, p.WorkflowID, p.RunID)
	if err != nil {
		return AllocateResult{}, appError(err)
	}
	return AllocateResult{Generation: gen, Current: current}, nil
}

// SetGenerationState implements ActivitySetGenerationState.
func (a *Activities) SetGenerationState(ctx context.Context, p SetStateParams) error {
	if err := a.Registry.SetState(ctx, p.Projection, p.Generation, p.State, p.Offset); err != nil {
		return appError(err)
	}
	if p.State == StateFailed && a.BuildEnded != nil {
		a.BuildEnded(p.Projection, BuildFailed)
	}
	return nil
}

// RecordProgress implements ActivityRecordProgress. Without p.Progress it reads the last
// heartbeat of the pending backfill activity from Temporal; it returns the zero progress when
// the backfill has not heartbeated yet.
func (a *Activities) RecordProgress(ctx context.Context, p RecordProgressParams) (BackfillProgress, error) {
	pr := p.Progress
	if pr == nil {
		got, ok, err := a.lastHeartbeat(ctx, p)
		if err != nil {
			return BackfillProgress{}, err
		}
		if !ok {
			return BackfillProgress{}, nil
		}
		pr = &got
	}
	if err := a.Registry.RecordProgress(ctx, p.Projection, p.Generation, pr.RecordsDone, pr.Offset, pr.EndOffset); err != nil {
		return BackfillProgress{}, appError(err)
	}
	return *pr, nil
}

func (a *Activities) lastHeartbeat(ctx context.Context, p RecordProgressParams) (BackfillProgress, bool, error) {
	if a.Temporal == nil {
		return BackfillProgress{}, false, errors.New("record progress: no Temporal client")
	}
	desc, err := a.Temporal.DescribeWorkflow(ctx, p.WorkflowID, p.RunID)
	if err != nil {
		return BackfillProgress{}, false, fmt.Errorf("describe workflow %s: %w", p.WorkflowID, err)
	}
	for _, pa := range desc.RawResponse.GetPendingActivities() {
		if pa.GetActivityId() != p.ActivityID || pa.GetHeartbeatDetails() == nil {
			continue
		}
		var pr BackfillProgress
		if err := converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &pr); err != nil {
			return BackfillProgress{}, false, fmt.Errorf("decode backfill heartbeat: %w", err)
		}
		return pr, true, nil
	}
	return BackfillProgress{}, false, nil
}

// Cutover implements ActivityCutover: the Redis pointer swap happens inside the registry's
// transaction, so the registry records exactly the swaps that happened (a failed commit after a
// swap is repaired by the retry, which swaps to the same generation again).
func (a *Activities) Cutover(ctx context.Context, p CutoverParams) (CutoverResult, error) {
	current, previous, err := a.Registry.Cutover(ctx, p.Projection, p.Generation, p.Rollback, a.Pointer.Cutover)
	if err != nil {
		return CutoverResult{}, appError(err)
	}
	a.log().Info("cutover", "projection", p.Projection, "generation", current, "previous", previous, "rollback", p.Rollback)
	if !p.Rollback && a.BuildEnded != nil {
		a.BuildEnded(p.Projection, BuildLive)
	}
	return CutoverResult{Current: current, Previous: previous}, nil
}

// MarkRetired implements ActivityMarkRetired.
func (a *Activities) MarkRetired(ctx context.Context, p RetireParams) (MarkRetiredResult, error) {
	ok, err := a.Registry.MarkRetired(ctx, p.Projection, p.Generation)
	if err != nil {
		return MarkRetiredResult{}, appError(err)
	}
	return MarkRetiredResult{Retired: ok}, nil
}

// UnlinkGeneration implements ActivityUnlinkGeneration: SCAN + UNLINK in batches
// (distcache.Publisher.RetireGeneration), never KEYS.
func (a *Activities) UnlinkGeneration(ctx context.Context, p RetireParams) (UnlinkResult, error) {
	batch := a.UnlinkBatch
	if batch <= 0 {
		batch = 1000
	}
	n, err := a.Pointer.RetireGeneration(ctx, p.Projection, p.Generation, batch)
	if err != nil {
		return UnlinkResult{KeysUnlinked: n}, fmt.Errorf("unlink %s/g%d: %w", p.Projection, p.Generation, err)
	}
	a.log().Info("generation unlinked", "projection", p.Projection, "generation", p.Generation, "keys", n)
	return UnlinkResult{KeysUnlinked: n}, nil
}

// DeleteProjection implements ActivityDeleteProjection: soft-delete in the registry, which clears
// the Redis pointer while it holds the projection's lock (clients get a delete event, drop what
// they hold and answer ErrNoGeneration; every generation can then be unlinked) and returns the
// generations to unlink.
func (a *Activities) DeleteProjection(ctx context.Context, p RetireParams) (DeleteResult, error) {
	gens, err := a.Registry.DeleteProjection(ctx, p.Projection, a.Pointer.DeletePointer)
	if err != nil {
		return DeleteResult{}, appError(err)
	}
	return DeleteResult{Generations: gens}, nil
}

// ScheduleRetire implements ActivityScheduleRetire: it starts RetireWorkflow, replacing a running
// retirement of the same generation.
func (a *Activities) ScheduleRetire(ctx context.Context, p ScheduleRetireParams) error {
	if a.Temporal == nil {
		return errors.New("schedule retire: no Temporal client")
	}
	drain := a.RetireDrain
	if drain <= 0 {
		drain = DefaultDrain
	}
	opts := client.StartWorkflowOptions{
		ID:                       RetireWorkflowID(p.Projection, p.Generation),
		TaskQueue:                ControlPlaneTaskQueue,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_TERMINATE_EXISTING,
		StaticSummary:            fmt.Sprintf("retire %s generation %d", p.Projection, p.Generation),
	}
	if p.SearchAttributes {
		opts.TypedSearchAttributes = StartSearchAttributes(p.Projection, p.Generation, "")
	}
	_, err := a.Temporal.ExecuteWorkflow(ctx, opts, WorkflowRetire, RetireWorkflowParams{
		Projection: p.Projection, Generation: p.Generation, Grace: p.Grace, Drain: drain,
	})
	if err != nil {
		return fmt.Errorf("start retirement of %s/g%d: %w", p.Projection, p.Generation, err)
	}
	return nil
}

func (a *Activities) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}
