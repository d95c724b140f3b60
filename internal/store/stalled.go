package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// StalledRun is a running run that ClaimStalled claimed for repair.
type StalledRun struct {
	RunID       string
	BlueprintID string // "" for a run started the Flowcraft way and never pinned
	Digest      string // its blueprint snapshot; "" when not Pinned
	Pinned      bool
}

// ClaimStalled claims at most limit running runs with no step finished for
// threshold, and not claimed within it either, leaving out the runs in
// skip; the longest stalled come first. The claim is a stamp
// (reconciled_at) set in one short statement: FOR UPDATE SKIP LOCKED keeps
// reconcilers running at once from claiming one run twice, and the stamp
// keeps the others off it for a threshold. No lock outlives the statement,
// so the step commits of a claimed run never wait for its repair.
func (s *Store) ClaimStalled(ctx context.Context, threshold time.Duration, limit int, skip []string) ([]StalledRun, error) {
	rows, err := s.pool.Query(ctx, `UPDATE `+s.tables.Statuses+` SET reconciled_at = now() WHERE run_id IN (
			SELECT run_id FROM `+s.tables.Statuses+`
			WHERE status = 'running' AND updated_at < now() - make_interval(secs => $1)
				AND (reconciled_at IS NULL OR reconciled_at < now() - make_interval(secs => $1)) AND NOT (run_id = ANY($3))
			ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)
		RETURNING run_id, coalesce(blueprint_id, ''), coalesce(blueprint_digest, ''), blueprint_digest IS NOT NULL`,
		threshold.Seconds(), limit, nonNil(skip)) // a NULL array would leave out every run
	if err != nil {
		return nil, fmt.Errorf("claim stalled runs: %w", err)
	}
	runs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (StalledRun, error) {
		var x StalledRun
		err := row.Scan(&x.RunID, &x.BlueprintID, &x.Digest, &x.Pinned)
		return x, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim stalled runs: %w", err)
	}
	return runs, nil
}

// ReleaseClaim ends a ClaimStalled claim of a run. With moved (it was
// repaired) a run still running is touched as well, so that it is not
// stalled any more; otherwise (it only waits for a timer, say) it is left
// as it was, to be looked at again.
func (s *Store) ReleaseClaim(ctx context.Context, runID string, moved bool) error {
	_, err := s.pool.Exec(ctx, `UPDATE `+s.tables.Statuses+` SET reconciled_at = NULL,
			updated_at = CASE WHEN $2 AND status = 'running' THEN now() ELSE updated_at END WHERE run_id = $1`, runID, moved)
	if err != nil {
		return fmt.Errorf("release claim of run %s: %w", runID, err)
	}
	return nil
}

// ContextBlueprintID returns the blueprint id that a run started the
// Flowcraft way names in its context (key blueprintId): "" when it names
// none or has no context.
func (s *Store) ContextBlueprintID(ctx context.Context, runID string) (string, error) {
	var id string
	err := s.pool.QueryRow(ctx, `SELECT coalesce(context_data->>'blueprintId', '') FROM `+s.tables.Contexts+` WHERE run_id = $1`, runID).Scan(&id)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("read blueprint id of run %s: %w", runID, err)
	}
	return id, nil
}
