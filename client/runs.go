package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/workflow"
)

// RunSummary is one run of a listing: its status row, without steps or
// context (Result reads those).
type RunSummary struct {
	RunID       string             `json:"runId"`
	BlueprintID string             `json:"blueprintId"`
	Status      workflow.RunStatus `json:"status"`
	Error       string             `json:"error,omitempty"`
	CreatedAt   time.Time          `json:"createdAt"`
	UpdatedAt   time.Time          `json:"updatedAt"` // the last step finished (or the run changed status)
	FinishedAt  *time.Time         `json:"finishedAt,omitempty"`
	// DurationMs runs from CreatedAt to FinishedAt, or to now for a run not
	// finished: the same measure as RunResult.DurationMs.
	DurationMs float64 `json:"durationMs"`
}

// RunFilter selects runs for Runs.
type RunFilter struct {
	Status      workflow.RunStatus // "" for every status
	BlueprintID string             // "" for every blueprint
	// Limit is the most runs of one page: 1 to MaxRunsLimit; 0 means
	// DefaultRunsLimit.
	Limit int
	// Continue is RunList.Continue of the page before, for the next one;
	// it holds the filter it was made for and is refused with another.
	Continue string
}

// Page sizes of Runs.
const (
	DefaultRunsLimit = 100
	MaxRunsLimit     = 1000
)

// RunList is one page of runs, newest first.
type RunList struct {
	Runs []RunSummary `json:"runs"`
	// Continue, when not empty, reads the next page (RunFilter.Continue).
	Continue string `json:"continue,omitempty"`
}

// runStatuses are the statuses a filter may name.
var runStatuses = []workflow.RunStatus{workflow.RunRunning, workflow.RunAwaiting, workflow.RunCompleted, workflow.RunFailed, workflow.RunCancelled}

// runCursor is what a continuation token holds: where the page ended and
// the filter it was made for.
type runCursor struct {
	CreatedAt   time.Time          `json:"t"`
	RunID       string             `json:"r"`
	Status      workflow.RunStatus `json:"s,omitempty"`
	BlueprintID string             `json:"b,omitempty"`
}

// Runs lists runs newest first (by the time they were created), a page at
// a time. A filter that does not parse is refused with ErrInvalid.
func (c *Client) Runs(ctx context.Context, f RunFilter) (RunList, error) {
	if f.Status != "" && !slices.Contains(runStatuses, f.Status) {
		return RunList{}, invalid(fmt.Errorf("status %q: want one of %v", f.Status, runStatuses))
	}
	switch {
	case f.Limit == 0:
		f.Limit = DefaultRunsLimit
	case f.Limit < 0 || f.Limit > MaxRunsLimit:
		return RunList{}, invalid(fmt.Errorf("limit %d: want 1 to %d", f.Limit, MaxRunsLimit))
	}
	sf := store.RunFilter{Status: f.Status, BlueprintID: f.BlueprintID, Limit: f.Limit}
	if f.Continue != "" {
		cur, err := decodeCursor(f.Continue)
		if err != nil {
			return RunList{}, invalid(err)
		}
		if cur.Status != f.Status || cur.BlueprintID != f.BlueprintID {
			return RunList{}, invalid(fmt.Errorf("continue token: made for the filter status=%q blueprintId=%q, not status=%q blueprintId=%q",
				cur.Status, cur.BlueprintID, f.Status, f.BlueprintID))
		}
		sf.Before = &store.RunCursor{CreatedAt: cur.CreatedAt, RunID: cur.RunID}
	}
	runs, more, err := c.store.ListRuns(ctx, sf)
	if err != nil {
		return RunList{}, err
	}
	out := RunList{Runs: make([]RunSummary, 0, len(runs))}
	now := time.Now()
	for _, r := range runs {
		end := now
		if r.FinishedAt != nil {
			end = *r.FinishedAt
		}
		out.Runs = append(out.Runs, RunSummary{
			RunID: r.RunID, BlueprintID: r.BlueprintID, Status: r.Status, Error: r.Error,
			CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, FinishedAt: r.FinishedAt,
			DurationMs: float64(end.Sub(r.CreatedAt).Microseconds()) / 1000,
		})
	}
	if more {
		last := runs[len(runs)-1]
		out.Continue = encodeCursor(runCursor{CreatedAt: last.CreatedAt, RunID: last.RunID, Status: f.Status, BlueprintID: f.BlueprintID})
	}
	return out, nil
}

func encodeCursor(c runCursor) string {
	b, _ := json.Marshal(c) // plain fields: cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(token string) (runCursor, error) {
	var c runCursor
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil || c.CreatedAt.IsZero() || c.RunID == "" {
		return runCursor{}, fmt.Errorf("continue token %.40q: not one a listing of runs gave", token)
	}
	return c, nil
}

// Blueprint reads the stored blueprint snapshot of blueprintID that was
// stored last (each version is stored when a run first uses it), for
// starting another run of it; ErrBlueprintNotFound when no run used it.
func (c *Client) Blueprint(ctx context.Context, blueprintID string) (*workflow.Blueprint, error) {
	bp, err := c.store.LatestBlueprint(ctx, blueprintID)
	return bp, ownError(err)
}
