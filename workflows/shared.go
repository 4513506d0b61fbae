// Package workflows holds distcache's Temporal workflows and the contract between the
// control-plane, which runs the workflows and the registry and pointer activities on
// ControlPlaneTaskQueue, and the cache-producer, which runs the activities that read Kafka and
// write generations on CacheProducerTaskQueue.
//
// A projection's life (see docs/architecture.md for the registry states):
//
//	BuildWorkflow      allocate generation N → Backfill (cache-producer, heartbeats BackfillProgress)
//	                   → state tailing → CaughtUp (cache-producer, retried until lag ≤ MaxLag)
//	                   → Cutover (pointer swap + control event, registry: N live, old retiring)
//	                   → RetireWorkflow for the old generation (abandoned child)
//	RetireWorkflow     timer (grace) → mark retired → drain timer → SCAN+UNLINK the generation
//	PointerWorkflow    Cutover to a given generation, or Rollback to the previous one
//	DeleteWorkflow     soft-delete the projection, retire every generation
//
// Workflow ids derive from the projection (BuildWorkflowID), so two builds of one projection
// cannot run at once and a second request fails with an "already started" error.
package workflows

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/distcache/distcache/libs/projection"
)

// Task queues.
const (
	// ControlPlaneTaskQueue: the control-plane's worker; every workflow and the registry, pointer
	// and retire activities.
	ControlPlaneTaskQueue = "distcache-control-plane"
	// CacheProducerTaskQueue: the cache-producer's worker; ActivityBackfill and ActivityCaughtUp.
	CacheProducerTaskQueue = "distcache-cache-producer"
)

// Activity names on CacheProducerTaskQueue, implemented by services/cache-producer. Register them
// with activity.RegisterOptions{Name: ...}.
const (
	// ActivityBackfill writes every record of BackfillParams.Topic from offset
	// BackfillParams.StartOffset up to the topic's end (its high watermark when the backfill
	// first started) into generation BackfillParams.Generation, through distcache.Publisher,
	// applying BackfillParams.Definition (projection.Compile). It heartbeats a BackfillProgress
	// at least every few seconds and on a retry resumes from the offset of the last heartbeat
	// (activity.GetHeartbeatDetails), keeping that EndOffset. Records at or past EndOffset are
	// the live consumer's job. Returns the final BackfillProgress (Offset == EndOffset).
	// A definition that does not compile is a non-retryable error of type ErrTypeInvalidDefinition.
	ActivityBackfill = "distcache.Backfill"
	// ActivityCaughtUp reports whether the live consumer of a generation in state "tailing"
	// (started by the cache-producer for every generation in tailing/live/retiring, from the
	// offset the registry records) has caught up with the topic: lag = high watermark − the
	// consumer's committed position ≤ CaughtUpParams.MaxLag. When it has not, it returns a
	// retryable application error of type ErrTypeNotCaughtUp (the workflow's retry policy is
	// the poll loop); when it has, a CaughtUpResult.
	ActivityCaughtUp = "distcache.CaughtUp"
)

// Activity names on ControlPlaneTaskQueue, implemented in this package (Activities).
const (
	ActivityAllocateGeneration = "distcache.AllocateGeneration"
	ActivitySetGenerationState = "distcache.SetGenerationState"
	ActivityRecordProgress     = "distcache.RecordProgress"
	ActivityCutover            = "distcache.Cutover"
	ActivityMarkRetired        = "distcache.MarkRetired"
	ActivityUnlinkGeneration   = "distcache.UnlinkGeneration"
	ActivityDeleteProjection   = "distcache.DeleteProjection"
)

// Application error types (temporal.NewApplicationError's errType), shared by both workers.
const (
	ErrTypeInvalidDefinition = "InvalidDefinition"  // non-retryable
	ErrTypeNotCaughtUp       = "NotCaughtUp"        // retryable: the poll of ActivityCaughtUp
	ErrTypeNotFound          = "NotFound"           // non-retryable: no such projection/generation
	ErrTypePrecondition      = "FailedPrecondition" // non-retryable: e.g. rollback with nothing retained
)

// Generation states, as stored in distcache_generations.state.
const (
	StateAllocated   = "allocated"
	StateBackfilling = "backfilling"
	StateTailing     = "tailing"
	StateLive        = "live"
	StateRetiring    = "retiring"
	StateRetired     = "retired"
	StateFailed      = "failed"
)

// Definition is the projection definition (an alias, so activity payloads and API code share
// one type).
type Definition = projection.Definition

// BackfillParams is the input of ActivityBackfill.
type BackfillParams struct {
	Projection string     `json:"projection"`
	Generation int64      `json:"generation"`
	Topic      string     `json:"topic"`
	Definition Definition `json:"definition"`
	// StartOffset is where to start on the first attempt (0: the topic's start).
	StartOffset int64 `json:"start_offset"`
}

// BackfillProgress is ActivityBackfill's heartbeat detail and result.
type BackfillProgress struct {
	// Offset is the next offset to read (every record before it is written).
	Offset int64 `json:"offset"`
	// EndOffset is the high watermark the backfill runs to (fixed at the first attempt's start).
	EndOffset int64 `json:"end_offset"`
	// RecordsDone counts records written (and filtered out) so far, over all attempts.
	RecordsDone int64 `json:"records_done"`
	// RatePerSec is the recent rate of records per second.
	RatePerSec float64 `json:"rate_per_sec"`
	// Phase and ETASeconds are set in heartbeats (Heartbeat), so the activity's details in the
	// Temporal UI read like the workflow's: PhaseBackfilling, and the seconds left at RatePerSec.
	Phase      string  `json:"phase,omitempty"`
	ETASeconds float64 `json:"eta_seconds,omitempty"`
}

// Heartbeat returns p as a heartbeat detail: Phase backfilling and ETASeconds estimated.
func (p BackfillProgress) Heartbeat() BackfillProgress {
	p.Phase = PhaseBackfilling
	p.ETASeconds = p.ETA().Seconds()
	return p
}

// ETA estimates the time left: the offsets still to read at RatePerSec (records and offsets
// differ on a compacted topic, so it is an estimate); 0 when done or when the rate is unknown.
func (p BackfillProgress) ETA() time.Duration {
	left := p.EndOffset - p.Offset
	if left <= 0 || p.RatePerSec <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(float64(left)/p.RatePerSec)) * time.Second
}

// Fraction is the share of the offsets read, in [0, 1] (1 for an empty topic).
func (p BackfillProgress) Fraction() float64 {
	if p.EndOffset <= 0 {
		return 1
	}
	return min(max(float64(p.Offset)/float64(p.EndOffset), 0), 1)
}

// CaughtUpParams is the input of ActivityCaughtUp.
type CaughtUpParams struct {
	Projection string `json:"projection"`
	Generation int64  `json:"generation"`
	Topic      string `json:"topic"`
	// MaxLag is the largest lag, in records, that counts as caught up.
	MaxLag int64 `json:"max_lag"`
}

// CaughtUpResult is ActivityCaughtUp's result once caught up.
type CaughtUpResult struct {
	// Offset is the consumer's position, HighWatermark the topic's end when checked.
	Offset        int64 `json:"offset"`
	HighWatermark int64 `json:"high_watermark"`
	Lag           int64 `json:"lag"`
}

// AllocateParams is the input of ActivityAllocateGeneration.
type AllocateParams struct {
	Definition Definition `json:"definition"`
	WorkflowID string     `json:"workflow_id"`
	// RunID is the build's run, recorded with the generation so links to it open that run
	// rather than the newest run of WorkflowID.
	RunID string `json:"run_id,omitempty"`
}

// AllocateResult is ActivityAllocateGeneration's result.
type AllocateResult struct {
	// Generation is the new generation's number (one more than any before it).
	Generation int64 `json:"generation"`
	// Current is the generation readers use now (0: none).
	Current int64 `json:"current"`
}

// SetStateParams is the input of ActivitySetGenerationState.
type SetStateParams struct {
	Projection string `json:"projection"`
	Generation int64  `json:"generation"`
	State      string `json:"state"`
	// Offset, when not nil, is recorded too (the tailing consumer's start).
	Offset *int64 `json:"offset,omitempty"`
}

// RecordProgressParams is the input of ActivityRecordProgress. When Progress is nil the activity
// reads the backfill's last heartbeat from Temporal (DescribeWorkflowExecution of WorkflowID,
// pending activity ActivityID).
type RecordProgressParams struct {
	Projection string            `json:"projection"`
	Generation int64             `json:"generation"`
	WorkflowID string            `json:"workflow_id"`
	RunID      string            `json:"run_id"`
	ActivityID string            `json:"activity_id"`
	Progress   *BackfillProgress `json:"progress,omitempty"`
}

// CutoverParams is the input of ActivityCutover.
type CutoverParams struct {
	Projection string `json:"projection"`
	// Generation to make current; 0 with Rollback set means "the previous generation".
	Generation int64 `json:"generation"`
	Rollback   bool  `json:"rollback"`
}

// CutoverResult is ActivityCutover's result.
type CutoverResult struct {
	// Current is the generation readers use now; Previous the one they used before (0: none),
	// now in state retiring.
	Current  int64 `json:"current"`
	Previous int64 `json:"previous"`
}

// RetireParams is the input of ActivityMarkRetired and ActivityUnlinkGeneration.
type RetireParams struct {
	Projection string `json:"projection"`
	Generation int64  `json:"generation"`
}

// MarkRetiredResult is ActivityMarkRetired's result.
type MarkRetiredResult struct {
	// Retired is false when the generation is current again (a rollback) or already gone; the
	// workflow then leaves its keys alone.
	Retired bool `json:"retired"`
}

// UnlinkResult is ActivityUnlinkGeneration's result.
type UnlinkResult struct {
	KeysUnlinked int64 `json:"keys_unlinked"`
}

// DeleteResult is ActivityDeleteProjection's result: the generations whose keys must go.
type DeleteResult struct {
	Generations []int64 `json:"generations"`
}

// Progress is what the "progress" query returns and the "progress" memo holds.
type Progress struct {
	Projection string           `json:"projection"`
	Generation int64            `json:"generation"`
	Phase      string           `json:"phase"`
	Backfill   BackfillProgress `json:"backfill"`
	Lag        int64            `json:"lag"`
	UpdatedAt  time.Time        `json:"updated_at"`
}

// Phases reported in Progress.Phase and in the DistcachePhase search attribute.
const (
	PhaseAllocating  = "allocating"
	PhaseBackfilling = "backfilling"
	PhaseCatchingUp  = "catching_up"
	PhaseCuttingOver = "cutting_over"
	PhaseLive        = "live"
	PhaseFailed      = "failed"
	// DeleteWorkflow's.
	PhaseDeleting     = "deleting"
	PhaseDeleted      = "deleted"
	PhaseDeleteFailed = "delete_failed"
)

// Search attributes of distcache's workflows, so that the Temporal UI's list filters them:
// DistcacheProjection = 'users_by_email', DistcachePhase = 'failed'. They must be registered in
// the namespace (SearchAttributes lists them with their types; `make up` and the tests' dev
// servers register them, a cluster needs `temporal operator search-attribute create`, see
// docs/operations.md). A workflow sets them only when its parameters say they are registered
// (BuildParams.SearchAttributes, ...): the server fails every workflow task that upserts an
// attribute it does not know, which would hold the workflow forever.
const (
	SearchAttrProjectionName = "DistcacheProjection"
	SearchAttrGenerationName = "DistcacheGeneration"
	SearchAttrPhaseName      = "DistcachePhase"
)

// Typed keys of the search attributes.
var (
	// SearchAttrProjection: the projection's name (every workflow of it).
	SearchAttrProjection = temporal.NewSearchAttributeKeyKeyword(SearchAttrProjectionName)
	// SearchAttrGeneration: the generation a build builds, a cutover targets, a retirement retires.
	SearchAttrGeneration = temporal.NewSearchAttributeKeyInt64(SearchAttrGenerationName)
	// SearchAttrPhase: a build's or a delete's phase (Phase*), kept current as it moves.
	SearchAttrPhase = temporal.NewSearchAttributeKeyKeyword(SearchAttrPhaseName)
)

// SearchAttributes are the search attributes distcache's workflows set, with their types.
var SearchAttributes = map[string]enumspb.IndexedValueType{
	SearchAttrProjectionName: enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	SearchAttrGenerationName: enumspb.INDEXED_VALUE_TYPE_INT,
	SearchAttrPhaseName:      enumspb.INDEXED_VALUE_TYPE_KEYWORD,
}

// MissingSearchAttributes names the attributes of SearchAttributes that registered (a
// namespace's custom attributes, as ListSearchAttributes answers them) lacks or has with another
// type, sorted; none means the workflows may set them.
func MissingSearchAttributes(registered map[string]enumspb.IndexedValueType) []string {
	var out []string
	for name, typ := range SearchAttributes {
		if got, ok := registered[name]; !ok {
			out = append(out, name)
		} else if got != typ {
			out = append(out, fmt.Sprintf("%s (registered as %s, want %s)", name, got, typ))
		}
	}
	slices.Sort(out)
	return out
}

// StartSearchAttributes are the attributes a workflow of projection starts with (generation and
// phase only when not zero).
func StartSearchAttributes(projection string, generation int64, phase string) temporal.SearchAttributes {
	u := []temporal.SearchAttributeUpdate{SearchAttrProjection.ValueSet(projection)}
	if generation > 0 {
		u = append(u, SearchAttrGeneration.ValueSet(generation))
	}
	if phase != "" {
		u = append(u, SearchAttrPhase.ValueSet(phase))
	}
	return temporal.NewSearchAttributes(u...)
}

// Details renders p as a workflow's current details (Temporal markdown, shown on the workflow's
// page in the UI): phase, generation, records done, offset of end offset, rate and ETA.
func (p Progress) Details() string {
	var b strings.Builder
	fmt.Fprintf(&b, "**%s** · projection %s", p.Phase, p.Projection)
	if p.Generation > 0 {
		fmt.Fprintf(&b, " · generation %d", p.Generation)
	}
	bf := p.Backfill
	if bf != (BackfillProgress{}) {
		fmt.Fprintf(&b, "\n\nrecords done: %d · offset %d of %d (%.0f%%) · %.0f records/s",
			bf.RecordsDone, bf.Offset, bf.EndOffset, 100*bf.Fraction(), bf.RatePerSec)
		if eta := bf.ETA(); eta > 0 && p.Phase == PhaseBackfilling {
			fmt.Fprintf(&b, " · ETA %s", eta)
		}
	}
	if p.Lag > 0 {
		fmt.Fprintf(&b, "\n\nlag: %d", p.Lag)
	}
	if !p.UpdatedAt.IsZero() {
		fmt.Fprintf(&b, "\n\nupdated %s", p.UpdatedAt.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// QueryProgress is the name of the progress query handler of BuildWorkflow.
const QueryProgress = "progress"

// MemoProgress is the memo key holding Progress (visible in the Temporal UI).
const MemoProgress = "progress"

// Workflow ids. A build and a delete of one projection share BuildWorkflowID so they exclude each
// other; pointer moves and retirements have their own.
func BuildWorkflowID(projection string) string   { return "projection/" + projection }
func PointerWorkflowID(projection string) string { return "projection/" + projection + "/pointer" }
func RetireWorkflowID(projection string, generation int64) string {
	return "projection/" + projection + "/retire/g" + strconv.FormatInt(generation, 10)
}

// Workflow type names (registered with workflow.RegisterOptions{Name: ...}).
const (
	WorkflowBuild   = "distcache.Build"
	WorkflowPointer = "distcache.Pointer"
	WorkflowRetire  = "distcache.Retire"
	WorkflowDelete  = "distcache.Delete"
)

// Build reasons, recorded in BuildParams.Reason.
const (
	ReasonCreate = "create"
	ReasonUpdate = "update"
	ReasonReplay = "replay"
)

// BuildParams is the input of BuildWorkflow: build a new generation of Definition.Name from
// Topic and cut readers over to it.
type BuildParams struct {
	Definition Definition `json:"definition"`
	Topic      string     `json:"topic"`
	Reason     string     `json:"reason"`
	// RetireGrace is how long the replaced generation stays (for a rollback) before its keys go.
	RetireGrace time.Duration `json:"retire_grace"`
	// MaxLag is the lag, in records, under which the new generation counts as caught up.
	MaxLag int64 `json:"max_lag"`
	// CatchUpTimeout bounds the wait for the new generation to catch up (0: DefaultCatchUpTimeout).
	CatchUpTimeout time.Duration `json:"catch_up_timeout"`
	// ProgressInterval is how often the backfill's heartbeat is copied into the registry, the
	// memo and the progress query (0: DefaultProgressInterval).
	ProgressInterval time.Duration `json:"progress_interval"`
	// SearchAttributes: the namespace has SearchAttributes registered (the control-plane checked
	// before it started the workflow), so the workflow keeps DistcacheProjection,
	// DistcacheGeneration and DistcachePhase current. False: it sets none.
	SearchAttributes bool `json:"search_attributes,omitempty"`
}

// BuildResult is BuildWorkflow's result.
type BuildResult struct {
	Generation int64            `json:"generation"`
	Previous   int64            `json:"previous"`
	Backfill   BackfillProgress `json:"backfill"`
}

// PointerParams is the input of PointerWorkflow.
type PointerParams struct {
	Projection  string        `json:"projection"`
	Generation  int64         `json:"generation"`
	Rollback    bool          `json:"rollback"`
	RetireGrace time.Duration `json:"retire_grace"`
	// SearchAttributes: as BuildParams.SearchAttributes; the retirement it schedules gets them.
	SearchAttributes bool `json:"search_attributes,omitempty"`
}

// RetireWorkflowParams is the input of RetireWorkflow.
type RetireWorkflowParams struct {
	Projection string        `json:"projection"`
	Generation int64         `json:"generation"`
	Grace      time.Duration `json:"grace"`
	// Drain is the pause between marking the generation retired (consumers stop) and unlinking
	// its keys, so a write in flight cannot recreate a key after the scan (0: DefaultDrain).
	Drain time.Duration `json:"drain"`
}

// DeleteParams is the input of DeleteWorkflow.
type DeleteParams struct {
	Projection string        `json:"projection"`
	Drain      time.Duration `json:"drain"`
	// TerminatedBuild is set when a build of the projection was terminated to start this delete:
	// its backfill activity may still write until its next heartbeat tells it, so the delete
	// waits at least BackfillHeartbeatTimeout before it unlinks the keys.
	TerminatedBuild bool `json:"terminated_build,omitempty"`
	// SearchAttributes: as BuildParams.SearchAttributes; the delete keeps DistcachePhase current
	// (deleting, deleted, delete_failed).
	SearchAttributes bool `json:"search_attributes,omitempty"`
}

// BackfillHeartbeatTimeout is the backfill activity's heartbeat timeout. The SDK sends a
// heartbeat to the server at most every 80% of it unless the worker's
// MaxHeartbeatThrottleInterval is lower (BackfillHeartbeatThrottle), so it also bounds how long a
// running backfill takes to learn that its build was cancelled or terminated.
const BackfillHeartbeatTimeout = 10 * time.Second

// BackfillHeartbeatThrottle is the worker.Options.MaxHeartbeatThrottleInterval of every worker on
// CacheProducerTaskQueue: the most time between a heartbeat of the backfill and its arrival at
// the server, where the build's progress poll reads it (DescribeWorkflow). Without it the SDK
// holds heartbeats back for 80% of BackfillHeartbeatTimeout (8 s), and a build of a few seconds
// showed no progress at all until it ended.
const BackfillHeartbeatThrottle = time.Second

// DeleteAttempts bounds the attempts of each step of DeleteWorkflow (the registry update, the
// unlink of each generation): a delete that cannot finish fails, shows as delete_failed in
// GetStatus with the reason, and DeleteProjection starts it again.
const DeleteAttempts = 8

// Defaults.
const (
	DefaultRetireGrace      = 10 * time.Minute
	DefaultCatchUpTimeout   = time.Hour
	DefaultProgressInterval = time.Second
	DefaultDrain            = 5 * time.Second
	DefaultMaxLag           = 0
)
