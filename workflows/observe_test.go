package workflows

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	enumspb "go.temporal.io/api/enums/v1"
	sdkpb "go.temporal.io/api/sdk/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/distcache/distcache/tools/devstack"
)

// upserts records a workflow's search attribute upserts, in order, as "Name=value" strings.
type upserts struct {
	mu  sync.Mutex
	got []string
}

func (u *upserts) mock(env *testsuite.TestWorkflowEnvironment) {
	env.OnUpsertTypedSearchAttributes(mock.Anything).Run(func(args mock.Arguments) {
		sa := args.Get(0).(temporal.SearchAttributes)
		u.mu.Lock()
		defer u.mu.Unlock()
		if v, ok := sa.GetKeyword(SearchAttrProjection); ok {
			u.got = append(u.got, SearchAttrProjectionName+"="+v)
		}
		if v, ok := sa.GetInt64(SearchAttrGeneration); ok {
			u.got = append(u.got, SearchAttrGenerationName+"="+strconv.FormatInt(v, 10))
		}
		if v, ok := sa.GetKeyword(SearchAttrPhase); ok {
			u.got = append(u.got, SearchAttrPhaseName+"="+v)
		}
	}).Return(nil)
}

func (u *upserts) list() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.got)
}

func mockBuild(env *testsuite.TestWorkflowEnvironment, backfillErr error) {
	env.OnActivity(ActivityAllocateGeneration, mock.Anything, mock.Anything).Return(AllocateResult{Generation: 7}, nil)
	env.OnActivity(ActivitySetGenerationState, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(ActivityBackfill, mock.Anything, mock.Anything).Return(BackfillProgress{Offset: 10, EndOffset: 10, RecordsDone: 10}, backfillErr)
	env.OnActivity(ActivityRecordProgress, mock.Anything, mock.Anything).Return(BackfillProgress{}, nil)
	env.OnActivity(ActivityCaughtUp, mock.Anything, mock.Anything).Return(CaughtUpResult{}, nil)
	env.OnActivity(ActivityCutover, mock.Anything, mock.Anything).Return(CutoverResult{Current: 7}, nil)
	env.OnActivity(ActivityUnlinkGeneration, mock.Anything, mock.Anything).Return(UnlinkResult{}, nil)
}

// TestBuildWorkflowSearchAttributes: with BuildParams.SearchAttributes the build upserts its
// projection, then its generation and every phase as it moves (each only when it changes); a
// failed build ends with DistcachePhase=failed; without the flag it upserts nothing (the server
// would fail every workflow task of a namespace that lacks the attributes).
func TestBuildWorkflowSearchAttributes(t *testing.T) {
	t.Parallel()
	gen7 := SearchAttrGenerationName + "=7"
	tests := []struct {
		name        string
		searchAttrs bool
		backfillErr error
		want        []string
	}{
		{"live", true, nil, []string{
			SearchAttrProjectionName + "=users_by_email", SearchAttrPhaseName + "=" + PhaseAllocating,
			gen7, SearchAttrPhaseName + "=" + PhaseBackfilling,
			SearchAttrPhaseName + "=" + PhaseCatchingUp,
			SearchAttrPhaseName + "=" + PhaseCuttingOver,
			SearchAttrPhaseName + "=" + PhaseLive,
		}},
		{"failed", true, temporal.NewNonRetryableApplicationError("bad", ErrTypeInvalidDefinition, nil), []string{
			SearchAttrProjectionName + "=users_by_email", SearchAttrPhaseName + "=" + PhaseAllocating,
			gen7, SearchAttrPhaseName + "=" + PhaseBackfilling,
			SearchAttrPhaseName + "=" + PhaseFailed,
		}},
		{"not registered", false, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := newEnv(t)
			u := &upserts{}
			u.mock(env)
			mockBuild(env, tt.backfillErr)
			env.ExecuteWorkflow(WorkflowBuild, BuildParams{Definition: testDef(), Topic: "t", SearchAttributes: tt.searchAttrs})
			if err := env.GetWorkflowError(); (err != nil) != (tt.backfillErr != nil) {
				t.Fatalf("workflow error = %v, want an error: %t", err, tt.backfillErr != nil)
			}
			if got := u.list(); !slices.Equal(got, tt.want) {
				t.Errorf("upserts = %v\nwant %v", got, tt.want)
			}
		})
	}
}

// TestBuildWorkflowCurrentDetails: while the backfill runs, the workflow's current details (what
// the Temporal UI shows on the workflow's page, from the __temporal_workflow_metadata query) give
// the phase, generation, records done, offsets, rate and ETA of the last heartbeat.
func TestBuildWorkflowCurrentDetails(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	mid := BackfillProgress{Offset: 400, EndOffset: 1000, RecordsDone: 400, RatePerSec: 100}
	env.OnActivity(ActivityAllocateGeneration, mock.Anything, mock.Anything).Return(AllocateResult{Generation: 3}, nil)
	env.OnActivity(ActivitySetGenerationState, mock.Anything, mock.Anything).Return(nil)
	env.OnActivity(ActivityBackfill, mock.Anything, mock.Anything).After(time.Minute).
		Return(BackfillProgress{Offset: 1000, EndOffset: 1000, RecordsDone: 1000}, nil)
	env.OnActivity(ActivityRecordProgress, mock.Anything, mock.Anything).Return(mid, nil)
	env.OnActivity(ActivityCaughtUp, mock.Anything, mock.Anything).Return(CaughtUpResult{}, nil)
	env.OnActivity(ActivityCutover, mock.Anything, mock.Anything).Return(CutoverResult{Current: 3}, nil)

	var details string
	var queryErr error
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow("__temporal_workflow_metadata")
		if err != nil {
			queryErr = err
			return
		}
		var md sdkpb.WorkflowMetadata
		queryErr = v.Get(&md)
		details = md.GetCurrentDetails()
	}, 30*time.Second)
	env.ExecuteWorkflow(WorkflowBuild, BuildParams{Definition: testDef(), Topic: "t"})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatalf("workflow error: %v", err)
	}
	if queryErr != nil {
		t.Fatalf("metadata query: %v", queryErr)
	}
	for _, want := range []string{"**backfilling**", "generation 3", "records done: 400", "offset 400 of 1000 (40%)", "100 records/s", "ETA 6s"} {
		if !strings.Contains(details, want) {
			t.Errorf("current details %q lack %q", details, want)
		}
	}
}

// TestDeleteWorkflowSearchAttributes: a delete (with SearchAttributes) sets its projection and
// phase deleting, then deleted, or delete_failed when a step gives up.
func TestDeleteWorkflowSearchAttributes(t *testing.T) {
	t.Parallel()
	for _, fail := range []bool{false, true} {
		env := newEnv(t)
		u := &upserts{}
		u.mock(env)
		env.OnActivity(ActivityDeleteProjection, mock.Anything, mock.Anything).Return(DeleteResult{Generations: []int64{1}}, nil)
		var unlinkErr error
		if fail {
			unlinkErr = temporal.NewNonRetryableApplicationError("gone", ErrTypeNotFound, nil)
		}
		env.OnActivity(ActivityUnlinkGeneration, mock.Anything, mock.Anything).Return(UnlinkResult{KeysUnlinked: 3}, unlinkErr)
		env.ExecuteWorkflow(WorkflowDelete, DeleteParams{Projection: "p", SearchAttributes: true})
		if err := env.GetWorkflowError(); (err != nil) != fail {
			t.Fatalf("fail=%t: workflow error %v", fail, err)
		}
		want := []string{SearchAttrProjectionName + "=p", SearchAttrPhaseName + "=" + PhaseDeleting, SearchAttrPhaseName + "=" + PhaseDeleted}
		if fail {
			want[2] = SearchAttrPhaseName + "=" + PhaseDeleteFailed
		}
		if got := u.list(); !slices.Equal(got, want) {
			t.Errorf("fail=%t: upserts = %v, want %v", fail, got, want)
		}
	}
}

// TestScheduleRetireSearchAttributes: a retirement scheduled by a build with search attributes
// starts with its projection and generation; without, with none.
func TestScheduleRetireSearchAttributes(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{false, true} {
		tc := &startRecorder{}
		a := &Activities{Temporal: tc}
		if err := a.ScheduleRetire(context.Background(), ScheduleRetireParams{Projection: "p", Generation: 4, SearchAttributes: on}); err != nil {
			t.Fatal(err)
		}
		sa := tc.opts.TypedSearchAttributes
		proj, okP := sa.GetKeyword(SearchAttrProjection)
		gen, okG := sa.GetInt64(SearchAttrGeneration)
		if on && (proj != "p" || gen != 4 || !okP || !okG) {
			t.Errorf("retire started with %v, want projection p, generation 4", sa)
		}
		if !on && sa.Size() != 0 {
			t.Errorf("retire started with %v, want none", sa)
		}
	}
}

// TestMissingSearchAttributes: a namespace lacking one attribute, or having one with another
// type, is reported; one with all of them (and others) is not.
func TestMissingSearchAttributes(t *testing.T) {
	t.Parallel()
	all := map[string]enumspb.IndexedValueType{"CustomerId": enumspb.INDEXED_VALUE_TYPE_KEYWORD}
	for n, typ := range SearchAttributes {
		all[n] = typ
	}
	if got := MissingSearchAttributes(all); len(got) != 0 {
		t.Errorf("all registered: missing %v", got)
	}
	if got := MissingSearchAttributes(nil); len(got) != 3 {
		t.Errorf("none registered: missing %v, want all 3", got)
	}
	wrong := map[string]enumspb.IndexedValueType{}
	for n, typ := range all {
		wrong[n] = typ
	}
	wrong[SearchAttrGenerationName] = enumspb.INDEXED_VALUE_TYPE_KEYWORD
	delete(wrong, SearchAttrPhaseName)
	got := MissingSearchAttributes(wrong)
	if len(got) != 2 || !strings.HasPrefix(got[0], SearchAttrGenerationName+" (registered as Keyword") || got[1] != SearchAttrPhaseName {
		t.Errorf("missing = %v, want the generation (wrong type) and the phase", got)
	}
}

// TestSearchAttributesMatchDevstack: the dev servers of `make up` and of the tests register
// exactly the search attributes the workflows set.
func TestSearchAttributesMatchDevstack(t *testing.T) {
	t.Parallel()
	got := map[string]enumspb.IndexedValueType{}
	for _, sa := range devstack.SearchAttributes {
		typ, err := enumspb.IndexedValueTypeFromString(sa.Type)
		if err != nil {
			t.Fatal(err)
		}
		got[sa.Name] = typ
	}
	if missing := MissingSearchAttributes(got); len(missing) != 0 || len(got) != len(SearchAttributes) {
		t.Errorf("devstack.SearchAttributes = %v, workflows.SearchAttributes = %v", got, SearchAttributes)
	}
}

// TestSearchAttributesInDeployments: the chart's Job and the compose stack's namespace job
// register exactly workflows.SearchAttributes, with their types.
func TestSearchAttributesInDeployments(t *testing.T) {
	t.Parallel()
	var want []string
	for name, typ := range SearchAttributes {
		want = append(want, name+"="+typ.String())
	}
	slices.Sort(want)
	re := regexp.MustCompile(`Distcache[A-Za-z]+=[A-Za-z]+`)
	for _, f := range []string{"../deploy/helm/distcache/templates/search-attributes.yaml", "../deploy/compose/temporal/create-namespace.sh"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got := re.FindAllString(string(b), -1)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s registers %v, want %v", f, got, want)
		}
	}
}

func TestBackfillProgressETA(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p    BackfillProgress
		want time.Duration
		frac float64
	}{
		{BackfillProgress{Offset: 0, EndOffset: 600000, RatePerSec: 0}, 0, 0},
		{BackfillProgress{Offset: 100000, EndOffset: 600000, RatePerSec: 50000}, 10 * time.Second, 1.0 / 6},
		{BackfillProgress{Offset: 599999, EndOffset: 600000, RatePerSec: 50000}, time.Second, 599999.0 / 600000},
		{BackfillProgress{Offset: 600000, EndOffset: 600000, RatePerSec: 50000}, 0, 1},
		{BackfillProgress{}, 0, 1},
	}
	for _, tt := range tests {
		if got := tt.p.ETA(); got != tt.want {
			t.Errorf("%+v: ETA %v, want %v", tt.p, got, tt.want)
		}
		if got := tt.p.Fraction(); got != tt.frac {
			t.Errorf("%+v: Fraction %v, want %v", tt.p, got, tt.frac)
		}
		if hb := tt.p.Heartbeat(); hb.Phase != PhaseBackfilling || hb.ETASeconds != tt.want.Seconds() {
			t.Errorf("%+v: Heartbeat %+v", tt.p, hb)
		}
	}
}

// startRecorder is a Temporal client that records the options of the one workflow started.
type startRecorder struct {
	Temporal
	opts client.StartWorkflowOptions
}

func (r *startRecorder) ExecuteWorkflow(_ context.Context, o client.StartWorkflowOptions, _ interface{}, _ ...interface{}) (client.WorkflowRun, error) {
	r.opts = o
	return nil, nil
}
