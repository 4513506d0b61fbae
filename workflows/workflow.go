package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/distcache/distcache/libs/projection"
)

// Register registers every workflow of this package on w (the control-plane's worker on
// ControlPlaneTaskQueue), under the names Workflow*.
func Register(w interface {
	RegisterWorkflowWithOptions(w interface{}, options workflow.RegisterOptions)
}) {
	w.RegisterWorkflowWithOptions(BuildWorkflow, workflow.RegisterOptions{Name: WorkflowBuild})
	w.RegisterWorkflowWithOptions(PointerWorkflow, workflow.RegisterOptions{Name: WorkflowPointer})
	w.RegisterWorkflowWithOptions(RetireWorkflow, workflow.RegisterOptions{Name: WorkflowRetire})
	w.RegisterWorkflowWithOptions(DeleteWorkflow, workflow.RegisterOptions{Name: WorkflowDelete})
}

// Activity options. Registry and pointer activities are short; their failures of kind NotFound /
// FailedPrecondition / InvalidDefinition are final.
var nonRetryable = []string{ErrTypeInvalidDefinition, ErrTypeNotFound, ErrTypePrecondition}

func controlPlaneOptions(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           ControlPlaneTaskQueue,
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        30 * time.Second,
			NonRetryableErrorTypes: nonRetryable,
		},
	})
}

// backfillActivityID is the activity id of the backfill, so ActivityRecordProgress finds its
// heartbeat among the workflow's pending activities.
const backfillActivityID = "backfill"

func backfillOptions(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		ActivityID:             backfillActivityID,
		TaskQueue:              CacheProducerTaskQueue,
		ScheduleToCloseTimeout: 24 * time.Hour,
		StartToCloseTimeout:    24 * time.Hour,
		HeartbeatTimeout:       BackfillHeartbeatTimeout,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			NonRetryableErrorTypes: nonRetryable,
		},
	})
}

func caughtUpOptions(ctx workflow.Context, timeout time.Duration) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              CacheProducerTaskQueue,
		ScheduleToCloseTimeout: timeout,
		StartToCloseTimeout:    time.Minute,
		// The retry policy is the poll loop: NotCaughtUp is retried with these intervals.
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        500 * time.Millisecond,
			BackoffCoefficient:     1.5,
			MaximumInterval:        5 * time.Second,
			NonRetryableErrorTypes: nonRetryable,
		},
	})
}

func unlinkOptions(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           ControlPlaneTaskQueue,
		StartToCloseTimeout: time.Hour,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    time.Minute,
		},
	})
}

// deleteOptions are DeleteWorkflow's: like the registry's and unlink's, with bounded attempts
// (DeleteAttempts): about 4 minutes of retries for a registry step, about 5 for an unlink.
func deleteOptions(ctx workflow.Context, timeout time.Duration) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           ControlPlaneTaskQueue,
		StartToCloseTimeout: timeout,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			MaximumAttempts:        DeleteAttempts,
			NonRetryableErrorTypes: nonRetryable,
		},
	})
}

func invalid(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeInvalidDefinition, nil)
}

// buildState is BuildWorkflow's progress, answered by the "progress" query and mirrored in the
// "progress" memo, the workflow's current details and (searchAttrs) its search attributes.
type buildState struct {
	ctx      workflow.Context
	progress Progress
	// searchAttrs: BuildParams.SearchAttributes; sa is what was upserted last.
	searchAttrs bool
	sa          searchAttrState
}

func (s *buildState) set(phase string) {
	s.progress.Phase = phase
	s.publish()
}

func (s *buildState) publish() {
	s.progress.UpdatedAt = workflow.Now(s.ctx)
	workflow.SetCurrentDetails(s.ctx, s.progress.Details())
	// A memo update is best effort: progress stays queryable when it fails.
	if err := workflow.UpsertMemo(s.ctx, map[string]interface{}{MemoProgress: s.progress}); err != nil {
		workflow.GetLogger(s.ctx).Warn("upsert progress memo", "err", err)
	}
	if s.searchAttrs {
		s.sa.upsert(s.ctx, s.progress.Projection, s.progress.Generation, s.progress.Phase)
	}
}

// searchAttrState upserts a workflow's search attributes when they change (each upsert is a
// history event, so progress updates that leave them alone add none).
type searchAttrState struct {
	projection string
	generation int64
	phase      string
}

func (s *searchAttrState) upsert(ctx workflow.Context, projection string, generation int64, phase string) {
	var u []temporal.SearchAttributeUpdate
	if projection != s.projection {
		u = append(u, SearchAttrProjection.ValueSet(projection))
	}
	if generation != s.generation && generation > 0 {
		u = append(u, SearchAttrGeneration.ValueSet(generation))
	}
	if phase != s.phase && phase != "" {
		u = append(u, SearchAttrPhase.ValueSet(phase))
	}
	if len(u) == 0 {
		return
	}
	// Best effort, as the memo: the error is the SDK's own validation, never the server's.
	if err := workflow.UpsertTypedSearchAttributes(ctx, u...); err != nil {
		workflow.GetLogger(ctx).Warn("upsert search attributes", "err", err)
		return
	}
	s.projection, s.generation, s.phase = projection, max(generation, s.generation), phase
}

// BuildWorkflow builds a new generation of a projection (create, update or replay) and cuts
// readers over to it: allocate → backfill (cache-producer) → tailing → caught up (cache-producer)
// → cutover (pointer swap, control event, live) → schedule the retirement of the replaced
// generation after RetireGrace. Its workflow id is BuildWorkflowID(name).
func BuildWorkflow(ctx workflow.Context, p BuildParams) (BuildResult, error) {
	if err := p.Definition.Validate(); err != nil {
		return BuildResult{}, invalid(err)
	}
	if p.Topic == "" {
		return BuildResult{}, invalid(errors.New("topic: is required"))
	}
	if p.MaxLag < 0 {
		return BuildResult{}, invalid(errors.New("max_lag: must not be negative"))
	}
	if p.CatchUpTimeout <= 0 {
		p.CatchUpTimeout = DefaultCatchUpTimeout
	}
	if p.ProgressInterval <= 0 {
		p.ProgressInterval = DefaultProgressInterval
	}
	if p.RetireGrace < 0 {
		p.RetireGrace = 0
	}
	name := p.Definition.Name
	st := &buildState{ctx: ctx, progress: Progress{Projection: name}, searchAttrs: p.SearchAttributes}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return st.progress, nil }); err != nil {
		return BuildResult{}, fmt.Errorf("set query handler: %w", err)
	}
	st.set(PhaseAllocating)

	cp := controlPlaneOptions(ctx)
	info := workflow.GetInfo(ctx)
	var alloc AllocateResult
	if err := workflow.ExecuteActivity(cp, ActivityAllocateGeneration, AllocateParams{
		Definition: p.Definition, WorkflowID: info.WorkflowExecution.ID, RunID: info.WorkflowExecution.RunID,
	}).Get(ctx, &alloc); err != nil {
		st.set(PhaseFailed)
		return BuildResult{}, fmt.Errorf("allocate generation: %w", err)
	}
	gen := alloc.Generation
	st.progress.Generation = gen

	res, err := buildGeneration(ctx, st, p, gen)
	if err != nil {
		st.set(PhaseFailed)
		failGeneration(ctx, name, gen)
		return BuildResult{}, err
	}
	res.Generation = gen

	st.set(PhaseCuttingOver)
	var cut CutoverResult
	if err := workflow.ExecuteActivity(cp, ActivityCutover, CutoverParams{Projection: name, Generation: gen}).Get(ctx, &cut); err != nil {
		st.set(PhaseFailed)
		failGeneration(ctx, name, gen)
		return BuildResult{}, fmt.Errorf("cutover to generation %d: %w", gen, err)
	}
	res.Previous = cut.Previous
	st.set(PhaseLive)
	if cut.Previous != 0 && cut.Previous != gen {
		if err := scheduleRetire(ctx, name, cut.Previous, p.RetireGrace, p.SearchAttributes); err != nil {
			// The new generation is live; a retirement that could not be scheduled leaves the old
			// keys behind, which the registry shows as retiring. Report it as the workflow's error.
			return res, fmt.Errorf("schedule retirement of generation %d: %w", cut.Previous, err)
		}
	}
	return res, nil
}

// buildGeneration runs the backfill and the catch-up of generation gen.
func buildGeneration(ctx workflow.Context, st *buildState, p BuildParams, gen int64) (BuildResult, error) {
	name := p.Definition.Name
	cp := controlPlaneOptions(ctx)
	if err := workflow.ExecuteActivity(cp, ActivitySetGenerationState, SetStateParams{
		Projection: name, Generation: gen, State: StateBackfilling,
	}).Get(ctx, nil); err != nil {
		return BuildResult{}, fmt.Errorf("mark generation %d backfilling: %w", gen, err)
	}
	st.set(PhaseBackfilling)

	bf, err := backfill(ctx, st, p, gen)
	if err != nil {
		return BuildResult{}, err
	}
	end := bf.EndOffset
	if err := workflow.ExecuteActivity(cp, ActivitySetGenerationState, SetStateParams{
		Projection: name, Generation: gen, State: StateTailing, Offset: &end,
	}).Get(ctx, nil); err != nil {
		return BuildResult{}, fmt.Errorf("mark generation %d tailing: %w", gen, err)
	}

	st.set(PhaseCatchingUp)
	var cu CaughtUpResult
	if err := workflow.ExecuteActivity(caughtUpOptions(ctx, p.CatchUpTimeout), ActivityCaughtUp, CaughtUpParams{
		Projection: name, Generation: gen, Topic: p.Topic, MaxLag: p.MaxLag,
	}).Get(ctx, &cu); err != nil {
		return BuildResult{}, fmt.Errorf("wait for generation %d to catch up: %w", gen, err)
	}
	st.progress.Lag = cu.Lag
	return BuildResult{Backfill: bf}, nil
}

// backfill runs ActivityBackfill and, every ProgressInterval while it runs, copies its last
// heartbeat into the registry, the progress query and the memo.
func backfill(ctx workflow.Context, st *buildState, p BuildParams, gen int64) (BackfillProgress, error) {
	name := p.Definition.Name
	cp := controlPlaneOptions(ctx)
	// Progress polls are best effort: one attempt each, the next poll tries again.
	pollCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           ControlPlaneTaskQueue,
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	info := workflow.GetInfo(ctx)
	fut := workflow.ExecuteActivity(backfillOptions(ctx), ActivityBackfill, BackfillParams{
		Projection: name, Generation: gen, Topic: p.Topic, Definition: p.Definition,
	})
	interval := p.ProgressInterval
	for polls, done := 0, false; !done; polls++ {
		// Every poll adds a few history events; a long backfill polls less often (the interval
		// doubles every 100 polls, up to a minute) so its history stays far below Temporal's limits.
		if polls > 0 && polls%100 == 0 && interval < time.Minute {
			interval = min(2*interval, time.Minute)
		}
		timerCtx, cancelTimer := workflow.WithCancel(ctx)
		timer := workflow.NewTimer(timerCtx, interval)
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(fut, func(workflow.Future) { done = true })
		sel.AddFuture(timer, func(workflow.Future) {})
		sel.Select(ctx)
		cancelTimer()
		if done {
			break
		}
		var pr BackfillProgress
		err := workflow.ExecuteActivity(pollCtx, ActivityRecordProgress, RecordProgressParams{
			Projection: name, Generation: gen, WorkflowID: info.WorkflowExecution.ID,
			RunID: info.WorkflowExecution.RunID, ActivityID: backfillActivityID,
		}).Get(ctx, &pr)
		if err != nil {
			workflow.GetLogger(ctx).Warn("record backfill progress", "err", err)
			continue
		}
		if pr != (BackfillProgress{}) && pr != st.progress.Backfill {
			st.progress.Backfill = pr
			st.publish()
		}
	}
	var bf BackfillProgress
	if err := fut.Get(ctx, &bf); err != nil {
		return BackfillProgress{}, fmt.Errorf("backfill generation %d: %w", gen, err)
	}
	st.progress.Backfill = bf
	st.publish()
	if err := workflow.ExecuteActivity(cp, ActivityRecordProgress, RecordProgressParams{
		Projection: name, Generation: gen, Progress: &bf,
	}).Get(ctx, nil); err != nil {
		return BackfillProgress{}, fmt.Errorf("record backfill result: %w", err)
	}
	return bf, nil
}

// failGeneration marks a generation failed (cache-producers stop consuming it) and unlinks the
// keys it may have written, in a disconnected context so it also runs when the workflow is
// cancelled.
func failGeneration(ctx workflow.Context, name string, gen int64) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	log := workflow.GetLogger(ctx)
	if err := workflow.ExecuteActivity(controlPlaneOptions(dctx), ActivitySetGenerationState, SetStateParams{
		Projection: name, Generation: gen, State: StateFailed,
	}).Get(dctx, nil); err != nil {
		log.Error("mark generation failed", "generation", gen, "err", err)
		return
	}
	if err := workflow.Sleep(dctx, DefaultDrain); err != nil {
		log.Error("drain failed generation", "generation", gen, "err", err)
		return
	}
	if err := workflow.ExecuteActivity(unlinkOptions(dctx), ActivityUnlinkGeneration, RetireParams{
		Projection: name, Generation: gen,
	}).Get(dctx, nil); err != nil {
		log.Error("unlink failed generation", "generation", gen, "err", err)
	}
}

// ScheduleRetireParams is the input of ActivityScheduleRetire.
type ScheduleRetireParams struct {
	Projection string        `json:"projection"`
	Generation int64         `json:"generation"`
	Grace      time.Duration `json:"grace"`
	// SearchAttributes: start the retirement with DistcacheProjection and DistcacheGeneration
	// (they are registered; see BuildParams.SearchAttributes).
	SearchAttributes bool `json:"search_attributes,omitempty"`
}

// ActivityScheduleRetire starts RetireWorkflow for a generation (replacing a pending one of the
// same generation, whose grace then starts over).
const ActivityScheduleRetire = "distcache.ScheduleRetire"

func scheduleRetire(ctx workflow.Context, name string, gen int64, grace time.Duration, searchAttrs bool) error {
	return workflow.ExecuteActivity(controlPlaneOptions(ctx), ActivityScheduleRetire, ScheduleRetireParams{
		Projection: name, Generation: gen, Grace: grace, SearchAttributes: searchAttrs,
	}).Get(ctx, nil)
}

// PointerWorkflow moves a projection's pointer: to PointerParams.Generation, or with Rollback to
// the previous generation while it is retained. The generation it replaces is retired after
// RetireGrace. Its workflow id is PointerWorkflowID(name).
func PointerWorkflow(ctx workflow.Context, p PointerParams) (CutoverResult, error) {
	if err := projection.CheckName("projection", p.Projection); err != nil {
		return CutoverResult{}, invalid(err)
	}
	if !p.Rollback && p.Generation <= 0 {
		return CutoverResult{}, invalid(errors.New("generation: must be positive"))
	}
	var cut CutoverResult
	if err := workflow.ExecuteActivity(controlPlaneOptions(ctx), ActivityCutover, CutoverParams{
		Projection: p.Projection, Generation: p.Generation, Rollback: p.Rollback,
	}).Get(ctx, &cut); err != nil {
		return CutoverResult{}, fmt.Errorf("cutover: %w", err)
	}
	if cut.Previous != 0 && cut.Previous != cut.Current {
		if err := scheduleRetire(ctx, p.Projection, cut.Previous, max(p.RetireGrace, 0), p.SearchAttributes); err != nil {
			return cut, fmt.Errorf("schedule retirement of generation %d: %w", cut.Previous, err)
		}
	}
	return cut, nil
}

// RetireWorkflow waits Grace, marks the generation retired unless it became current again, waits
// Drain for consumers to stop writing it, then SCANs and UNLINKs its keys. Its workflow id is
// RetireWorkflowID(name, generation).
func RetireWorkflow(ctx workflow.Context, p RetireWorkflowParams) (UnlinkResult, error) {
	if err := projection.CheckName("projection", p.Projection); err != nil {
		return UnlinkResult{}, invalid(err)
	}
	if p.Drain <= 0 {
		p.Drain = DefaultDrain
	}
	if p.Grace > 0 {
		if err := workflow.Sleep(ctx, p.Grace); err != nil {
			return UnlinkResult{}, err
		}
	}
	var mr MarkRetiredResult
	rp := RetireParams{Projection: p.Projection, Generation: p.Generation}
	if err := workflow.ExecuteActivity(controlPlaneOptions(ctx), ActivityMarkRetired, rp).Get(ctx, &mr); err != nil {
		return UnlinkResult{}, fmt.Errorf("mark generation %d retired: %w", p.Generation, err)
	}
	if !mr.Retired {
		return UnlinkResult{}, nil
	}
	if err := workflow.Sleep(ctx, p.Drain); err != nil {
		return UnlinkResult{}, err
	}
	var ur UnlinkResult
	if err := workflow.ExecuteActivity(unlinkOptions(ctx), ActivityUnlinkGeneration, rp).Get(ctx, &ur); err != nil {
		return UnlinkResult{}, fmt.Errorf("unlink generation %d: %w", p.Generation, err)
	}
	return ur, nil
}

// DeleteWorkflow soft-deletes a projection in the registry (every generation retired, the pointer
// cleared), waits Drain, and unlinks every generation's keys. Its workflow id is
// BuildWorkflowID(name), so it cannot run beside a build: DeleteProjection terminates a running
// build to start it (TerminatedBuild). Each step's attempts are bounded (DeleteAttempts); a delete
// that gives up fails with the step's error, and starting it again is safe (every step is
// idempotent).
func DeleteWorkflow(ctx workflow.Context, p DeleteParams) (UnlinkResult, error) {
	if err := projection.CheckName("projection", p.Projection); err != nil {
		return UnlinkResult{}, invalid(err)
	}
	if p.Drain <= 0 {
		p.Drain = DefaultDrain
	}
	if p.TerminatedBuild {
		p.Drain = max(p.Drain, BackfillHeartbeatTimeout)
	}
	var sa searchAttrState
	phase := func(ph, details string) {
		workflow.SetCurrentDetails(ctx, fmt.Sprintf("**%s** · projection %s\n\n%s", ph, p.Projection, details))
		if p.SearchAttributes {
			sa.upsert(ctx, p.Projection, 0, ph)
		}
	}
	phase(PhaseDeleting, "clearing the pointer and retiring every generation")
	total, err := deleteSteps(ctx, p, phase)
	if err != nil {
		phase(PhaseDeleteFailed, err.Error())
		return total, err
	}
	phase(PhaseDeleted, fmt.Sprintf("%d keys unlinked", total.KeysUnlinked))
	return total, nil
}

// deleteSteps runs DeleteWorkflow's steps, reporting each through phase.
func deleteSteps(ctx workflow.Context, p DeleteParams, phase func(ph, details string)) (UnlinkResult, error) {
	var del DeleteResult
	if err := workflow.ExecuteActivity(deleteOptions(ctx, 30*time.Second), ActivityDeleteProjection, RetireParams{
		Projection: p.Projection,
	}).Get(ctx, &del); err != nil {
		return UnlinkResult{}, fmt.Errorf("delete projection: %w", err)
	}
	phase(PhaseDeleting, fmt.Sprintf("draining for %s before unlinking generations %v", p.Drain, del.Generations))
	if err := workflow.Sleep(ctx, p.Drain); err != nil {
		return UnlinkResult{}, err
	}
	var total UnlinkResult
	for i, gen := range del.Generations {
		phase(PhaseDeleting, fmt.Sprintf("unlinking generation %d (%d of %d), %d keys so far", gen, i+1, len(del.Generations), total.KeysUnlinked))
		var ur UnlinkResult
		if err := workflow.ExecuteActivity(deleteOptions(ctx, time.Hour), ActivityUnlinkGeneration, RetireParams{
			Projection: p.Projection, Generation: gen,
		}).Get(ctx, &ur); err != nil {
			return total, fmt.Errorf("unlink generation %d: %w", gen, err)
		}
		total.KeysUnlinked += ur.KeysUnlinked
	}
	return total, nil
}
