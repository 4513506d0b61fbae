package projector

import (
	"context"
	"errors"
	"fmt"

	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// Marks: what a Writer knows of each generation's bookkeeping, so that a
// batch notices when Redis no longer holds what it committed (issue #15).
// Every batch reads the generation's epoch (ledger.EpochKey) with its
// offset, in the same round trip; a batch of a generation the Writer has a
// Mark of stops with ErrBookkeepingLost when
//
//   - the offset is gone (the Writer committed one),
//   - the epoch is gone or another one (Redis lost the keys, or another
//     producer rebuilt the generation, which stores a new epoch),
//   - the offset is below the one the Writer committed (a Redis that
//     restarted from an older copy of its data).
//
// The Writer does not decide what it means: its caller (package fanout)
// looks at the generation again (rebuild.Lost) and rebuilds it or adopts
// the new epoch. A Writer without a Mark of the generation (a new process,
// or after Forget) takes the one it reads; on a single Redis node a
// generation's first commit creates its epoch if none is stored (a
// backfill's first batch, or a generation written before epochs).

// Mark is what a Writer knows of a generation's bookkeeping: the epoch it
// was created or last rebuilt under, the highest offset known committed
// under it and its version base (so the highest version it may hold is
// Base + Offset).
type Mark struct {
	Epoch  string
	Offset int64
	Base   int64
}

// ErrBookkeepingLost is wrapped by Run's error when a generation's
// bookkeeping in Redis is not the one the Writer committed (see Mark). Run
// stops; the caller decides whether the data was lost.
var ErrBookkeepingLost = errors.New("the generation's bookkeeping is not the one this producer committed")

// Mark returns what the Writer knows of t's bookkeeping.
func (w *Writer) Mark(t Target) (Mark, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m, ok := w.marks[t.String()]
	return m, ok
}

// SetMark records m as what the Writer knows of t's bookkeeping (after the
// caller created, read or rebuilt it).
func (w *Writer) SetMark(t Target, m Mark) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.marks == nil {
		w.marks = map[string]Mark{}
	}
	w.marks[t.String()] = m
}

// advanceMark records that t's bookkeeping holds offset under epoch with
// base: the offset only grows within one epoch (two writers of one
// generation in one process each report what they saw).
func (w *Writer) advanceMark(t Target, epoch string, offset, base int64) {
	if epoch == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.marks == nil {
		w.marks = map[string]Mark{}
	}
	m, ok := w.marks[t.String()]
	if ok && m.Epoch == epoch {
		offset = max(offset, m.Offset)
	}
	w.marks[t.String()] = Mark{Epoch: epoch, Offset: offset, Base: base}
}

// checkMark returns an error wrapping ErrBookkeepingLost when what a batch
// read of t's bookkeeping (offset known and offset, epoch) is not what the
// Writer's Mark says; nil without a Mark.
func (w *Writer) checkMark(t Target, known bool, offset int64, epoch string) error {
	m, ok := w.Mark(t)
	if !ok {
		return nil
	}
	if why := m.Differs(known, offset, epoch); why != "" {
		return fmt.Errorf("write %s: %w: %s", t, ErrBookkeepingLost, why)
	}
	return nil
}

// Differs says in words how a generation's bookkeeping as read (whether its
// offset exists, the offset, the epoch) differs from m; "" when it does not.
func (m Mark) Differs(known bool, offset int64, epoch string) string {
	switch {
	case !known:
		return fmt.Sprintf("its offset is gone (offset %d was committed under epoch %s)", m.Offset, m.Epoch)
	case epoch == "":
		return fmt.Sprintf("its epoch is gone (epoch %s, offset %d committed)", m.Epoch, m.Offset)
	case epoch != m.Epoch:
		return fmt.Sprintf("its epoch is %s, not %s", epoch, m.Epoch)
	case offset < m.Offset:
		return fmt.Sprintf("its offset %d is below the offset %d committed under epoch %s", offset, m.Offset, m.Epoch)
	}
	return ""
}

// ErrFenced is wrapped by Run's error when another replica claimed the
// generation (ledger.WriterKey): this Writer's claim (SetClaim) is no longer
// the generation's writer, so nothing of the batch was written (on Redis
// Cluster: no offset; its values are version-guarded and the same the new
// writer writes). Run stops; the caller must not claim the generation back.
var ErrFenced = ledger.ErrFenced

// SetClaim makes every batch of t this Writer commits check that claim is
// t's writer in Redis (ledger.Claim stored it); "" checks nothing (a
// backfill's writes).
func (w *Writer) SetClaim(t Target, claim string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.claims == nil {
		w.claims = map[string]string{}
	}
	if claim == "" {
		delete(w.claims, t.String())
		return
	}
	w.claims[t.String()] = claim
}

// ClaimStream stores claim as the writer of t's change stream (Redis
// Cluster only, where a batch's stream entries are appended after its values
// and the claim checked with the offset cannot hold them back; see
// distcache.Publisher.ClaimStream). The caller has just stored claim as t's
// writer (ledger.ClaimIf) and calls it before t's first batch; a replica
// paused since its values were written then appends nothing
// (TestZombieIsFenced/cluster_before_stream).
func (w *Writer) ClaimStream(ctx context.Context, t Target, claim string) error {
	if !w.ledger.Cluster() || claim == "" {
		return nil
	}
	return w.pub.ClaimStream(ctx, t.Projection, t.Generation, claim)
}

// claimOf returns the claim SetClaim set for t ("" when none).
func (w *Writer) claimOf(t Target) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.claims[t.String()]
}

// checkClaim returns an error wrapping ErrFenced when the Writer holds a
// claim of t and stored is another one, and one wrapping ErrBookkeepingLost
// when stored is "" (Redis lost the claim: the caller claims it again where
// none is stored). Forget keeps the claim: once a Writer claimed a
// generation, its batches are checked until SetClaim replaces the claim.
func (w *Writer) checkClaim(t Target, stored string) error {
	claim := w.claimOf(t)
	switch {
	case claim == "" || stored == claim:
		return nil
	case stored == "":
		return fmt.Errorf("write %s: %w: its writer claim is gone", t, ErrBookkeepingLost)
	}
	return fmt.Errorf("write %s: %w: its writer is %s", t, ErrFenced, ledger.ClaimReplica(stored))
}
