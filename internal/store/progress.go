package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// StepCount is how far a run has come: its step rows and those of them
// finished (succeeded, recovered, skipped or failed).
type StepCount struct {
	Steps    int
	Finished int
	Failed   int
}

// BlueprintSummary is what a listing shows of a stored snapshot.
type BlueprintSummary struct {
	Version string
	Nodes   int // the blueprint's nodes (not its dynamic ones)
}

// Progress reads, for a page of runs, each run's step count and each
// snapshot's version and node count, in one round trip: the steps through
// their primary key (run_id, node_id), the snapshots through theirs.
// Runs without steps and digests without snapshots are absent.
func (s *Store) Progress(ctx context.Context, runIDs, digests []string) (map[string]StepCount, map[string]BlueprintSummary, error) {
	counts := make(map[string]StepCount, len(runIDs))
	bps := make(map[string]BlueprintSummary, len(digests))
	if len(runIDs) == 0 && len(digests) == 0 {
		return counts, bps, nil
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT run_id, count(*), count(*) FILTER (WHERE state IN ('succeeded', 'recovered', 'skipped', 'failed')), count(*) FILTER (WHERE state = 'failed')
		FROM `+s.tables.Steps+` WHERE run_id = ANY($1) GROUP BY run_id`, runIDs).Query(func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var id string
			var c StepCount
			if err := rows.Scan(&id, &c.Steps, &c.Finished, &c.Failed); err != nil {
				return err
			}
			counts[id] = c
		}
		return rows.Err()
	})
	b.Queue(`SELECT digest, version, coalesce(jsonb_array_length(body->'nodes'), 0) FROM `+s.tables.Blueprints+` WHERE digest = ANY($1)`, digests).Query(func(rows pgx.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var d string
			var bs BlueprintSummary
			if err := rows.Scan(&d, &bs.Version, &bs.Nodes); err != nil {
				return err
			}
			bps[d] = bs
		}
		return rows.Err()
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, nil, fmt.Errorf("read the progress of %d runs: %w", len(runIDs), err)
	}
	return counts, bps, nil
}
