package api

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
	"github.com/distcache/distcache/workflows/registry"
)

// DefaultConsumerStale is Settings.ConsumerStale's default: five of the cache-producer's default
// report intervals (2 s), so a replica that missed a report or two still counts as reporting.
const DefaultConsumerStale = 10 * time.Second

// States of GenerationConsumer.state.
const (
	ConsumerReporting    = "reporting"     // the owner reported within Settings.ConsumerStale
	ConsumerNotReporting = "not_reporting" // the last report is older: no replica consumes the generation
	ConsumerNone         = "none"          // no replica has reported the generation yet
)

// ConsumerReader is implemented by registry.Store: each generation's last consumer report (the
// cache-producer's consumerreport). A Registry without it shows no consumer.
type ConsumerReader interface {
	Consumers(ctx context.Context, name string) (map[int64]registry.Consumer, error)
}

var _ ConsumerReader = (*registry.Store)(nil)

// consumers reads the consumer reports of projection name's generations: nil when the registry
// cannot tell (no ConsumerReader, or the read failed, logged), so GetStatus leaves the field out
// rather than claim that no replica reports.
func (s *Service) consumers(ctx context.Context, name string) map[int64]registry.Consumer {
	cr, ok := s.reg.(ConsumerReader)
	if !ok {
		return nil
	}
	m, err := cr.Consumers(ctx, name)
	if err != nil {
		s.log.Warn("read the generations' consumer reports", "projection", name, "err", err)
		return nil
	}
	if m == nil {
		m = map[int64]registry.Consumer{}
	}
	return m
}

// consumerPB describes a generation's consumer from its last report c (found: one exists) as of
// now: a report older than stale says that no replica is reporting, with the figures of that
// report. Ages are never negative (clocks of the database and this host may differ a little).
func consumerPB(c registry.Consumer, found bool, now time.Time, stale time.Duration) *pb.GenerationConsumer {
	if !found {
		return &pb.GenerationConsumer{State: ConsumerNone, Message: "no replica has reported this generation yet",
			NextOffset: -1, HighWatermark: -1}
	}
	age := max(now.Sub(c.ReportedAt), 0)
	out := &pb.GenerationConsumer{
		State: ConsumerReporting, Owner: c.Owner, LagRecords: c.Lag(),
		NextOffset: c.NextOffset, HighWatermark: c.HighWatermark,
		DeadLettersLastHour: int32(min(c.DeadLettersLastHour, 1<<31-1)),
		ReportedAt:          timestamppb.New(c.ReportedAt), ReportAgeSeconds: age.Seconds(),
	}
	if !c.NewestSourceTime.IsZero() {
		out.NewestChangeTime = timestamppb.New(c.NewestSourceTime)
		out.NewestChangeAgeSeconds = max(now.Sub(c.NewestSourceTime), 0).Seconds()
	}
	if age > stale {
		out.State = ConsumerNotReporting
		out.Message = fmt.Sprintf("no replica reporting for %s (last report from %s)", age.Round(time.Second), c.Owner)
	}
	return out
}
