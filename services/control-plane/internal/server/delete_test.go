package server_test

import (
	"errors"
	"strings"
	"testing"

	enumspb "go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/sdk/temporal"

	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
	"github.com/distcache/distcache/workflows"
)

// TestDeleteTakesOverARunningBuild: deleting a projection whose build runs starts the delete in
// the build's place (Temporal's terminate-existing conflict policy, TerminatedBuild set so the
// delete drains the backfill), instead of answering "already running"; a delete that runs answers
// Aborted.
func TestDeleteTakesOverARunningBuild(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	ctx := withToken("Bearer " + goodToken)
	d := validCreate().Projection
	d.Name = "building"
	if _, err := st.client.CreateProjection(ctx, &pb.CreateProjectionRequest{Projection: d}); err != nil {
		t.Fatal(err)
	}
	id := workflows.BuildWorkflowID("building")
	st.tc.describe(id, "run-build", workflows.WorkflowBuild, enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, nil)
	op, err := st.client.DeleteProjection(ctx, &pb.DeleteProjectionRequest{Name: "building"})
	if err != nil {
		t.Fatalf("delete during a build: %v, want it started", err)
	}
	if op.GetWorkflow().GetWorkflowId() != id {
		t.Errorf("delete workflow id: got %q, want %q", op.GetWorkflow().GetWorkflowId(), id)
	}
	st.tc.mu.Lock()
	last := st.tc.starts[len(st.tc.starts)-1]
	params, _ := st.tc.args[len(st.tc.args)-1].(workflows.DeleteParams)
	st.tc.mu.Unlock()
	if last.WorkflowIDConflictPolicy != enumspb.WORKFLOW_ID_CONFLICT_POLICY_TERMINATE_EXISTING || !params.TerminatedBuild {
		t.Errorf("delete start: conflict policy %v, params %+v; want TERMINATE_EXISTING and TerminatedBuild", last.WorkflowIDConflictPolicy, params)
	}

	st.tc.describe(id, "run-delete", workflows.WorkflowDelete, enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, nil)
	if _, err := st.client.DeleteProjection(ctx, &pb.DeleteProjectionRequest{Name: "building"}); err == nil ||
		!strings.Contains(err.Error(), "already running") {
		t.Errorf("second delete while one runs: %v, want Aborted already running", err)
	}
}

// TestDeleteStateInStatus: while a delete's step is retried, GetStatus of the (already
// unlisted) projection shows phase deleting with the attempt and the last error; once the
// delete gave up it shows delete_failed with the workflow's error, and DeleteProjection starts
// it again.
func TestDeleteStateInStatus(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	ctx := withToken("Bearer " + goodToken)
	id := workflows.BuildWorkflowID("gone")
	st.tc.describe(id, "run-1", workflows.WorkflowDelete, enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, nil,
		&workflowpb.PendingActivityInfo{Attempt: 3, LastFailure: &failurepb.Failure{Message: "unlink: dial tcp: connection refused"}})
	s, err := st.client.GetStatus(ctx, &pb.GetStatusRequest{Name: "gone"})
	if err != nil {
		t.Fatalf("status while deleting: %v", err)
	}
	if r := s.GetRunning(); r.GetPhase() != "deleting" || r.GetAttempt() != 3 || !strings.Contains(r.GetError(), "connection refused") {
		t.Errorf("status while deleting: running %v, want deleting, attempt 3, the last error", r)
	}

	failed := temporal.NewApplicationError("unlink generation 2: dial tcp: connection refused", "")
	st.tc.describe(id, "run-1", workflows.WorkflowDelete, enumspb.WORKFLOW_EXECUTION_STATUS_FAILED,
		errors.Join(errors.New("workflow execution error"), failed))
	s, err = st.client.GetStatus(ctx, &pb.GetStatusRequest{Name: "gone"})
	if err != nil {
		t.Fatalf("status after the delete gave up: %v", err)
	}
	if r := s.GetRunning(); r.GetPhase() != "delete_failed" || !strings.Contains(r.GetError(), "unlink generation 2") {
		t.Errorf("status after the delete gave up: running %v, want delete_failed with the error", r)
	}
	if _, err := st.client.DeleteProjection(ctx, &pb.DeleteProjectionRequest{Name: "gone"}); err != nil {
		t.Fatalf("delete again after delete_failed: %v, want it started", err)
	}
	if ids := st.tc.startedIDs(); len(ids) != 1 || ids[0] != id {
		t.Errorf("started: %v, want [%s]", ids, id)
	}
}
