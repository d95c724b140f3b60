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
	// BlueprintVersion (the snapshot's metadata.version) and Steps are
	// read when RunFilter.Progress asks for them.
	BlueprintVersion string      `json:"blueprintVersion,omitempty"`
	Steps            *StepCounts `json:"steps,omitempty"`
}

// StepCounts is how far a run has come. Finished counts the steps that
// succeeded, recovered, were skipped or failed; Total is every step the
// run has, and for a run not completed at least its blueprint's nodes
// (loop iterations and batch workers are steps of their own, so Total
// grows as they appear).
type StepCounts struct {
	Finished int `json:"finished"`
	Failed   int `json:"failed"`
	Total    int `json:"total"`
}

// RunFilter selects runs for Runs.
type RunFilter struct {
	Status      workflow.RunStatus // "" for every status
	BlueprintID string             // "" for every blueprint
	// RunIDPrefix keeps the runs whose id starts with it ("" for all). It
	// is no index condition: the search reads the runs newest first until
	// a page is full.
	RunIDPrefix string
	// Progress also reads each run's step counts and blueprint version
	// (RunSummary.Steps, BlueprintVersion): one more round trip per page.
	Progress bool
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

// RunStatuses are the statuses RunFilter.Status may name.
func RunStatuses() []workflow.RunStatus { return slices.Clone(runStatuses) }

// runCursor is what a continuation token holds: where the page ended and
// the filter it was made for.
type runCursor struct {
	CreatedAt   time.Time          `json:"t"`
	RunID       string             `json:"r"`
	Status      workflow.RunStatus `json:"s,omitempty"`
	BlueprintID string             `json:"b,omitempty"`
	RunIDPrefix string             `json:"p,omitempty"`
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
	sf := store.RunFilter{Status: f.Status, BlueprintID: f.BlueprintID, RunIDPrefix: f.RunIDPrefix, Limit: f.Limit}
	if f.Continue != "" {
		cur, err := decodeCursor(f.Continue)
		if err != nil {
			return RunList{}, invalid(err)
		}
		if cur.Status != f.Status || cur.BlueprintID != f.BlueprintID || cur.RunIDPrefix != f.RunIDPrefix {
			return RunList{}, invalid(fmt.Errorf("continue token: made for the filter status=%q blueprintId=%q runIdPrefix=%q, not status=%q blueprintId=%q runIdPrefix=%q",
				cur.Status, cur.BlueprintID, cur.RunIDPrefix, f.Status, f.BlueprintID, f.RunIDPrefix))
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
	if f.Progress {
		if err := c.addProgress(ctx, runs, out.Runs); err != nil {
			return RunList{}, err
		}
	}
	if more {
		last := runs[len(runs)-1]
		out.Continue = encodeCursor(runCursor{CreatedAt: last.CreatedAt, RunID: last.RunID, Status: f.Status, BlueprintID: f.BlueprintID, RunIDPrefix: f.RunIDPrefix})
	}
	return out, nil
}

// addProgress fills the Steps and BlueprintVersion of sums, the summaries
// of runs.
func (c *Client) addProgress(ctx context.Context, runs []*store.Run, sums []RunSummary) error {
	ids := make([]string, 0, len(runs))
	var digests []string
	seen := map[string]bool{}
	for _, r := range runs {
		ids = append(ids, r.RunID)
		if r.Digest != "" && !seen[r.Digest] {
			seen[r.Digest] = true
			digests = append(digests, r.Digest)
		}
	}
	counts, bps, err := c.store.Progress(ctx, ids, digests)
	if err != nil {
		return err
	}
	for i, r := range runs {
		n, bp := counts[r.RunID], bps[r.Digest]
		sc := &StepCounts{Finished: n.Finished, Failed: n.Failed, Total: n.Steps}
		if r.Status != workflow.RunCompleted {
			sc.Total = max(sc.Total, bp.Nodes)
		}
		sums[i].Steps, sums[i].BlueprintVersion = sc, bp.Version
	}
	return nil
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
