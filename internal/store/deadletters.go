package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// DeadLetter is a job the bridge dead-lettered, as recorded by the
// reconciler.
type DeadLetter struct {
	ID           int64          `json:"id"`
	DeadLetterID string         `json:"deadLetterId"`
	MessageID    string         `json:"messageId,omitempty"`
	RunID        string         `json:"runId,omitempty"`
	NodeID       string         `json:"nodeId,omitempty"`
	BlueprintID  string         `json:"blueprintId,omitempty"`
	Body         []byte         `json:"-"`
	Headers      map[string]any `json:"headers,omitempty"`
	Code         string         `json:"errorCode"`
	Reason       string         `json:"errorReason"`
	Attempts     int            `json:"attempts"`   // transport attempts the bridge made
	JobAttempt   int            `json:"jobAttempt"` // the job's node attempt (1-based); 0 for a body that is no job
	FirstFailure *time.Time     `json:"firstFailure,omitempty"`
	At           time.Time      `json:"deadLetteredAt"`
	ReplayedAt   *time.Time     `json:"replayedAt,omitempty"`
}

// DeadLetterErrorPrefix starts the error of a run failed by a dead letter.
const DeadLetterErrorPrefix = "dead-lettered: "

// RecordDeadLetter stores a dead letter (idempotently, by its dead-letter
// id: inserted is false for one already recorded) and fails its run with
// the dead-letter reason when the job was the run's way forward: its step
// is still pending at the job's attempt, or the run never got its
// blueprint pinned (a Flowcraft-style start whose start job died). A dead
// letter of a stale duplicate leaves a healthy run alone.
func (s *Store) RecordDeadLetter(ctx context.Context, dl DeadLetter) (inserted, failedRun bool, err error) {
	headers, err := jsonArg(dl.Headers)
	if err != nil {
		return false, false, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO `+s.tables.DeadLetters+` (dead_letter_id, message_id, run_id, node_id, blueprint_id, body, headers, error_code, error_reason, attempts, first_failure)
			VALUES ($1, nullif($2, ''), nullif($3, ''), nullif($4, ''), nullif($5, ''), $6, $7, $8, $9, $10, $11) ON CONFLICT (dead_letter_id) DO NOTHING`,
			dl.DeadLetterID, dl.MessageID, dl.RunID, dl.NodeID, dl.BlueprintID, dl.Body, headers, dl.Code, dl.Reason, dl.Attempts, dl.FirstFailure)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		inserted = true
		if dl.RunID == "" || dl.Code == "409" {
			// 409: another delivery held the step's lease all along; that
			// delivery, or the reconciler, moves the run on.
			return nil
		}
		msg := DeadLetterErrorPrefix + dl.Reason
		if dl.Code != "" {
			msg = DeadLetterErrorPrefix + dl.Code + ": " + dl.Reason
		}
		tag, err = tx.Exec(ctx, `UPDATE `+s.tables.Statuses+` SET status = 'failed', error = $2, status_data = jsonb_build_object('error', $2::text, 'nodeId', $3::text), finished_at = now(), updated_at = now()
			WHERE run_id = $1 AND status = 'running' AND (blueprint_digest IS NULL OR EXISTS (
				SELECT 1 FROM `+s.tables.Steps+` WHERE run_id = $1 AND node_id = $3 AND state IN ('ready', 'retrying', 'sleeping') AND attempts < $4))`,
			dl.RunID, msg, dl.NodeID, max(dl.JobAttempt, 1))
		failedRun = err == nil && tag.RowsAffected() > 0
		return err
	})
	if err != nil {
		return false, false, fmt.Errorf("record dead letter %s: %w", dl.DeadLetterID, err)
	}
	return inserted, failedRun, nil
}

// DeadLetterFilter selects dead letters.
type DeadLetterFilter struct {
	RunID    string // "" for every run
	Replayed bool   // include replayed ones
	Limit    int    // 0: 1000
	AfterID  int64  // only records with a larger id: the page after the one that ended there
}

// DeadLetters lists recorded dead letters, oldest first.
func (s *Store) DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	rows, err := s.pool.Query(ctx, `SELECT id, dead_letter_id, coalesce(message_id, ''), coalesce(run_id, ''), coalesce(node_id, ''), coalesce(blueprint_id, ''), body, headers,
			error_code, error_reason, attempts, first_failure, dead_lettered_at, replayed_at
		FROM `+s.tables.DeadLetters+` WHERE ($1 = '' OR run_id = $1) AND ($2 OR replayed_at IS NULL) AND id > $4 ORDER BY id LIMIT $3`, f.RunID, f.Replayed, f.Limit, f.AfterID)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (DeadLetter, error) {
		var dl DeadLetter
		var headers []byte
		err := row.Scan(&dl.ID, &dl.DeadLetterID, &dl.MessageID, &dl.RunID, &dl.NodeID, &dl.BlueprintID, &dl.Body, &headers,
			&dl.Code, &dl.Reason, &dl.Attempts, &dl.FirstFailure, &dl.At, &dl.ReplayedAt)
		dl.Headers, _ = decodeJSON(headers).(map[string]any)
		// The job's attempt is not a column: the body, kept as it was
		// dead-lettered, has it.
		var job struct {
			Attempt int `json:"attempt"`
		}
		if json.Unmarshal(dl.Body, &job) == nil && dl.RunID != "" {
			dl.JobAttempt = max(job.Attempt, 1)
		}
		return dl, err
	})
}

// PendingStep is a step that has to run (again).
type PendingStep struct {
	NodeID   string // the step key
	Node     string // the node it runs (for a dynamic node, its key)
	State    string
	Attempts int
	WakeAt   *time.Time
}

// PendingSteps lists a run's steps in a pending state (ready, retrying,
// sleeping): the frontier that must be in flight.
func (s *Store) PendingSteps(ctx context.Context, q Querier, runID string) ([]PendingStep, error) {
	if q == nil {
		q = s.pool
	}
	rows, err := q.Query(ctx, `SELECT node_id, coalesce(node, node_id), state, attempts, wake_at FROM `+s.tables.Steps+`
		WHERE run_id = $1 AND state IN ('ready', 'retrying', 'sleeping') ORDER BY created_at, node_id`, runID)
	if err != nil {
		return nil, fmt.Errorf("pending steps of %s: %w", runID, err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (PendingStep, error) {
		var p PendingStep
		err := row.Scan(&p.NodeID, &p.Node, &p.State, &p.Attempts, &p.WakeAt)
		return p, err
	})
}

// ReviveRun marks dead letters replayed and, when the run was failed by a
// dead letter, sets it running again (Step Functions' "redrive"). It
// returns whether the run is running afterwards.
func (s *Store) ReviveRun(ctx context.Context, runID string, deadLetterIDs []int64) (bool, error) {
	var running bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE `+s.tables.DeadLetters+` SET replayed_at = now() WHERE id = ANY($1)`, deadLetterIDs); err != nil {
			return err
		}
		if runID == "" {
			return nil
		}
		var status string
		err := tx.QueryRow(ctx, `UPDATE `+s.tables.Statuses+` SET status = 'running', error = NULL, status_data = NULL, finished_at = NULL, updated_at = now()
			WHERE run_id = $1 AND (status = 'running' OR (status = 'failed' AND error LIKE $2)) RETURNING status`, runID, DeadLetterErrorPrefix+"%").Scan(&status)
		if err == pgx.ErrNoRows {
			return nil
		}
		running = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("revive run %s: %w", runID, err)
	}
	return running, nil
}

// PendingAmong returns which of the given steps (keys) are pending.
func (s *Store) PendingAmong(ctx context.Context, runID string, ids []string) ([]PendingStep, error) {
	rows, err := s.pool.Query(ctx, `SELECT node_id, coalesce(node, node_id), state, attempts, wake_at FROM `+s.tables.Steps+`
		WHERE run_id = $1 AND node_id = ANY($2) AND state IN ('ready', 'retrying', 'sleeping')`, runID, ids)
	if err != nil {
		return nil, fmt.Errorf("pending steps of %s: %w", runID, err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (PendingStep, error) {
		var p PendingStep
		err := row.Scan(&p.NodeID, &p.Node, &p.State, &p.Attempts, &p.WakeAt)
		return p, err
	})
}
