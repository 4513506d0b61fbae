package projector

import (
	"errors"
	"fmt"
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
