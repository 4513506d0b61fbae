package workflows

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
)

func testDef() Definition {
	return Definition{Name: "users_by_email", Model: "users", KeyTemplate: "{email}", LowercaseKey: true, Fields: []string{"id", "email"}}
}

// newEnv returns a test workflow environment with every workflow and every activity name
// registered (stubs that fail if a test forgets to mock them).
func newEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	s.SetLogger(log.NewStructuredLogger(slog.New(slog.DiscardHandler)))
	env := s.NewTestWorkflowEnvironment()
	Register(env)
	RegisterActivities(env, &Activities{})
	env.RegisterActivityWithOptions(func(context.Context, BackfillParams) (BackfillProgress, error) {
		return BackfillProgress{}, errors.New("unmocked backfill")
	}, activity.RegisterOptions{Name: ActivityBackfill})
	env.RegisterActivityWithOptions(func(context.Context, CaughtUpParams) (CaughtUpResult, error) {
		return CaughtUpResult{}, errors.New("unmocked caught-up")
	}, activity.RegisterOptions{Name: ActivityCaughtUp})
	return env
}

// stateLog records SetGenerationState calls in order.
type stateLog struct {
	mu     sync.Mutex
	states []SetStateParams
}

func (l *stateLog) record(_ context.Context, p SetStateParams) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.states = append(l.states, p)
	return nil
}

func (l *stateLog) names() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.states {
		out = append(out, s.State)
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBuildWorkflowCreate(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	states := &stateLog{}
	final := BackfillProgress{Offset: 1000, EndOffset: 1000, RecordsDone: 1000, RatePerSec: 5000}
	env.OnActivity(ActivityAllocateGeneration, mock.Anything, mock.Anything).Return(AllocateResult{Generation: 1}, nil).Once()
	env.OnActivity(ActivitySetGenerationState, mock.Anything, mock.Anything).Return(states.record)
	env.OnActivity(ActivityBackfill, mock.Anything, mock.MatchedBy(func(p BackfillParams) bool {
		return p.Projection == "users_by_email" && p.Generation == 1 && p.Topic == "distcache.users" && p.Definition.Equal(testDef())
	})).Return(final, nil).Once()
	env.OnActivity(ActivityRecordProgress, mock.Anything, mock.MatchedBy(func(p RecordProgressParams) bool {
		return p.Progress != nil && *p.Progress == final
	})).Return(final, nil).Once()
	env.OnActivity(ActivityCaughtUp, mock.Anything, CaughtUpParams{Projection: "users_by_email", Generation: 1, Topic: "distcache.users", MaxLag: 5}).
		Return(CaughtUpResult{Offset: 1000, HighWatermark: 1003, Lag: 3}, nil).Once()
	env.OnActivity(ActivityCutover, mock.Anything, CutoverParams{Projection: "users_by_email", Generation: 1}).
		Return(CutoverResult{Current: 1}, nil).Once()

	env.ExecuteWorkflow(WorkflowBuild, BuildParams{Definition: testDef(), Topic: "distcache.users", Reason: ReasonCreate, MaxLag: 5})

	if !env.IsWorkflowCompleted() {
		t.Fatal("workflow did not complete")
	}
	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	var got BuildResult
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	if want := (BuildResult{Generation: 1, Backfill: final}); got != want {
		t.Errorf("result = %+v, want %+v", got, want)
	}
	if got, want := states.names(), []string{StateBackfilling, StateTailing}; !equalStrings(got, want) {
		t.Errorf("states = %v, want %v", got, want)
	}
	if off := states.states[1].Offset; off == nil || *off != 1000 {
		t.Errorf("tailing offset = %v, want 1000 (the backfill's end)", off)
	}
	env.AssertExpectations(t)
	env.AssertActivityNotCalled(t, ActivityScheduleRetire, mock.Anything, mock.Anything)

	v, err := env.QueryWorkflow(QueryProgress)
	if err != nil {
		t.Fatal(err)
	}
	var pr Progress
	if err := v.Get(&pr); err != nil {
		t.Fatal(err)
	}
	if pr.Phase != PhaseLive || pr.Generation != 1 || pr.Backfill != final || pr.Lag != 3 {
		t.Errorf("progress = %+v, want phase live, generation 1, backfill %+v, lag 3", pr, final)
	}
}

func TestBuildWorkflowReplaySchedulesRetirement(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	env.OnActivity(ActivityAllocateGeneration, mock.Anything, mock.Anything).Return(AllocateResult{Generation: 4, Current: 3}, nil)
	env.OnActivity(ActivitySetGenerationState, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(ActivityBackfill, mock.Anything, mock.Anything).Return(BackfillProgress{Offset: 10, EndOffset: 10, RecordsDone: 10}, nil)
	env.OnActivity(ActivityRecordProgress, mock.Anything, mock.Anything).Return(BackfillProgress{}, nil)
	env.OnActivity(ActivityCaughtUp, mock.Anything, mock.Anything).Return(CaughtUpResult{}, nil)
	env.OnActivity(ActivityCutover, mock.Anything, mock.Anything).Return(CutoverResult{Current: 4, Previous: 3}, nil)
	env.OnActivity(ActivityScheduleRetire, mock.Anything, ScheduleRetireParams{Projection: "users_by_email", Generation: 3, Grace: 90 * time.Second}).
		Return(nil).Once()

	env.ExecuteWorkflow(WorkflowBuild, BuildParams{Definition: testDef(), Topic: "t", Reason: ReasonReplay, RetireGrace: 90 * time.Second})

	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	var got BuildResult
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	if got.Generation != 4 || got.Previous != 3 {
		t.Errorf("result = %+v, want generation 4, previous 3", got)
	}
	env.AssertExpectations(t)
}

func TestBuildWorkflowRejectsInvalidDefinition(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	def := testDef()
	def.KeyTemplate = "{email"
	env.ExecuteWorkflow(WorkflowBuild, BuildParams{Definition: def, Topic: "t"})
	err := env.GetWorkflowError()
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) {
		t.Fatalf("error = %v, want an application error", err)
	}
	if appErr.Type() != ErrTypeInvalidDefinition || !appErr.NonRetryable() {
		t.Errorf("error type %q non-retryable %v, want %q non-retryable", appErr.Type(), appErr.NonRetryable(), ErrTypeInvalidDefinition)
	}
	env.AssertActivityNotCalled(t, ActivityAllocateGeneration, mock.Anything, mock.Anything)
}

func TestBuildWorkflowBackfillFailureFailsGeneration(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	states := &stateLog{}
	env.OnActivity(ActivityAllocateGeneration, mock.Anything, mock.Anything).Return(AllocateResult{Generation: 2, Current: 1}, nil)
	env.OnActivity(ActivitySetGenerationState, mock.Anything, mock.Anything).Return(states.record)
	env.OnActivity(ActivityBackfill, mock.Anything, mock.Anything).
		Return(BackfillProgress{}, temporal.NewNonRetryableApplicationError("bad definition", ErrTypeInvalidDefinition, nil))
	env.OnActivity(ActivityUnlinkGeneration, mock.Anything, RetireParams{Projection: "users_by_email", Generation: 2}).
		Return(UnlinkResult{KeysUnlinked: 7}, nil).Once()

	env.ExecuteWorkflow(WorkflowBuild, BuildParams{Definition: testDef(), Topic: "t"})

	if err := env.GetWorkflowError(); err == nil {
		t.Fatal("workflow succeeded, want the backfill's error")
	}
	if got, want := states.names(), []string{StateBackfilling, StateFailed}; !equalStrings(got, want) {
		t.Errorf("states = %v, want %v", got, want)
	}
	env.AssertExpectations(t)
	env.AssertActivityNotCalled(t, ActivityCutover, mock.Anything, mock.Anything)
	env.AssertActivityNotCalled(t, ActivityCaughtUp, mock.Anything, mock.Anything)
}

func TestBuildWorkflowPollsUntilCaughtUp(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	var calls int
	env.OnActivity(ActivityAllocateGeneration, mock.Anything, mock.Anything).Return(AllocateResult{Generation: 1}, nil)
	env.OnActivity(ActivitySetGenerationState, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(ActivityBackfill, mock.Anything, mock.Anything).Return(BackfillProgress{}, nil)
	env.OnActivity(ActivityRecordProgress, mock.Anything, mock.Anything).Return(BackfillProgress{}, nil)
	env.OnActivity(ActivityCaughtUp, mock.Anything, mock.Anything).Return(func(context.Context, CaughtUpParams) (CaughtUpResult, error) {
		calls++
		if calls < 4 {
			return CaughtUpResult{}, temporal.NewApplicationError("lag 50", ErrTypeNotCaughtUp)
		}
		return CaughtUpResult{Lag: 0}, nil
	})
	env.OnActivity(ActivityCutover, mock.Anything, mock.Anything).Return(CutoverResult{Current: 1}, nil)

	env.ExecuteWorkflow(WorkflowBuild, BuildParams{Definition: testDef(), Topic: "t"})

	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	if calls != 4 {
		t.Errorf("CaughtUp attempts = %d, want 4", calls)
	}
}

func TestBuildWorkflowCatchUpTimeoutFails(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	env.OnActivity(ActivityAllocateGeneration, mock.Anything, mock.Anything).Return(AllocateResult{Generation: 1}, nil)
	env.OnActivity(ActivitySetGenerationState, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(ActivityBackfill, mock.Anything, mock.Anything).Return(BackfillProgress{}, nil)
	env.OnActivity(ActivityRecordProgress, mock.Anything, mock.Anything).Return(BackfillProgress{}, nil)
	env.OnActivity(ActivityCaughtUp, mock.Anything, mock.Anything).Return(CaughtUpResult{}, temporal.NewApplicationError("lag", ErrTypeNotCaughtUp))
	env.OnActivity(ActivityUnlinkGeneration, mock.Anything, mock.Anything).Return(UnlinkResult{}, nil)

	env.ExecuteWorkflow(WorkflowBuild, BuildParams{Definition: testDef(), Topic: "t", CatchUpTimeout: time.Minute})

	if err := env.GetWorkflowError(); err == nil {
		t.Fatal("workflow succeeded although the generation never caught up")
	}
	env.AssertActivityNotCalled(t, ActivityCutover, mock.Anything, mock.Anything)
}

func TestBuildWorkflowProgressWhileBackfilling(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	mid := BackfillProgress{Offset: 400, EndOffset: 1000, RecordsDone: 400, RatePerSec: 80}
	env.OnActivity(ActivityAllocateGeneration, mock.Anything, mock.Anything).Return(AllocateResult{Generation: 1}, nil)
	env.OnActivity(ActivitySetGenerationState, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(ActivityBackfill, mock.Anything, mock.Anything).After(time.Minute).
		Return(BackfillProgress{Offset: 1000, EndOffset: 1000, RecordsDone: 1000}, nil)
	// A poll (no Progress given) reads the heartbeat; the final record passes the result.
	env.OnActivity(ActivityRecordProgress, mock.Anything, mock.MatchedBy(func(p RecordProgressParams) bool {
		return p.Progress == nil && p.ActivityID == backfillActivityID && p.WorkflowID != ""
	})).Return(mid, nil)
	env.OnActivity(ActivityRecordProgress, mock.Anything, mock.MatchedBy(func(p RecordProgressParams) bool {
		return p.Progress != nil
	})).Return(BackfillProgress{}, nil)
	env.OnActivity(ActivityCaughtUp, mock.Anything, mock.Anything).Return(CaughtUpResult{}, nil)
	env.OnActivity(ActivityCutover, mock.Anything, mock.Anything).Return(CutoverResult{Current: 1}, nil)

	var during Progress
	var queryErr error
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(QueryProgress)
		if err != nil {
			queryErr = err
			return
		}
		queryErr = v.Get(&during)
	}, 30*time.Second)

	env.ExecuteWorkflow(WorkflowBuild, BuildParams{Definition: testDef(), Topic: "t", ProgressInterval: 10 * time.Second})

	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	if queryErr != nil {
		t.Fatalf("query during backfill: %v", queryErr)
	}
	if during.Phase != PhaseBackfilling || during.Backfill != mid {
		t.Errorf("progress during backfill = %+v, want phase backfilling with %+v", during, mid)
	}
}

func TestRetireWorkflow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		retired    bool
		wantUnlink bool
	}{
		{name: "retires after grace", retired: true, wantUnlink: true},
		{name: "current again after rollback", retired: false, wantUnlink: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newEnv(t)
			rp := RetireParams{Projection: "p", Generation: 3}
			var markedAt time.Time
			start := env.Now()
			env.OnActivity(ActivityMarkRetired, mock.Anything, rp).Return(func(context.Context, RetireParams) (MarkRetiredResult, error) {
				markedAt = env.Now()
				return MarkRetiredResult{Retired: tt.retired}, nil
			})
			env.OnActivity(ActivityUnlinkGeneration, mock.Anything, rp).Return(UnlinkResult{KeysUnlinked: 42}, nil)

			env.ExecuteWorkflow(WorkflowRetire, RetireWorkflowParams{Projection: "p", Generation: 3, Grace: 10 * time.Minute, Drain: time.Second})

			if err := env.GetWorkflowError(); err != nil {
				t.Fatalf("workflow error: %v", err)
			}
			if waited := markedAt.Sub(start); waited < 10*time.Minute {
				t.Errorf("marked retired after %v, want after the 10m grace", waited)
			}
			var got UnlinkResult
			if err := env.GetWorkflowResult(&got); err != nil {
				t.Fatal(err)
			}
			if tt.wantUnlink {
				env.AssertActivityNumberOfCalls(t, ActivityUnlinkGeneration, 1)
				if got.KeysUnlinked != 42 {
					t.Errorf("keys unlinked = %d, want 42", got.KeysUnlinked)
				}
			} else {
				env.AssertActivityNotCalled(t, ActivityUnlinkGeneration, mock.Anything, mock.Anything)
			}
		})
	}
}

func TestPointerWorkflowRollback(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	env.OnActivity(ActivityCutover, mock.Anything, CutoverParams{Projection: "p", Rollback: true}).
		Return(CutoverResult{Current: 3, Previous: 4}, nil).Once()
	env.OnActivity(ActivityScheduleRetire, mock.Anything, ScheduleRetireParams{Projection: "p", Generation: 4, Grace: time.Hour}).
		Return(nil).Once()

	env.ExecuteWorkflow(WorkflowPointer, PointerParams{Projection: "p", Rollback: true, RetireGrace: time.Hour})

	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	var got CutoverResult
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	if got != (CutoverResult{Current: 3, Previous: 4}) {
		t.Errorf("result = %+v, want current 3, previous 4", got)
	}
	env.AssertExpectations(t)
}

func TestPointerWorkflowPreconditionIsFinal(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	calls := 0
	env.OnActivity(ActivityCutover, mock.Anything, mock.Anything).Return(func(context.Context, CutoverParams) (CutoverResult, error) {
		calls++
		return CutoverResult{}, temporal.NewNonRetryableApplicationError("nothing retained", ErrTypePrecondition, nil)
	})
	env.ExecuteWorkflow(WorkflowPointer, PointerParams{Projection: "p", Rollback: true})
	if err := env.GetWorkflowError(); !hasAppErrorType(err, ErrTypePrecondition) {
		t.Fatalf("error = %v, want a %s application error", err, ErrTypePrecondition)
	}
	if calls != 1 {
		t.Errorf("cutover attempts = %d, want 1 (no retry of a failed precondition)", calls)
	}
}

func TestDeleteWorkflowUnlinksEveryGeneration(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	env.OnActivity(ActivityDeleteProjection, mock.Anything, RetireParams{Projection: "p"}).
		Return(DeleteResult{Generations: []int64{2, 3}}, nil).Once()
	env.OnActivity(ActivityUnlinkGeneration, mock.Anything, RetireParams{Projection: "p", Generation: 2}).Return(UnlinkResult{KeysUnlinked: 5}, nil).Once()
	env.OnActivity(ActivityUnlinkGeneration, mock.Anything, RetireParams{Projection: "p", Generation: 3}).Return(UnlinkResult{KeysUnlinked: 6}, nil).Once()

	env.ExecuteWorkflow(WorkflowDelete, DeleteParams{Projection: "p"})

	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	var got UnlinkResult
	if err := env.GetWorkflowResult(&got); err != nil {
		t.Fatal(err)
	}
	if got.KeysUnlinked != 11 {
		t.Errorf("keys unlinked = %d, want 11", got.KeysUnlinked)
	}
	env.AssertExpectations(t)
}

// TestDeleteWorkflowGivesUp: an unlink that keeps failing is tried DeleteAttempts times, then the
// delete fails with the step's error (GetStatus shows it as delete_failed), instead of retrying
// forever.
func TestDeleteWorkflowGivesUp(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	env.OnActivity(ActivityDeleteProjection, mock.Anything, RetireParams{Projection: "p"}).
		Return(DeleteResult{Generations: []int64{2}}, nil).Once()
	calls := 0
	env.OnActivity(ActivityUnlinkGeneration, mock.Anything, RetireParams{Projection: "p", Generation: 2}).
		Return(func(context.Context, RetireParams) (UnlinkResult, error) {
			calls++
			return UnlinkResult{}, errors.New("dial tcp 127.0.0.1:6379: connection refused")
		})

	env.ExecuteWorkflow(WorkflowDelete, DeleteParams{Projection: "p"})

	err := env.GetWorkflowError()
	if err == nil || !strings.Contains(err.Error(), "unlink generation 2") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("workflow error = %v, want the unlink's error", err)
	}
	if calls != DeleteAttempts {
		t.Errorf("unlink attempts = %d, want %d", calls, DeleteAttempts)
	}
}

// TestDeleteWorkflowDrainsATerminatedBuild: after terminating a build, the delete waits at least
// BackfillHeartbeatTimeout (the backfill activity learns of the termination at its next heartbeat
// to the server) before it unlinks, whatever Drain says.
func TestDeleteWorkflowDrainsATerminatedBuild(t *testing.T) {
	t.Parallel()
	for _, terminated := range []bool{false, true} {
		env := newEnv(t)
		var deletedAt, unlinkedAt time.Time
		env.OnActivity(ActivityDeleteProjection, mock.Anything, RetireParams{Projection: "p"}).
			Return(func(context.Context, RetireParams) (DeleteResult, error) {
				deletedAt = env.Now()
				return DeleteResult{Generations: []int64{1}}, nil
			}).Once()
		env.OnActivity(ActivityUnlinkGeneration, mock.Anything, RetireParams{Projection: "p", Generation: 1}).
			Return(func(context.Context, RetireParams) (UnlinkResult, error) {
				unlinkedAt = env.Now()
				return UnlinkResult{}, nil
			}).Once()
		env.ExecuteWorkflow(WorkflowDelete, DeleteParams{Projection: "p", Drain: time.Second, TerminatedBuild: terminated})
		if err := env.GetWorkflowError(); err != nil {
			t.Fatalf("terminated=%v: workflow error: %v", terminated, err)
		}
		want := time.Second
		if terminated {
			want = BackfillHeartbeatTimeout
		}
		if got := unlinkedAt.Sub(deletedAt); got < want {
			t.Errorf("terminated=%v: unlinked %v after the registry step, want at least %v", terminated, got, want)
		}
	}
}

// hasAppErrorType reports whether any application error in err's chain has type typ (a workflow
// that wraps an activity's error adds an application error of its own in front).
func hasAppErrorType(err error, typ string) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) && appErr.Type() == typ {
			return true
		}
		if appErr != nil {
			err = appErr
		}
	}
	return false
}
