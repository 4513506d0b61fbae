package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// ConsumerReport is what the cache-producer replica that keeps a generation up to date reports of
// it (table distcache_generation_consumers, control migration 4): the registry keeps the last
// report per generation, whichever replica sent it, so GetStatus can say whether the generation
// is fresh.
type ConsumerReport struct {
	Projection string
	Generation int64
	// Owner names the replica (the cache-producer's PRODUCER_REPLICA_NAME).
	Owner string
	// NextOffset is the generation's next topic offset, HighWatermark the topic's end, both as the
	// owner last saw them (-1: not known yet); their difference is the lag as of the report.
	NextOffset    int64
	HighWatermark int64
	// NewestSourceTime is the source time (dc-source-ts) of the newest change the owner applied
	// since it took the generation; zero when none yet.
	NewestSourceTime time.Time
	// DeadLettersLastHour counts the records the owner dead-lettered in the last hour.
	DeadLettersLastHour int
}

// Consumer is a generation's last consumer report, with the time the registry received it.
type Consumer struct {
	ConsumerReport
	ReportedAt time.Time
}

// Lag is the owner's lag in records as of ReportedAt (HighWatermark - NextOffset, 0 when either is
// unknown).
func (c Consumer) Lag() int64 {
	if c.NextOffset < 0 || c.HighWatermark < 0 {
		return 0
	}
	return max(c.HighWatermark-c.NextOffset, 0)
}

// ReportConsumers records each report as its generation's row (inserted or replaced), in one
// statement, with reported_at the database's now(). A generation the registry does not list is
// left out. It returns how many rows it wrote.
func (s *Store) ReportConsumers(ctx context.Context, reports []ConsumerReport) (int64, error) {
	if len(reports) == 0 {
		return 0, nil
	}
	var (
		projs   = make([]string, len(reports))
		gens    = make([]int64, len(reports))
		owners  = make([]string, len(reports))
		nexts   = make([]int64, len(reports))
		hwms    = make([]int64, len(reports))
		newest  = make([]pgtype.Timestamptz, len(reports))
		letters = make([]int64, len(reports))
	)
	for i, r := range reports {
		projs[i], gens[i], owners[i] = r.Projection, r.Generation, r.Owner
		nexts[i], hwms[i], letters[i] = r.NextOffset, r.HighWatermark, int64(r.DeadLettersLastHour)
		if !r.NewestSourceTime.IsZero() {
			newest[i] = pgtype.Timestamptz{Time: r.NewestSourceTime.UTC(), Valid: true}
		}
	}
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO distcache_generation_consumers AS c
			(projection, generation, owner, next_offset, high_watermark, newest_source_time, dead_letters_last_hour, reported_at)
		SELECT r.projection, r.generation, r.owner, r.next_offset, r.high_watermark, r.newest, r.dead, now()
		FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::timestamptz[], $7::bigint[])
			AS r(projection, generation, owner, next_offset, high_watermark, newest, dead)
		JOIN distcache_generations g ON g.projection = r.projection AND g.generation = r.generation
		ON CONFLICT (projection, generation) DO UPDATE SET
			owner = excluded.owner, next_offset = excluded.next_offset, high_watermark = excluded.high_watermark,
			newest_source_time = excluded.newest_source_time, dead_letters_last_hour = excluded.dead_letters_last_hour,
			reported_at = excluded.reported_at`,
		projs, gens, owners, nexts, hwms, newest, letters)
	if err != nil {
		return 0, fmt.Errorf("report consumers: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Consumers returns the last consumer report of each generation of projection name that is kept
// up to date (tailing, live, retiring), by generation (none: an empty map). A report older than a
// few report intervals means no replica is consuming the generation: the caller judges by
// ReportedAt.
func (s *Store) Consumers(ctx context.Context, name string) (map[int64]Consumer, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT c.generation, c.owner, c.next_offset, c.high_watermark, c.newest_source_time, c.dead_letters_last_hour, c.reported_at
		FROM distcache_generation_consumers c
		JOIN distcache_generations g ON g.projection = c.projection AND g.generation = c.generation
		WHERE c.projection = $1 AND g.state IN ('tailing', 'live', 'retiring')`, name)
	if err != nil {
		return nil, fmt.Errorf("read consumers of %s: %w", name, err)
	}
	defer rows.Close()
	out := map[int64]Consumer{}
	for rows.Next() {
		c := Consumer{ConsumerReport: ConsumerReport{Projection: name}}
		var (
			newest pgtype.Timestamptz
			dead   int32
		)
		if err := rows.Scan(&c.Generation, &c.Owner, &c.NextOffset, &c.HighWatermark, &newest, &dead, &c.ReportedAt); err != nil {
			return nil, fmt.Errorf("read consumers of %s: %w", name, err)
		}
		if newest.Valid {
			c.NewestSourceTime = newest.Time.UTC()
		}
		c.DeadLettersLastHour = int(dead)
		c.ReportedAt = c.ReportedAt.UTC()
		out[c.Generation] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read consumers of %s: %w", name, err)
	}
	return out, nil
}
