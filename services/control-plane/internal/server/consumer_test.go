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

// TestStatusShowsConsumer: GetStatus shows, for each generation kept up to date, what the
// cache-producer last reported of its consumer, over gRPC and REST: a live generation reported a
// moment ago (state reporting, owner, lag 5 = high watermark - next offset, the newest change's
// time and age, dead letters); a retiring one whose last report is 35 s old (not_reporting, "no
// replica reporting for 35s"); a tailing one never reported (none); a retired one shows no
// consumer.
func TestStatusShowsConsumer(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	ctx := withToken("Bearer " + goodToken)
	now := time.Now().UTC()
	newest := now.Add(-30 * time.Second)
	const name = "users_by_email"
	st.reg.mu.Lock()
	st.reg.projs[name] = registry.Projection{Definition: projection.Definition{
		Name: name, Model: "users", KeyTemplate: "{email}", Fields: []string{"id", "email"}}, Current: 3, Previous: 2}
	st.reg.gens = map[string][]registry.Generation{name: {
		{Projection: name, Generation: 4, State: registry.StateTailing},
		{Projection: name, Generation: 3, State: registry.StateLive},
		{Projection: name, Generation: 2, State: registry.StateRetiring},
		{Projection: name, Generation: 1, State: registry.StateRetired},
	}}
	report := func(gen int64, owner string, next, hwm int64, newest time.Time, dead int, at time.Time) registry.Consumer {
		return registry.Consumer{ConsumerReport: registry.ConsumerReport{Projection: name, Generation: gen, Owner: owner,
			NextOffset: next, HighWatermark: hwm, NewestSourceTime: newest, DeadLettersLastHour: dead}, ReportedAt: at}
	}
	st.reg.consumers = map[string]map[int64]registry.Consumer{name: {
		3: report(3, "producer-0", 95, 100, newest, 2, now.Add(-time.Second)),
		2: report(2, "producer-1", 80, 80, newest.Add(-time.Hour), 0, now.Add(-35*time.Second)),
		1: report(1, "producer-1", 10, 10, time.Time{}, 0, now.Add(-time.Hour)),
	}}
	st.reg.mu.Unlock()

	s, err := st.client.GetStatus(ctx, &pb.GetStatusRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	gens := s.GetGenerations()
	if len(gens) != 4 {
		t.Fatalf("generations = %v", gens)
	}
	tailing, live, retiring, retired := gens[0].GetConsumer(), gens[1].GetConsumer(), gens[2].GetConsumer(), gens[3].GetConsumer()
	if live.GetState() != "reporting" || live.GetOwner() != "producer-0" || live.GetLagRecords() != 5 ||
		live.GetDeadLettersLastHour() != 2 || !live.GetNewestChangeTime().AsTime().Equal(newest) ||
		live.GetNewestChangeAgeSeconds() < 30 || live.GetNewestChangeAgeSeconds() > 60 || live.GetReportAgeSeconds() > 30 {
		t.Errorf("live generation's consumer = %v; want reporting, producer-0, lag 5, 2 dead letters, newest change %v (30 s old)", live, newest)
	}
	if retiring.GetState() != "not_reporting" || !strings.Contains(retiring.GetMessage(), "no replica reporting for 35s") ||
		retiring.GetOwner() != "producer-1" || retiring.GetLagRecords() != 0 {
		t.Errorf("retiring generation's consumer = %v; want not_reporting, \"no replica reporting for 35s\", last owner producer-1", retiring)
	}
	if tailing.GetState() != "none" || tailing.GetOwner() != "" {
		t.Errorf("tailing generation's consumer = %v; want none", tailing)
	}
	if retired != nil {
		t.Errorf("retired generation's consumer = %v; want none shown", retired)
	}

	code, _, body := st.do(t, "GET", "/v1/projections/"+name+"/status", "Bearer "+goodToken, nil)
	var rest struct {
		Generations []struct {
			Generation string `json:"generation"`
			Consumer   *struct {
				State               string  `json:"state"`
				Owner               string  `json:"owner"`
				LagRecords          string  `json:"lag_records"`
				NewestChangeTime    string  `json:"newest_change_time"`
				NewestChangeAge     float64 `json:"newest_change_age_seconds"`
				DeadLettersLastHour int     `json:"dead_letters_last_hour"`
			} `json:"consumer"`
		} `json:"generations"`
	}
	if err := json.Unmarshal(body, &rest); code != 200 || err != nil || len(rest.Generations) != 4 {
		t.Fatalf("REST status = %d %s (%v)", code, body, err)
	}
	if c := rest.Generations[1].Consumer; c == nil || c.State != "reporting" || c.Owner != "producer-0" || c.LagRecords != "5" ||
		c.DeadLettersLastHour != 2 || c.NewestChangeAge < 30 || !restTime(c.NewestChangeTime).Equal(newest) {
		t.Errorf("REST generation 3's consumer = %+v; want reporting, producer-0, lag \"5\", 2 dead letters (body %s)", c, body)
	}
	if c := rest.Generations[3].Consumer; c != nil {
		t.Errorf("REST retired generation's consumer = %+v, want null", c)
	}
}

func restTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}
