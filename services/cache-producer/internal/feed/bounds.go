package feed

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Bounds are what the broker says of a topic's partition 0 now.
type Bounds struct {
	// Exists is false while the topic does not exist (not created yet, or
	// deleted); the other fields are then zero.
	Exists bool
	// ID is the topic's ID (base64), which a re-created topic changes; ""
	// when the broker does not report topic IDs.
	ID string
	// Start is the log start offset, End the end offset (high watermark).
	Start, End int64
}

// ReadBounds asks the broker for topic's Bounds, with a client of its own
// built from opts (seed brokers, TLS, SASL).
func ReadBounds(ctx context.Context, opts []kgo.Opt, topic string) (Bounds, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return Bounds{}, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return Bounds{}, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	td, ok := md.Topics[topic]
	if !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
		return Bounds{}, nil
	}
	if td.Err != nil {
		return Bounds{}, fmt.Errorf("metadata of %s: %w", topic, td.Err)
	}
	b := Bounds{Exists: true}
	if td.ID != (kadm.TopicID{}) {
		b.ID = td.ID.String()
	}
	lookup := func(what string, l kadm.ListedOffsets, err error) (int64, error) {
		if err != nil {
			return 0, fmt.Errorf("list %s offsets of %s: %w", what, topic, err)
		}
		o, ok := l.Lookup(topic, 0)
		if !ok {
			return 0, fmt.Errorf("list %s offsets of %s: no answer for partition 0", what, topic)
		}
		if o.Err != nil {
			return 0, fmt.Errorf("list %s offsets of %s: %w", what, topic, o.Err)
		}
		return o.Offset, nil
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if b.Start, err = lookup("start", starts, err); err != nil {
		return Bounds{}, err
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if b.End, err = lookup("end", ends, err); err != nil {
		return Bounds{}, err
	}
	return b, nil
}
