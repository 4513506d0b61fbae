package main

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
	"github.com/distcache/distcache/workflows/registry"
)

// TestConsumerReportFreshness runs the service as a real process against PostgreSQL, Redis and the
// broker, and watches what it reports of its generation in the registry (what GetStatus shows as
// the generation's consumer), every 200 ms:
//   - an applied change: the owner is the replica's name, the newest change's source time is that
//     record's, the lag is 0;
//   - a record that is not JSON: dead_letters_last_hour counts it;
//   - no change for a while: the reports go on (reported_at moves) and the newest change stays, so
//     its age grows;
//   - Redis stopped (SIGSTOP) while records arrive: the lag is reported above 0, and back to 0 once
//     Redis continues;
//   - the producer stopped: reported_at stops moving (GetStatus then says no replica is reporting).
func TestConsumerReportFreshness(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newStack(ctx, t)
	p := prodtest.NewProducer(t, st.kafka.Addr, "distcache", "users")
	zero := int64(0)
	if err := st.reg.CreateProjection(ctx, usersByEmail); err != nil {
		t.Fatal(err)
	}
	gen, _, err := st.reg.AllocateGeneration(ctx, usersByEmail, "wf-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.reg.SetState(ctx, usersByEmail.Name, gen, workflows.StateLive, &zero); err != nil {
		t.Fatal(err)
	}
	const interval = 200 * time.Millisecond
	svc := startChild(t, []string{
		"PRODUCER_DATABASE_URL=" + st.dbURL, "PRODUCER_REDIS_ADDRS=" + st.redis.Addr, "PRODUCER_KAFKA_BROKERS=" + st.kafka.Addr,
		"PRODUCER_HTTP_ADDR=" + freeAddr(t), "PRODUCER_REPLICA_NAME=replica-a",
		"PRODUCER_STATUS_REPORT_INTERVAL=" + interval.String(),
	})
	consumer := func() (registry.Consumer, bool) {
		cs, err := st.reg.Consumers(ctx, usersByEmail.Name)
		c, ok := cs[gen]
		return c, err == nil && ok
	}

	// An applied change.
	before := time.Now()
	offs := p.Produce(p.Upsert("1", map[string]any{"id": "1", "email": "a@x.io", "status": "active"}))
	var c registry.Consumer
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		var ok bool
		c, ok = consumer()
		return ok && c.NextOffset == offs[0]+1
	}, "the generation's report shows offset %d applied", offs[0]+1)
	if c.Owner != "replica-a" || c.Lag() != 0 || c.NewestSourceTime.Before(before.Add(-time.Second)) || c.NewestSourceTime.After(time.Now()) {
		t.Errorf("after one change: %+v; want owner replica-a, lag 0, newest change at the record's source time (after %v)", c, before)
	}
	t.Logf("after one change: owner %s, lag %d, newest change %v old at the report", c.Owner, c.Lag(),
		c.ReportedAt.Sub(c.NewestSourceTime).Round(time.Millisecond))

	// A record that is not JSON is dead-lettered and counted.
	offs = p.Produce(p.Garbage("2"))
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		c, ok := consumer()
		return ok && c.NextOffset == offs[0]+1 && c.DeadLettersLastHour >= 1
	}, "the malformed record is counted in dead_letters_last_hour")

	// No change: the reports go on and the newest change gets older.
	first, _ := consumer()
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		c, ok := consumer()
		return ok && c.ReportedAt.Sub(first.ReportedAt) >= 3*interval
	}, "reported_at moves while nothing changes")
	later, _ := consumer()
	if !later.NewestSourceTime.Equal(first.NewestSourceTime) || later.Lag() != 0 {
		t.Errorf("without changes: %+v; want the newest change still %v, lag 0", later, first.NewestSourceTime)
	}
	ageFirst, ageLater := first.ReportedAt.Sub(first.NewestSourceTime), later.ReportedAt.Sub(later.NewestSourceTime)
	if ageLater-ageFirst < 3*interval {
		t.Errorf("the newest change's age went from %v to %v; want it to grow by at least %v", ageFirst, ageLater, 3*interval)
	}

	// Redis stopped while records arrive: a lag.
	pid := st.redis.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT redis: %v", err)
			}
		}
	}
	t.Cleanup(resume)
	var last int64
	for i := range 5 {
		offs = p.Produce(p.Upsert("3", map[string]any{"id": "3", "email": "c@x.io", "status": "active", "n": i}))
		last = offs[0]
	}
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		c, ok := consumer()
		return ok && c.Lag() > 0 && c.HighWatermark == last+1
	}, "a lag is reported while Redis does not answer")
	c, _ = consumer()
	t.Logf("Redis stopped: lag %d (next offset %d, high watermark %d)", c.Lag(), c.NextOffset, c.HighWatermark)
	resume()
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		c, ok := consumer()
		return ok && c.Lag() == 0 && c.NextOffset == last+1
	}, "the lag is back to 0 once Redis continues")

	// The producer stopped: the report stops moving.
	if err := svc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := svc.cmd.Wait(); err != nil {
		t.Fatalf("the producer exited with %v", err)
	}
	stopped, _ := consumer()
	pool, err := pgxpool.New(ctx, st.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// Five report intervals pass (by the database's clock, which stamps reported_at) with no report.
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		var now time.Time
		err := pool.QueryRow(ctx, `SELECT now()`).Scan(&now)
		return err == nil && now.Sub(stopped.ReportedAt) >= 5*interval
	}, "five report intervals pass")
	if c, _ := consumer(); !c.ReportedAt.Equal(stopped.ReportedAt) {
		t.Errorf("reported_at moved from %v to %v after the producer stopped", stopped.ReportedAt, c.ReportedAt)
	}
}
