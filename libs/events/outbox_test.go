package events

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// recordingQuerier records statements and fails none; it has no SendBatch,
// so Write takes its statement-by-statement path.
type recordingQuerier struct {
	sqls []string
	args [][]any
}

func (q *recordingQuerier) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	q.sqls = append(q.sqls, sql)
	q.args = append(q.args, args)
	if strings.HasPrefix(sql, "WITH") {
		return pgconn.NewCommandTag("INSERT 0 1"), nil
	}
	return pgconn.NewCommandTag("SELECT 1"), nil
}

func TestOutboxWriteValidatesBeforeWriting(t *testing.T) {
	t.Parallel()
	w, err := NewOutboxWriter(WithMaxEventBytes(100))
	if err != nil {
		t.Fatal(err)
	}
	ok := Envelope{Aggregate: "users", Key: "1", Op: OpUpsert, Payload: json.RawMessage(`{}`)}
	tests := []struct {
		name      string
		events    []Envelope
		wantField string
	}{
		{"no key in second event", []Envelope{ok, {Aggregate: "users", Op: OpDelete}}, FieldKey},
		{"negative version", []Envelope{{Aggregate: "users", Key: "1", Version: -1, Op: OpDelete}}, FieldVersion},
		{"bad event id", []Envelope{{Aggregate: "users", Key: "1", Op: OpDelete, EventID: "x"}}, FieldEventID},
		{"payload not object", []Envelope{{Aggregate: "users", Key: "1", Op: OpUpsert, Payload: json.RawMessage(`1`)}}, FieldPayload},
		{"oversized", []Envelope{{Aggregate: "users", Key: "1", Op: OpUpsert, Payload: json.RawMessage(`{"a":"` + strings.Repeat("x", 100) + `"}`)}}, FieldSize},
		{"bad aggregate", []Envelope{{Aggregate: "a.b", Key: "1", Op: OpDelete}}, FieldAggregate},
	}
	for _, tt := range tests {
		q := &recordingQuerier{}
		err := w.Write(context.Background(), q, tt.events...)
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != tt.wantField {
			t.Errorf("%s: Write = %v, want *ValidationError on %s", tt.name, err, tt.wantField)
		}
		if len(q.sqls) != 0 {
			t.Errorf("%s: Write ran %d statements before rejecting, want none", tt.name, len(q.sqls))
		}
	}
}

func TestOutboxWriteStatements(t *testing.T) {
	t.Parallel()
	w, err := NewOutboxWriter()
	if err != nil {
		t.Fatal(err)
	}
	q := &recordingQuerier{}
	events := []Envelope{
		{Aggregate: "users", Key: "1", Op: OpUpsert, Payload: json.RawMessage(`{"id":1}`), Headers: map[string]string{"traceparent": "t"}},
		{Aggregate: "users", Key: "2", Version: 9, Op: OpDelete},
		{Aggregate: "orgs", Key: "x", Op: OpDelete},
	}
	if err := w.Write(context.Background(), q, events...); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if len(q.sqls) != 5 {
		t.Fatalf("%d statements, want 3 inserts and 2 notifies: %q", len(q.sqls), q.sqls)
	}
	// Args: aggregate, key, op, payload, headers, event id, version, source time.
	a := q.args[0]
	if a[0] != "users" || a[1] != "1" || a[2] != "upsert" || string(a[3].([]byte)) != `{"id":1}` || a[4] != `{"traceparent":"t"}` || a[6] != nil || a[7] != nil {
		t.Errorf("insert args %v", a)
	}
	if a := q.args[1]; a[3] != nil || a[4] != "{}" || a[6] != int64(9) {
		t.Errorf("delete insert args %v, want nil payload, {} headers, version 9", a)
	}
	if q.args[3][0] != "users" || q.args[4][0] != "orgs" || !strings.Contains(q.sqls[3], "pg_notify('distcache_outbox'") {
		t.Errorf("notifies %q %v, want one per aggregate on distcache_outbox", q.sqls[3:], q.args[3:])
	}
	if err := w.Write(context.Background(), q); err != nil || len(q.sqls) != 5 {
		t.Errorf("Write() with no events = %v after %d statements, want nil and none", err, len(q.sqls)-5)
	}
}
