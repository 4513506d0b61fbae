package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/")

// fixtureStatuses is a stack with one of each kind of row: fresh, quiet (old newest change, no
// lag), lagging, stuck (records waiting behind an old change), not reporting, never reported,
// with dead letters, rebuilding after a data loss, being built, and a projection with nothing
// kept yet.
func fixtureStatuses(now time.Time) []*pb.ProjectionStatus {
	def := func(name string) *pb.Projection {
		return &pb.Projection{Definition: &pb.ProjectionDefinition{Name: name}}
	}
	reporting := func(owner string, lag int64, newestAge time.Duration, dead int32) *pb.GenerationConsumer {
		return &pb.GenerationConsumer{State: "reporting", Owner: owner, LagRecords: lag, NextOffset: 1000, HighWatermark: 1000 + lag,
			NewestChangeTime: timestamppb.New(now.Add(-newestAge)), NewestChangeAgeSeconds: newestAge.Seconds(),
			DeadLettersLastHour: dead, ReportedAt: timestamppb.New(now.Add(-time.Second)), ReportAgeSeconds: 1}
	}
	return []*pb.ProjectionStatus{
		{Projection: def("orgs_by_slug"), Generations: []*pb.GenerationStatus{
			{Generation: 2, State: "live", Consumer: reporting("cache-producer-1", 0, 3*time.Hour+4*time.Minute, 0)},
			{Generation: 1, State: "retired"},
		}},
		{Projection: def("sessions"), Running: &pb.BuildStatus{Generation: 1, Phase: "backfilling"},
			Generations: []*pb.GenerationStatus{
				{Generation: 1, State: "backfilling", Backfill: &pb.BackfillProgress{Offset: 450, EndOffset: 1000}},
			}},
		{Projection: def("teams"), Running: &pb.BuildStatus{Phase: "allocating"}},
		{Projection: def("users_by_email"), Running: &pb.BuildStatus{Generation: 4, Phase: "catching_up"},
			Generations: []*pb.GenerationStatus{
				{Generation: 4, State: "tailing", Consumer: reporting("cache-producer-0", 2500, 20*time.Second, 0)},
				{Generation: 3, State: "live", Consumer: reporting("cache-producer-0", 2, 1500*time.Millisecond, 3)},
				{Generation: 2, State: "retiring", Consumer: reporting("cache-producer-0", 0, time.Hour, 0)},
			}},
		{Projection: def("users_by_id"), Generations: []*pb.GenerationStatus{
			{Generation: 7, State: "tailing", Consumer: &pb.GenerationConsumer{State: "none", Message: "no replica has reported this generation yet",
				NextOffset: -1, HighWatermark: -1}},
			{Generation: 6, State: "live", Consumer: func() *pb.GenerationConsumer {
				c := reporting("cache-producer-2", 40, 5*time.Minute+10*time.Second, 0)
				c.State, c.Message = "not_reporting", "no replica reporting for 35s (last report from cache-producer-2)"
				return c
			}()},
		}},
		{Projection: def("users_by_org"), Generations: []*pb.GenerationStatus{
			{Generation: 9, State: "live", Consumer: reporting("cache-producer-1", 12, 3*24*time.Hour+5*time.Hour, 0)},
		}},
		{Projection: def("users_lost"), Generations: []*pb.GenerationStatus{
			{Generation: 5, State: "live", Rebuild: &pb.GenerationRebuild{Reason: "data_loss"},
				Consumer: reporting("cache-producer-0", 300, 2*time.Second, 0)},
		}},
	}
}

// TestRenderGolden: the table of every kind of row, without colours (as piped) and with them
// (each yellow or red row wrapped whole in its colour), against testdata/*.golden; run with
// -update to rewrite them after a deliberate change.
func TestRenderGolden(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	rows := Rows(fixtureStatuses(now), Thresholds{MaxLag: DefaultMaxLag, MaxAge: DefaultMaxAge}, now)
	for _, tc := range []struct {
		file  string
		color bool
	}{
		{"status.golden", false},
		{"status.color.golden", true},
	} {
		var b bytes.Buffer
		if err := Render(&b, rows, tc.color); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", tc.file)
		if *update {
			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run the test with -update to create it)", err)
		}
		if got := b.String(); got != string(want) {
			t.Errorf("%s differs:\ngot:\n%s\nwant:\n%s", tc.file, got, want)
		}
		if !tc.color && strings.Contains(b.String(), "\x1b[") {
			t.Errorf("%s: escape codes without colours", tc.file)
		}
	}
}

// TestRowHealth: each row's verdict, the reason in its note, and what makes the command exit 2.
func TestRowHealth(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	rows := Rows(fixtureStatuses(now), Thresholds{MaxLag: DefaultMaxLag, MaxAge: DefaultMaxAge}, now)
	want := map[string]struct {
		health Health
		note   string
	}{
		"orgs_by_slug/2":   {Healthy, ""},
		"sessions/1":       {Healthy, ""},
		"teams/-":          {Healthy, ""},
		"users_by_email/4": {Warning, "lag 2500 > 1000"},
		"users_by_email/3": {Warning, "3 dead letters in the last hour"},
		"users_by_id/7":    {Warning, "no replica has reported this generation yet"},
		"users_by_id/6":    {Failing, "no replica reporting for 35s"},
		"users_by_org/9":   {Failing, "12 records wait behind a change 3d05h old"},
		"users_lost/5":     {Failing, "Redis lost its data"},
	}
	if len(rows) != len(want) {
		t.Errorf("%d rows, want %d (retired and retiring generations left out): %+v", len(rows), len(want), rows)
	}
	for _, r := range rows {
		id := r.Projection + "/" + r.Generation
		w, ok := want[id]
		if !ok {
			t.Errorf("unexpected row %s", id)
			continue
		}
		if r.Health != w.health || !strings.Contains(r.Note, w.note) || (w.note == "" && r.Note != "") {
			t.Errorf("%s: health %d, note %q; want %d, %q", id, r.Health, r.Note, w.health, w.note)
		}
	}
}

func TestFormatAge(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 1500 * time.Millisecond: "1s", 59 * time.Second: "59s", 61 * time.Second: "1m01s",
		3*time.Hour + 4*time.Minute: "3h04m", 47 * time.Hour: "47h00m", 3*24*time.Hour + 5*time.Hour: "3d05h",
	} {
		if got := formatAge(d); got != want {
			t.Errorf("formatAge(%v) = %q, want %q", d, got, want)
		}
	}
}
