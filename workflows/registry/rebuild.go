package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// Rebuild is a generation the cache-producer is rebuilding in place from its topic's start (its
// topic was re-created, or Redis lost its data), as the producer reports it in the registry
// (columns rebuild_reason, rebuild_detail, rebuild_since; control migration 3). The control-plane
// shows it in GetStatus: while it lasts, keys of the generation may be missing from Redis or hold
// old content.
type Rebuild struct {
	// Reason is "topic_reset" or "data_loss" (the cache-producer's rebuild.Reason*).
	Reason string
	// Detail says it in words ("data loss: users_by_email/g3: its offset is gone (...)").
	Detail string
	Since  time.Time
}

// RebuildReport is what one cache-producer knows of one generation it keeps up to date: its
// rebuild in progress, or none (nil).
type RebuildReport struct {
	Projection string
	Generation int64
	Rebuild    *Rebuild
}

// ReportRebuilds records each report in its generation's row, in one statement, touching only
// the rows whose record differs (a row's update notifies every registry watcher). It returns how
// many rows it changed; generations the registry does not list are left out.
func (s *Store) ReportRebuilds(ctx context.Context, reports []RebuildReport) (int64, error) {
	if len(reports) == 0 {
		return 0, nil
	}
	projs := make([]string, len(reports))
	gens := make([]int64, len(reports))
	reasons := make([]pgtype.Text, len(reports))
	details := make([]pgtype.Text, len(reports))
	since := make([]pgtype.Timestamptz, len(reports))
	for i, r := range reports {
		projs[i], gens[i] = r.Projection, r.Generation
		if r.Rebuild != nil {
			reasons[i] = pgtype.Text{String: r.Rebuild.Reason, Valid: true}
			details[i] = pgtype.Text{String: r.Rebuild.Detail, Valid: true}
			// Microseconds: what timestamptz keeps, so an unchanged report compares equal.
			since[i] = pgtype.Timestamptz{Time: r.Rebuild.Since.UTC().Truncate(time.Microsecond), Valid: true}
		}
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE distcache_generations g
		SET rebuild_reason = r.reason, rebuild_detail = r.detail, rebuild_since = r.since
		FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[])
			AS r(projection, generation, reason, detail, since)
		WHERE g.projection = r.projection AND g.generation = r.generation
		  AND (g.rebuild_reason, g.rebuild_detail, g.rebuild_since) IS DISTINCT FROM (r.reason, r.detail, r.since)`,
		projs, gens, reasons, details, since)
	if err != nil {
		return 0, fmt.Errorf("report rebuilds: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Rebuilds returns the rebuilds recorded for the generations of projection name that are kept up
// to date (tailing, live, retiring; a retired generation's last report is not a rebuild), by
// generation (none: an empty map).
func (s *Store) Rebuilds(ctx context.Context, name string) (map[int64]Rebuild, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT generation, rebuild_reason, coalesce(rebuild_detail, ''), coalesce(rebuild_since, 'epoch')
		FROM distcache_generations
		WHERE projection = $1 AND rebuild_reason IS NOT NULL AND state IN ('tailing', 'live', 'retiring')`, name)
	if err != nil {
		return nil, fmt.Errorf("read rebuilds of %s: %w", name, err)
	}
	defer rows.Close()
	out := map[int64]Rebuild{}
	for rows.Next() {
		var (
			gen int64
			r   Rebuild
		)
		if err := rows.Scan(&gen, &r.Reason, &r.Detail, &r.Since); err != nil {
			return nil, fmt.Errorf("read rebuilds of %s: %w", name, err)
		}
		out[gen] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read rebuilds of %s: %w", name, err)
	}
	return out, nil
}
