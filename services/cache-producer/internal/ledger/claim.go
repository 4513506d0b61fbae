package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Writer claims: which producer replica writes a generation (issue #15).
//
//	dc:P:producer:gN:writer{dc:P:producer:gN:offset}
//	                            string: "<replica> <16 hex digits>", the
//	                            claim of the replica that writes the
//	                            generation's live updates
//
// Replicas share the topics through a Kafka consumer group; the replica a
// topic is assigned to claims each of the topic's generations before it
// writes (Claim), and every batch it commits checks that the claim is still
// its own: on a single Redis node the transaction WATCHes the claim with
// the offset and reads it under the watch, on Redis Cluster the claim is
// read with the offset before a batch is planned and checked again by the
// script that stores the offset (it shares the offset's slot). A replica
// that was paused past the group's session timeout (a zombie) finds another
// claim when it resumes: its batch is refused (ErrFenced upstream) and
// counted, and it does not claim the generation back.

// WriterKey holds the claim of the replica that writes generation gen.
func WriterKey(proj string, gen int64) string {
	return genPrefix(proj, gen) + "writer{" + OffsetKey(proj, gen) + "}"
}

// NewClaim returns a fresh claim for replica: its name and a random part,
// so that two runs of one replica (a restart) hold different claims.
func NewClaim(replica string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return replica + " " + hex.EncodeToString(b[:])
}

// ClaimReplica returns the replica part of a claim ("" for "").
func ClaimReplica(claim string) string {
	name, _, _ := strings.Cut(claim, " ")
	return name
}

// ClaimIf stores claim as generation gen's writer and returns the claim
// stored before ("" when there was none). With onlyIfFree it stores it only
// where no claim is stored (the returned claim, when not "", is then still
// the writer).
func (l *Ledger) ClaimIf(ctx context.Context, proj string, gen int64, claim string, onlyIfFree bool) (string, error) {
	args := redis.SetArgs{Get: true}
	if onlyIfFree {
		args.Mode = "NX"
	}
	prev, err := l.rdb.SetArgs(ctx, WriterKey(proj, gen), claim, args).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("claim %s/g%d: %w", proj, gen, err)
	}
	return prev, nil
}

// Writer returns generation gen's claim ("" when none is stored).
func (l *Ledger) Writer(ctx context.Context, proj string, gen int64) (string, error) {
	s, err := l.rdb.Get(ctx, WriterKey(proj, gen)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("read the writer of %s/g%d: %w", proj, gen, err)
	}
	return s, nil
}

// errFencedReply is what fencedOffsetScript answers when the claim is not
// the caller's.
const errFencedReply = "FENCED"

// ErrFenced is returned (wrapped) by a commit whose claim is no longer the
// generation's writer.
var ErrFenced = errors.New("another replica claimed the generation")

// fencedOffsetScript stores the offset (KEYS[1]) only while the writer
// claim (KEYS[2], in the offset's slot) is the caller's (ARGV[2]).
var fencedOffsetScript = redis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return redis.error_reply('FENCED') end
redis.call('SET', KEYS[1], ARGV[1])
return 1`)

// isFencedReply reports whether err is fencedOffsetScript's refusal.
func isFencedReply(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), errFencedReply)
}
