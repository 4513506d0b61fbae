package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSeq(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{`{"id":1,"k":"item-1","seq":42,"pad":"x"}`, 42, true},
		{`{"seq": 7}`, 7, true},
		{`{"seq":"9"}`, 9, true},
		{`{"id":1}`, 0, false},
		{`{"seq":}`, 0, false},
	} {
		got, ok := Seq([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("Seq(%s) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestDecodeRedisValue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want RedisItem
	}{
		{"000000000000002as" + `{"seq":3}`, RedisItem{Found: true, Version: 42, Seq: 3}},
		{"000000000000002bd", RedisItem{}}, // a tombstone
		{"short", RedisItem{}},
		{"zzzzzzzzzzzzzzzzs{}", RedisItem{}},
	} {
		if got := decodeRedisValue(tc.in); got != tc.want {
			t.Errorf("decodeRedisValue(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestMetric(t *testing.T) {
	t.Parallel()
	const exposition = `# HELP distcache_publisher_events_total Outbox events acknowledged by the broker.
# TYPE distcache_publisher_events_total counter
distcache_publisher_events_total{aggregate="orgs"} 3
distcache_publisher_events_total{aggregate="users"} 39.5
distcache_publisher_events_total_extra 1000
distcache_publisher_lag_seconds 0.25
`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, exposition)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"distcache_publisher_events_total", 42.5}, // both labelled samples, not the longer name
		{"distcache_publisher_lag_seconds", 0.25},
		{"distcache_publisher_backload_running", 0}, // a metric nothing has counted yet
	} {
		got, err := Metric(context.Background(), addr, tc.name)
		if err != nil || got != tc.want {
			t.Errorf("Metric(%s) = %v, %v; want %v, nil", tc.name, got, err, tc.want)
		}
	}
	srv.Close()
	if _, err := Metric(context.Background(), addr, "distcache_publisher_lag_seconds"); err == nil {
		t.Error("Metric of a closed server: nil error")
	}
}

// fakeControlPlane answers the REST calls API makes: a projection "taken" exists already, and the
// status of "p" shows a running backfill on its first two polls and a live generation 1 after.
func fakeControlPlane(t *testing.T, failed bool) *httptest.Server {
	t.Helper()
	var polls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"message":"unauthenticated"}`, http.StatusUnauthorized)
			return
		}
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/projections":
			var d ProjectionDef
			if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if d.Name == "taken" {
				http.Error(w, `{"message":"exists"}`, http.StatusConflict)
				return
			}
			_, _ = io.WriteString(w, `{}`)
		case r.Method == http.MethodGet && r.URL.Path == "/v1/projections/p/status":
			switch n := polls.Add(1); {
			case failed:
				_, _ = io.WriteString(w, `{"projection":{"current_generation":"0"},"generations":[{"generation":"1","state":"failed"}]}`)
			case n <= 2:
				_, _ = io.WriteString(w, `{"projection":{"current_generation":"0"},"running":{"generation":"1","phase":"backfilling",
					"backfill":{"records_done":"10","offset":"10","end_offset":"20","rate_per_sec":5},
					"workflow":{"workflow_id":"projection/p","ui_url":"http://ui/p"}}}`)
			default:
				_, _ = io.WriteString(w, `{"projection":{"current_generation":"1"},"generations":[{"generation":"1","state":"live"}]}`)
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestAPIEnsureProjection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := fakeControlPlane(t, false)
	api := NewAPI(srv.URL, "tok")
	for _, tc := range []struct {
		name        string
		wantCreated bool
	}{{"p", true}, {"taken", false}} {
		created, err := api.EnsureProjection(ctx, ProjectionDef{Name: tc.name, Model: "m", KeyTemplate: "{k}", Fields: []string{"k"}})
		if err != nil || created != tc.wantCreated {
			t.Errorf("EnsureProjection(%s) = %v, %v; want %v, nil", tc.name, created, err, tc.wantCreated)
		}
	}
	var he *HTTPError
	err := NewAPI(srv.URL, "wrong").CreateProjection(ctx, ProjectionDef{Name: "p"})
	if !errors.As(err, &he) || he.Status != http.StatusUnauthorized {
		t.Errorf("CreateProjection with a wrong token: %v; want an HTTPError 401", err)
	}
}

func TestAPIWaitLive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var lines []string
	say := func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) }
	gens, err := NewAPI(fakeControlPlane(t, false).URL, "tok").WaitLive(ctx, []string{"p"}, 10*time.Second, say)
	if err != nil || gens["p"] != 1 {
		t.Fatalf("WaitLive = %v, %v; want p at generation 1", gens, err)
	}
	want := []string{
		"p: workflow projection/p  http://ui/p",
		"p: g1 backfilling        10 records  offset 10/20  5 rec/s",
		"p: g1 live",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("progress lines:\n%q\nwant\n%q", lines, want)
	}

	_, err = NewAPI(fakeControlPlane(t, true).URL, "tok").WaitLive(ctx, []string{"p"}, 10*time.Second, nil)
	if err == nil || !strings.Contains(err.Error(), "generation 1 failed") {
		t.Errorf("WaitLive with a failed generation: %v; want an error naming it", err)
	}
	_, err = NewAPI(fakeControlPlane(t, false).URL, "tok").WaitLive(ctx, []string{"missing"}, 300*time.Millisecond, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitLive of an unknown projection: %v; want the deadline", err)
	}
}
