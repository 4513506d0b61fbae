package server_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/projection"
	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
	"github.com/distcache/distcache/workflows/registry"
)

// TestStatusShowsRebuild: a live generation the cache-producer reports it is rebuilding because
// Redis lost its data is shown as such by GetStatus, over gRPC and REST (rebuild: reason
// data_loss, detail, since); the other generation has no rebuild.
func TestStatusShowsRebuild(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	ctx := withToken("Bearer " + goodToken)
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st.reg.mu.Lock()
	st.reg.projs["users_by_email"] = registry.Projection{Definition: projection.Definition{
		Name: "users_by_email", Model: "users", KeyTemplate: "{email}", Fields: []string{"id", "email"}}, Current: 2}
	st.reg.gens = map[string][]registry.Generation{"users_by_email": {
		{Projection: "users_by_email", Generation: 2, State: registry.StateLive},
		{Projection: "users_by_email", Generation: 1, State: registry.StateRetiring},
	}}
	st.reg.rebuilds = map[string]map[int64]registry.Rebuild{"users_by_email": {
		2: {Reason: "data_loss", Detail: "data loss: users_by_email/g2: its offset is gone", Since: since},
	}}
	st.reg.mu.Unlock()

	s, err := st.client.GetStatus(ctx, &pb.GetStatusRequest{Name: "users_by_email"})
	if err != nil {
		t.Fatal(err)
	}
	gens := s.GetGenerations()
	if len(gens) != 2 {
		t.Fatalf("generations = %v", gens)
	}
	r := gens[0].GetRebuild()
	if gens[0].GetState() != registry.StateLive || r.GetReason() != "data_loss" || !strings.Contains(r.GetDetail(), "offset is gone") ||
		!r.GetSince().AsTime().Equal(since) {
		t.Errorf("generation 2 = %v, want live with rebuild data_loss since %v", gens[0], since)
	}
	if gens[1].GetRebuild() != nil {
		t.Errorf("generation 1 shows a rebuild: %v", gens[1].GetRebuild())
	}

	code, _, body := st.do(t, "GET", "/v1/projections/users_by_email/status", "Bearer "+goodToken, nil)
	var rest struct {
		Generations []struct {
			Generation string `json:"generation"`
			Rebuild    *struct {
				Reason, Detail, Since string
			} `json:"rebuild"`
		} `json:"generations"`
	}
	if err := json.Unmarshal(body, &rest); code != 200 || err != nil || len(rest.Generations) != 2 {
		t.Fatalf("REST status = %d %s (%v)", code, body, err)
	}
	if g := rest.Generations[0]; g.Rebuild == nil || g.Rebuild.Reason != "data_loss" || g.Rebuild.Since != "2026-01-02T03:04:05Z" {
		t.Errorf("REST generation %s rebuild = %+v, want data_loss since 2026-01-02T03:04:05Z (body %s)", g.Generation, g.Rebuild, body)
	}
}
