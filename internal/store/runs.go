package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stepflow/stepflow/workflow"
)

// RunCursor is where a page of runs ends: the next page holds the runs
// created before it (ties broken by run id, descending).
type RunCursor struct {
	CreatedAt time.Time
	RunID     string
}

// RunFilter selects runs for ListRuns.
type RunFilter struct {
	Status      workflow.RunStatus // "" for every status
	BlueprintID string             // "" for every blueprint
	RunIDPrefix string             // "" for every run id
	Limit       int                // at most this many; 0: 100
	Before      *RunCursor         // nil: from the newest
}

// ListRuns reads status rows newest first (created_at, then run id,
// descending), through the indexes of migration 005. It reads Limit+1
// rows, so more reports whether another page follows.
func (s *Store) ListRuns(ctx context.Context, f RunFilter) (runs []*Run, more bool, err error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	// Only the conditions asked for, each a statement of its own: a
	// prepared "($1 = '' OR blueprint_id = $1)" gets a generic plan that
	// cannot use the blueprint index.
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Status != "" {
		where = append(where, "status = "+arg(string(f.Status)))
	}
	if f.BlueprintID != "" {
		where = append(where, "blueprint_id = "+arg(f.BlueprintID))
	}
	if f.RunIDPrefix != "" {
		// Not an index condition (a prefix range is collation-dependent):
		// a search scans the listing's order until a page is full.
		where = append(where, "starts_with(run_id, "+arg(f.RunIDPrefix)+")")
	}
	if f.Before != nil {
		where = append(where, "(created_at, run_id) < ("+arg(f.Before.CreatedAt)+", "+arg(f.Before.RunID)+")")
	}
	sql := `SELECT ` + runColumns + ` FROM ` + s.tables.Statuses
	if len(where) > 0 {
		sql += ` WHERE ` + strings.Join(where, " AND ")
	}
	sql += ` ORDER BY created_at DESC, run_id DESC LIMIT ` + arg(f.Limit+1)
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, false, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, false, fmt.Errorf("list runs: %w", err)
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list runs: %w", err)
	}
	if len(runs) > f.Limit {
		return runs[:f.Limit], true, nil
	}
	return runs, false, nil
}

// LatestBlueprint reads the snapshot of a blueprint id stored last: each
// version is stored when a run first uses it.
func (s *Store) LatestBlueprint(ctx context.Context, blueprintID string) (*workflow.Blueprint, error) {
	var body []byte
	err := s.pool.QueryRow(ctx, `SELECT body FROM `+s.tables.Blueprints+` WHERE blueprint_id = $1 ORDER BY created_at DESC, digest LIMIT 1`, blueprintID).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("blueprint %q: %w", blueprintID, ErrBlueprintNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load blueprint %q: %w", blueprintID, err)
	}
	bp, err := workflow.Decode(body)
	if err != nil {
		return nil, fmt.Errorf("blueprint %q: stored snapshot: %w", blueprintID, err)
	}
	return bp, nil
}
