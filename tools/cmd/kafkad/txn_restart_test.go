package main_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// TestCommittedSurviveCrashMidTransaction kills the broker (SIGKILL) while a transactional
// producer has records in an open transaction, restarts it, and keeps producing committed
// transactions with the same transactional ID for longer than the transaction timeout. A
// read_committed reader must return every record whose commit the broker acknowledged, both
// right after the restart and later: a committed transaction must never turn into an aborted one
// (the chaos run's symptom: seq 9 and 10 were read, then disappeared from read_committed reads).
func TestCommittedSurviveCrashMidTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	k := devstacktest.Kafka(t)
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(k.LogPath()); err == nil {
				t.Logf("broker log:\n%s", b)
			}
		}
	})
	const topic = "txn-restart"
	adm, err := kgo.NewClient(kgo.SeedBrokers(k.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	compact := "compact"
	if _, err := kadm.NewClient(adm).CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": &compact}, topic); err != nil {
		t.Fatal(err)
	}

	const txnTimeout = 10 * time.Second
	prod, err := kgo.NewClient(kgo.SeedBrokers(k.Addr), kgo.DefaultProduceTopic(topic),
		kgo.TransactionalID("txn-restart-test"), kgo.TransactionTimeout(txnTimeout),
		kgo.RecordRetries(3), kgo.RetryTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()

	seq := 0
	records := func(n int) []*kgo.Record {
		recs := make([]*kgo.Record, n)
		for i := range recs {
			seq++
			recs[i] = &kgo.Record{Key: []byte("k" + strconv.Itoa(seq)), Value: []byte(strconv.Itoa(seq))}
		}
		return recs
	}
	// txn produces recs in one transaction as the publisher does; with killBeforeCommit the broker
	// dies after the records are written and before the commit.
	txn := func(recs []*kgo.Record, killBeforeCommit bool) error {
		var kill func()
		if killBeforeCommit {
			kill = func() {
				if err := k.Kill(); err != nil {
					t.Fatalf("kill broker: %v", err)
				}
			}
		}
		return devstacktest.Transact(ctx, prod, recs, kill)
	}
	committed := map[string]bool{}
	commit := func(recs []*kgo.Record) {
		for _, r := range recs {
			committed[string(r.Value)] = true
		}
	}

	for range 5 {
		recs := records(20)
		if err := txn(recs, false); err != nil {
			t.Fatalf("before the crash: %v", err)
		}
		commit(recs)
	}
	crashed := records(20)
	if err := txn(crashed, true); err == nil {
		t.Fatal("commit succeeded although the broker was killed before it")
	} else {
		t.Logf("transaction open at the crash: %v", err)
	}
	if err := k.Start(ctx); err != nil {
		t.Fatalf("restart broker: %v", err)
	}

	// Produce for longer than the transaction timeout: a timer for the transaction that was open at
	// the crash must not abort what was committed since.
	until := time.Now().Add(txnTimeout + 5*time.Second)
	tick := time.NewTicker(200 * time.Millisecond) // a steady load, not a wait for a condition
	defer tick.Stop()
	failures := 0
	for time.Now().Before(until) {
		<-tick.C
		recs := records(10)
		if err := txn(recs, false); err != nil {
			failures++
			if failures > 50 {
				t.Fatalf("after the restart, transactions keep failing: %v", err)
			}
			continue
		}
		commit(recs)
	}

	check := func(when string) {
		t.Helper()
		seen := readCommitted(ctx, t, k.Addr, topic)
		var missing []string
		for v := range committed {
			if !seen[v] {
				missing = append(missing, v)
			}
		}
		if len(missing) > 0 {
			t.Errorf("%s: %d of %d committed records missing from a read_committed read (e.g. seq %s)", when, len(missing), len(committed), missing[0])
		}
		for _, r := range crashed {
			if seen[string(r.Value)] {
				t.Errorf("%s: seq %s of the transaction open at the crash is visible read_committed", when, r.Value)
				break
			}
		}
	}
	check("after the transaction timeout")
	if err := k.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	check("after a second crash and restart")
	if err := k.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	check("after a clean restart")
}

// readCommitted reads the topic from its start to its end, read_committed, and returns the values.
func readCommitted(ctx context.Context, t *testing.T, addr, topic string) map[string]bool {
	t.Helper()
	adm, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, ok := ends.Lookup(topic, 0)
	if !ok || end.Err != nil {
		t.Fatalf("end offset: %v", end.Err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[string]bool{}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// The high watermark counts control records and aborted batches too: stop when a fetch comes
	// back past it or nothing more arrives before the deadline.
	for {
		fs := cl.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return seen
			}
			t.Fatal(err)
		}
		last := int64(-1)
		fs.EachRecord(func(r *kgo.Record) {
			seen[string(r.Value)] = true
			last = r.Offset
		})
		if last >= end.Offset-2 { // the last data record; a commit marker may follow it
			return seen
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
	}
}
