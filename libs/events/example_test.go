package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/distcache/distcache/libs/events"
)

func ExampleToRecord() {
	e := events.Envelope{
		Aggregate:  "users",
		Key:        "42",
		Version:    3,
		Op:         events.OpUpsert,
		Payload:    json.RawMessage(`{"id":42,"email":"a@example.com"}`),
		Headers:    map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		EventID:    "7f1d2b5e-0c4a-4c8e-9a57-2f3e6d1b8a90",
		SourceTime: time.Date(2026, 11, 27, 19, 0, 0, 0, time.UTC),
	}
	r, err := events.ToRecord(e, events.DefaultTopicPrefix)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s key=%s value=%s\n", r.Topic, r.Key, r.Value)
	for _, h := range r.Headers {
		fmt.Printf("%s: %s\n", h.Key, h.Value)
	}
	// Output:
	// distcache.users key=42 value={"id":42,"email":"a@example.com"}
	// dc-version: 3
	// dc-op: upsert
	// dc-event-id: 7f1d2b5e-0c4a-4c8e-9a57-2f3e6d1b8a90
	// dc-source-ts: 2026-11-27T19:00:00Z
	// dc-aggregate: users
	// traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
}

func ExampleEnvelope_Validate() {
	e := events.Envelope{Aggregate: "users", Key: "42", Version: 1, Op: events.OpUpsert, Payload: json.RawMessage(`[1,2]`)}
	err := e.Validate()
	var ve *events.ValidationError
	if errors.As(err, &ve) {
		fmt.Println(ve.Field, "-", ve.Reason)
	}
	fmt.Println(errors.Is(err, events.ErrInvalidEnvelope))
	// Output:
	// payload - not a JSON object
	// true
}

// A core service writes its change and the event in one transaction.
func ExampleOutboxWriter_Write() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, "postgres://app@127.0.0.1:5432/core")
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	w, err := events.NewOutboxWriter()
	if err != nil {
		return
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE users SET email = $1 WHERE id = $2`, "b@example.com", 42); err != nil {
			return err
		}
		// Version 0: the writer allocates the key's next version.
		return w.Write(ctx, tx, events.Envelope{
			Aggregate: "users", Key: "42", Op: events.OpUpsert,
			Payload: json.RawMessage(`{"id":42,"email":"b@example.com"}`),
		})
	})
	if err != nil {
		fmt.Println(err)
	}
}
