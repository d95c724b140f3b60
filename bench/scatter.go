package main

// The B workload: one run scattering a batch of items to noop workers
// (one step each) and gathering them: items/s, and how long the gather
// takes to start after the last worker.

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

// ScatterResult is what B measured.
type ScatterResult struct {
	Items int `json:"items"`
	// RunMS: client.Start called → the run's finished_at.
	RunMS float64 `json:"run_ms"`
	// ItemsPerS: Items / RunMS.
	ItemsPerS float64 `json:"items_per_s"`
	// WorkersMS: the first worker made ready (its row's created_at, the
	// scatter's commit) → the last worker's node returned (finished_at);
	// WorkerItemsPerS is Items over it.
	WorkersMS       float64 `json:"workers_ms"`
	WorkerItemsPerS float64 `json:"worker_items_per_s"`
	// GatherDelayMS: the last worker's node returned → the gather's node
	// started (its started_at): the last worker's commit, the join and the
	// gather's job. GatherDoneDelayMS is the same to the gather's
	// finished_at (ordering the items' outputs included).
	GatherDelayMS     float64 `json:"gather_delay_ms"`
	GatherDoneDelayMS float64 `json:"gather_done_delay_ms"`
	// StepLatencyMS: per step (mostly workers), made ready → node
	// returned: queueing, as W's step latency.
	StepLatencyMS Percentiles `json:"step_latency_ms"`
}

const (
	scatterNode = "items_scatter"
	gatherNode  = "items_gather"
)

// scatterBlueprint is a batch as Flowcraft's createFlow().batch() writes
// it: the scatter takes the context key items and hands each item to a
// noop worker; the gather sets results to their outputs in item order.
func scatterBlueprint() *workflow.Blueprint {
	return mustDecode(map[string]any{"id": "bench-batch", "metadata": map[string]any{"version": "1"},
		"nodes": []node{
			{"id": scatterNode, "uses": "batch-scatter", "inputs": "items",
				"params": map[string]any{"workerUsesKey": "noop", "gatherNodeId": gatherNode, "outputKey": "results"}},
			{"id": gatherNode, "uses": "batch-gather",
				"params": map[string]any{"gatherNodeId": gatherNode, "outputKey": "results"}, "config": map[string]any{"joinStrategy": "all"}},
		},
		"edges": []edge{{"source": scatterNode, "target": gatherNode}}})
}

// runScatter starts one run of the batch over items items, waits for it,
// verifies it and measures.
func runScatter(ctx context.Context, s *stack, cl *client.Client, items int, id string) (*ScatterResult, error) {
	in := make([]any, items)
	for i := range in {
		in[i] = map[string]any{"item": i}
	}
	want := normalize(in)
	s.log.printf("B (%s): one run scattering %d items to noop workers, then gather", id, items)
	t0 := time.Now()
	if _, err := cl.Start(ctx, scatterBlueprint(), map[string]any{"items": in}, client.StartOptions{RunID: id}); err != nil {
		return nil, err
	}
	steps := items + 2
	if err := waitFinal(ctx, s, "B", id, 1, steps, t0); err != nil {
		return nil, err
	}
	if err := verifyScatter(ctx, s, cl, id, items, want); err != nil {
		return nil, fmt.Errorf("the run of B: WRONG RESULT: %w", err)
	}
	q := s.tables.Quoted()
	var runEnd, firstReady, lastWorker, gatherStart, gatherEnd time.Time
	if err := s.pool.QueryRow(ctx, `SELECT finished_at FROM `+q.Statuses+` WHERE run_id = $1`, id).Scan(&runEnd); err != nil {
		return nil, err
	}
	if err := s.pool.QueryRow(ctx, `SELECT min(created_at), max(finished_at) FROM `+q.Steps+` WHERE run_id = $1 AND node_id NOT IN ($2, $3)`,
		id, scatterNode, gatherNode).Scan(&firstReady, &lastWorker); err != nil {
		return nil, err
	}
	if err := s.pool.QueryRow(ctx, `SELECT started_at, finished_at FROM `+q.Steps+` WHERE run_id = $1 AND node_id = $2`, id, gatherNode).Scan(&gatherStart, &gatherEnd); err != nil {
		return nil, err
	}
	ms := func(d time.Duration) float64 { return round3(float64(d.Microseconds()) / 1000) }
	res := &ScatterResult{Items: items, RunMS: ms(runEnd.Sub(t0)), WorkersMS: ms(lastWorker.Sub(firstReady)),
		GatherDelayMS: ms(gatherStart.Sub(lastWorker)), GatherDoneDelayMS: ms(gatherEnd.Sub(lastWorker))}
	res.ItemsPerS = round1(float64(items) / runEnd.Sub(t0).Seconds())
	res.WorkerItemsPerS = round1(float64(items) / lastWorker.Sub(firstReady).Seconds())
	lat, _, err := stepLatencies(ctx, s, id)
	if err != nil {
		return nil, err
	}
	res.StepLatencyMS = percentiles(lat)
	s.log.printf("B: %d items in %.0f ms: %.0f items/s (workers alone %.0f items/s); gather started %.2f ms after the last worker, done %.2f ms after; verified",
		items, res.RunMS, res.ItemsPerS, res.WorkerItemsPerS, res.GatherDelayMS, res.GatherDoneDelayMS)
	return res, nil
}

// verifyScatter checks the run: completed, nothing pending, one step row
// per worker besides the scatter's and the gather's, each succeeded at
// attempt 1, and the gather's output (and context results) every item in
// item order; and the same through client.Result.
func verifyScatter(ctx context.Context, s *stack, cl *client.Client, id string, items int, want any) error {
	q := s.tables.Quoted()
	var status string
	var pending, nsteps, nok int
	if err := s.pool.QueryRow(ctx, `SELECT r.status, r.pending,
		(SELECT count(*) FROM `+q.Steps+` t WHERE t.run_id = r.run_id),
		(SELECT count(*) FROM `+q.Steps+` t WHERE t.run_id = r.run_id AND t.state = 'succeeded' AND t.attempts = 1 AND t.finished_at IS NOT NULL)
		FROM `+q.Statuses+` r WHERE r.run_id = $1`, id).Scan(&status, &pending, &nsteps, &nok); err != nil {
		return err
	}
	if status != "completed" || pending != 0 {
		return fmt.Errorf("%s: status %s, %d pending", id, status, pending)
	}
	if nsteps != items+2 || nok != items+2 {
		return fmt.Errorf("%s: %d steps, %d succeeded at attempt 1; want %d (scatter, %d workers, gather)", id, nsteps, nok, items+2, items)
	}
	res, err := cl.Result(ctx, id)
	if err != nil {
		return fmt.Errorf("%s: client.Result: %w", id, err)
	}
	if res.Status != workflow.RunCompleted {
		return fmt.Errorf("%s: client.Result status %s", id, res.Status)
	}
	if d := itemsDiffer(normalize(res.Output), want); d != "" {
		return fmt.Errorf("%s: the gather's output: %s", id, d)
	}
	if d := itemsDiffer(normalize(res.Context["results"]), want); d != "" {
		return fmt.Errorf("%s: context results: %s", id, d)
	}
	s.log.printf("B: verified: completed, %d worker steps and the scatter and gather succeeded at attempt 1, the %d items gathered in order", items, items)
	return nil
}

// itemsDiffer says how got differs from the items want ("" when equal).
func itemsDiffer(got, want any) string {
	g, ok := got.([]any)
	w := want.([]any)
	switch {
	case !ok:
		return fmt.Sprintf("%T, want an array of %d items", got, len(w))
	case len(g) != len(w):
		return fmt.Sprintf("%d items, want %d", len(g), len(w))
	}
	for i := range w {
		if !reflect.DeepEqual(g[i], w[i]) {
			return fmt.Sprintf("item %d is %v, want %v", i, g[i], w[i])
		}
	}
	return ""
}
