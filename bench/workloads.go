package main

// The workloads: W (fan-out, N runs at once), C (10-node chain: single-run
// latency, then N runs at once) and L (a long chain with 1 KB outputs).

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

// ---- shared helpers ----

// Percentiles of a sample, in milliseconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
	N    int     `json:"n"`
}

func percentiles(xs []float64) Percentiles {
	if len(xs) == 0 {
		return Percentiles{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	q := func(p float64) float64 {
		pos := p * float64(len(s)-1)
		lo := int(pos)
		if lo+1 >= len(s) {
			return s[len(s)-1]
		}
		return s[lo] + (s[lo+1]-s[lo])*(pos-float64(lo))
	}
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	return Percentiles{P50: round3(q(.5)), P90: round3(q(.9)), P95: round3(q(.95)), P99: round3(q(.99)),
		Mean: round3(sum / float64(len(s))), Max: round3(s[len(s)-1]), N: len(s)}
}

// batch is a set of runs started at once and waited for.
type batch struct {
	name     string // "W", "C"
	prefix   string // run id prefix
	bp       *workflow.Blueprint
	n        int
	steps    int    // steps per run
	sink     string // node whose output is the run's output
	input    func(i int) map[string]any
	expected func(input map[string]any) any
}

func (b *batch) runID(i int) string { return fmt.Sprintf("%s%05d", b.prefix, i) }

// BatchResult is what a batch measured.
type BatchResult struct {
	Runs          int         `json:"runs"`
	Steps         int         `json:"steps"`
	StartS        float64     `json:"start_s"` // time the client took to start every run
	WallS         float64     `json:"wall_s"`  // first start → last run completed
	StepsPerS     float64     `json:"steps_per_s"`
	RunsPerS      float64     `json:"runs_per_s"`
	StepLatencyMS Percentiles `json:"step_latency_ms"`
	// Enqueue → start of the step's commit transaction (the step row's
	// updated_at): also counts the wait for a pooled connection to commit.
	StepCommitLatencyMS Percentiles `json:"step_latency_to_commit_ms"`
	RunLatencyMS        Percentiles `json:"run_latency_ms"` // run created → completed
}

// runBatch starts b.n runs at once (starters goroutines over a few
// clients), waits until every run is final, checks every run, and measures.
func runBatch(ctx context.Context, s *stack, clients []*client.Client, b *batch) (*BatchResult, error) {
	const starters = 16
	ids := make([]string, b.n)
	inputs := make([]map[string]any, b.n)
	for i := range b.n {
		ids[i] = b.runID(i)
		inputs[i] = b.input(i)
	}
	s.log.printf("%s: starting %d runs of %s (%d steps each)", b.name, b.n, b.bp.ID, b.steps)
	next := make(chan int, b.n)
	for i := range b.n {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	errs := make(chan error, starters)
	first := time.Now()
	for w := range starters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[w%len(clients)]
			for i := range next {
				if _, err := cl.Start(ctx, b.bp, inputs[i], client.StartOptions{RunID: ids[i]}); err != nil {
					errs <- fmt.Errorf("start %s: %w", ids[i], err)
					return
				}
			}
		}()
	}
	wg.Wait()
	startS := time.Since(first).Seconds()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	s.log.printf("%s: %d runs started in %.2f s", b.name, b.n, startS)

	if err := waitFinal(ctx, s, b.name, b.prefix, b.n, b.n*b.steps, first); err != nil {
		return nil, err
	}
	var last time.Time
	if err := s.pool.QueryRow(ctx, `SELECT max(finished_at) FROM `+s.tables.Quoted().Statuses+` WHERE run_id LIKE $1`, b.prefix+"%").Scan(&last); err != nil {
		return nil, err
	}
	if err := verifyBatch(ctx, s, clients[0], b, ids, inputs); err != nil {
		return nil, err
	}
	wall := last.Sub(first).Seconds()
	r := &BatchResult{Runs: b.n, Steps: b.n * b.steps, StartS: round3(startS), WallS: round3(wall)}
	r.StepsPerS = round1(float64(r.Steps) / wall)
	r.RunsPerS = round1(float64(r.Runs) / wall)
	lat, commit, err := stepLatencies(ctx, s, b.prefix)
	if err != nil {
		return nil, err
	}
	r.StepLatencyMS, r.StepCommitLatencyMS = percentiles(lat), percentiles(commit)
	var runs []float64
	rows, err := s.pool.Query(ctx, `SELECT extract(epoch FROM finished_at - created_at) * 1000 FROM `+s.tables.Quoted().Statuses+` WHERE run_id LIKE $1`, b.prefix+"%")
	if err != nil {
		return nil, err
	}
	if runs, err = pgx.CollectRows(rows, pgx.RowTo[float64]); err != nil {
		return nil, err
	}
	r.RunLatencyMS = percentiles(runs)
	s.log.printf("%s: %d runs, %d steps in %.2f s: %.0f steps/s, %.1f runs/s; step latency p50 %.1f ms p99 %.1f ms",
		b.name, r.Runs, r.Steps, wall, r.StepsPerS, r.RunsPerS, r.StepLatencyMS.P50, r.StepLatencyMS.P99)
	return r, nil
}

// waitFinal polls the statuses table until the n runs with the prefix are
// final; a failed or cancelled run fails at once. The deadline allows 100
// steps/s plus 30 s.
func waitFinal(ctx context.Context, s *stack, name, prefix string, n, steps int, first time.Time) error {
	deadline := first.Add(30*time.Second + time.Duration(steps)*10*time.Millisecond)
	q := `SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status NOT IN ('running', 'completed')) FROM ` +
		s.tables.Quoted().Statuses + ` WHERE run_id LIKE $1`
	lastLog := time.Now()
	for {
		if err := s.alive(); err != nil {
			return err
		}
		var done, bad int
		if err := s.pool.QueryRow(ctx, q, prefix+"%").Scan(&done, &bad); err != nil {
			return err
		}
		if bad > 0 {
			return fmt.Errorf("%s: %d runs ended not completed: %s", name, bad, failedRuns(ctx, s, prefix))
		}
		if done == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: only %d of %d runs completed after %.0f s (queue backlog: %s)", name, done, n, time.Since(first).Seconds(), queueDepths(s))
		}
		if time.Since(lastLog) > 2*time.Second {
			s.log.printf("%s: %d/%d runs completed (%.0f s)", name, done, n, time.Since(first).Seconds())
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func failedRuns(ctx context.Context, s *stack, prefix string) string {
	rows, err := s.pool.Query(ctx, `SELECT run_id || ' ' || status || ': ' || coalesce(error, '') FROM `+s.tables.Quoted().Statuses+
		` WHERE run_id LIKE $1 AND status NOT IN ('running', 'completed') LIMIT 5`, prefix+"%")
	if err != nil {
		return err.Error()
	}
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err.Error()
	}
	return strings.Join(list, "; ")
}

// verifyBatch checks every run: completed, nothing pending, every step
// succeeded exactly once (attempts 1), and the sink's output is the
// expected one. A few runs are also read back through client.Result, the
// product's own view of a run.
func verifyBatch(ctx context.Context, s *stack, cl *client.Client, b *batch, ids []string, inputs []map[string]any) error {
	q := s.tables.Quoted()
	rows, err := s.pool.Query(ctx, `SELECT r.run_id, r.status, r.pending,
		(SELECT count(*) FROM `+q.Steps+` t WHERE t.run_id = r.run_id),
		(SELECT count(*) FROM `+q.Steps+` t WHERE t.run_id = r.run_id AND t.state = 'succeeded' AND t.attempts = 1 AND t.finished_at IS NOT NULL),
		(SELECT output FROM `+q.Steps+` t WHERE t.run_id = r.run_id AND t.node_id = $2)
		FROM `+q.Statuses+` r WHERE r.run_id LIKE $1`, b.prefix+"%", b.sink)
	if err != nil {
		return err
	}
	defer rows.Close()
	byID := map[string]int{}
	for i, id := range ids {
		byID[id] = i
	}
	seen := 0
	var problems []string
	for rows.Next() {
		var id, status string
		var pending, nsteps, nok int
		var out []byte
		if err := rows.Scan(&id, &status, &pending, &nsteps, &nok, &out); err != nil {
			return err
		}
		i, ok := byID[id]
		if !ok {
			problems = append(problems, id+": unexpected run")
			continue
		}
		seen++
		var got any
		_ = json.Unmarshal(out, &got)
		switch {
		case status != "completed" || pending != 0:
			problems = append(problems, fmt.Sprintf("%s: status %s, %d pending", id, status, pending))
		case nsteps != b.steps || nok != b.steps:
			problems = append(problems, fmt.Sprintf("%s: %d steps, %d succeeded at attempt 1; want %d", id, nsteps, nok, b.steps))
		case !reflect.DeepEqual(got, normalize(b.expected(inputs[i]))):
			problems = append(problems, fmt.Sprintf("%s: output %s, want %v", id, out, normalize(b.expected(inputs[i]))))
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if seen != len(ids) {
		problems = append(problems, fmt.Sprintf("%d runs found, want %d", seen, len(ids)))
	}
	for _, i := range []int{0, len(ids) / 2, len(ids) - 1} {
		if err := verifyResult(ctx, cl, ids[i], b.steps, normalize(b.expected(inputs[i]))); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("… and %d more", len(problems)-5))
		}
		return fmt.Errorf("%s: WRONG RESULTS: %s", b.name, strings.Join(problems, "; "))
	}
	s.log.printf("%s: verified %d runs: completed, %d steps each, expected output", b.name, len(ids), b.steps)
	return nil
}

// verifyResult reads a run with client.Result and checks it.
func verifyResult(ctx context.Context, cl *client.Client, id string, steps int, want any) error {
	res, err := cl.Result(ctx, id)
	if err != nil {
		return fmt.Errorf("%s: client.Result: %w", id, err)
	}
	if res.Status != workflow.RunCompleted {
		return fmt.Errorf("%s: client.Result status %s", id, res.Status)
	}
	if len(res.Steps) != steps {
		return fmt.Errorf("%s: client.Result has %d steps, want %d", id, len(res.Steps), steps)
	}
	for _, st := range res.Steps {
		if st.State != workflow.StepSucceeded || st.Attempts != 1 {
			return fmt.Errorf("%s: step %s %s after %d attempts", id, st.NodeID, st.State, st.Attempts)
		}
	}
	if got := normalize(res.Output); !reflect.DeepEqual(got, want) {
		return fmt.Errorf("%s: client.Result output %v, want %v", id, got, want)
	}
	return nil
}

// stepLatencies reads, for every step of the runs with the prefix,
// finished_at - created_at (the brief's per-step latency: made ready, i.e.
// enqueued, to the function's clock when the node returned, just before its
// commit) and updated_at - created_at (to the start of the step's commit
// transaction).
func stepLatencies(ctx context.Context, s *stack, prefix string) (fin, commit []float64, err error) {
	rows, err := s.pool.Query(ctx, `SELECT extract(epoch FROM finished_at - created_at) * 1000, extract(epoch FROM updated_at - created_at) * 1000
		FROM `+s.tables.Quoted().Steps+` WHERE run_id LIKE $1 AND finished_at IS NOT NULL`, prefix+"%")
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var f, c float64
		if err := rows.Scan(&f, &c); err != nil {
			return nil, nil, err
		}
		fin, commit = append(fin, f), append(commit, c)
	}
	return fin, commit, rows.Err()
}

// Breakdown splits per-step latency (mean ms) by the timestamps a step row
// carries. A successor's created_at is the now() of its predecessor's commit
// transaction, so ready → node start covers the rest of that commit, the
// function's reply, the bridge publishing the job, its delivery, the HTTP
// POST, the lease and the load.
type Breakdown struct {
	Steps              int     `json:"steps"`
	ReadyToNodeStartMS float64 `json:"ready_to_node_start_ms"` // created_at → started_at
	NodeMS             float64 `json:"node_ms"`                // started_at → finished_at
	NodeDoneToCommitMS float64 `json:"node_done_to_commit_ms"` // finished_at → updated_at (start of the commit transaction)
	// The median of created_at → started_at: less moved by the outliers
	// of a busy machine than the mean.
	ReadyToNodeStartP50MS float64 `json:"ready_to_node_start_p50_ms"`
}

type stepTiming struct {
	run, node                 string
	toStart, inNode, toCommit float64
}

func loadTimings(ctx context.Context, s *stack, prefix string) ([]stepTiming, error) {
	rows, err := s.pool.Query(ctx, `SELECT run_id, node_id, extract(epoch FROM started_at - created_at) * 1000,
		extract(epoch FROM finished_at - started_at) * 1000, extract(epoch FROM updated_at - finished_at) * 1000
		FROM `+s.tables.Quoted().Steps+` WHERE run_id LIKE $1 AND finished_at IS NOT NULL AND started_at IS NOT NULL`, prefix+"%")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []stepTiming
	for rows.Next() {
		var t stepTiming
		if err := rows.Scan(&t.run, &t.node, &t.toStart, &t.inNode, &t.toCommit); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func breakdown(ts []stepTiming, keep func(stepTiming) bool) Breakdown {
	var b Breakdown
	var toStart []float64
	for _, t := range ts {
		if !keep(t) {
			continue
		}
		toStart = append(toStart, t.toStart)
		b.Steps++
		b.ReadyToNodeStartMS += t.toStart
		b.NodeMS += t.inNode
		b.NodeDoneToCommitMS += t.toCommit
	}
	if b.Steps > 0 {
		n := float64(b.Steps)
		b.ReadyToNodeStartMS, b.NodeMS, b.NodeDoneToCommitMS = round3(b.ReadyToNodeStartMS/n), round3(b.NodeMS/n), round3(b.NodeDoneToCommitMS/n)
		sort.Float64s(toStart)
		b.ReadyToNodeStartP50MS = round3(toStart[len(toStart)/2])
	}
	return b
}

// ---- C: single-run latency ----

// SingleResult is the single-run latency of a chain.
type SingleResult struct {
	Runs int `json:"runs"`
	// client.Start called → completion seen by polling the status row.
	SingleRunMS Percentiles `json:"single_run_ms"`
	// client.Start called → the run's finished_at (start of its final
	// commit transaction): the same without the polling granularity.
	SingleRunCommittedMS Percentiles `json:"single_run_committed_ms"`
	PollIntervalMS       float64     `json:"poll_interval_ms"`
	PollRoundTripMS      float64     `json:"poll_round_trip_ms"` // mean time of one poll query
	StepLatencyMS        Percentiles `json:"step_latency_ms"`
	// Where a step's latency goes, over the counted runs' steps but the
	// first of each run.
	StepBreakdown Breakdown `json:"step_breakdown"`
}

func runSingles(ctx context.Context, s *stack, cl *client.Client, bp *workflow.Blueprint, prefix string, runs, warmup int) (*SingleResult, error) {
	conn, err := pgx.Connect(ctx, s.cfg.PostgresURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Prepare(ctx, "poll", `SELECT status FROM `+s.tables.Quoted().Statuses+` WHERE run_id = $1`); err != nil {
		return nil, err
	}
	res := &SingleResult{Runs: runs, PollIntervalMS: float64(s.cfg.PollInterval.Microseconds()) / 1000}
	var seen, committed []float64
	var polls int
	var pollTime time.Duration
	var ids []string
	var inputs []map[string]any
	for i := range warmup + runs {
		id := fmt.Sprintf("%s%05d", prefix, i)
		in := map[string]any{"k": i, "tag": "single"}
		t0 := time.Now()
		if _, err := cl.Start(ctx, bp, in, client.StartOptions{RunID: id}); err != nil {
			return nil, err
		}
		for {
			var st string
			p0 := time.Now()
			if err := conn.QueryRow(ctx, "poll", id).Scan(&st); err != nil {
				return nil, err
			}
			pollTime += time.Since(p0)
			polls++
			if st == "completed" {
				break
			}
			if st != "running" {
				return nil, fmt.Errorf("single run %s ended %s: %s", id, st, failedRuns(ctx, s, id))
			}
			if time.Since(t0) > 30*time.Second {
				return nil, fmt.Errorf("single run %s not completed after 30 s (queue backlog: %s)", id, queueDepths(s))
			}
			if err := s.alive(); err != nil {
				return nil, err
			}
			time.Sleep(s.cfg.PollInterval)
		}
		elapsed := time.Since(t0)
		ids, inputs = append(ids, id), append(inputs, in)
		if i < warmup {
			continue
		}
		var fin time.Time
		if err := s.pool.QueryRow(ctx, `SELECT finished_at FROM `+s.tables.Quoted().Statuses+` WHERE run_id = $1`, id).Scan(&fin); err != nil {
			return nil, err
		}
		seen = append(seen, float64(elapsed.Microseconds())/1000)
		committed = append(committed, float64(fin.Sub(t0).Microseconds())/1000)
	}
	res.SingleRunMS, res.SingleRunCommittedMS = percentiles(seen), percentiles(committed)
	res.PollRoundTripMS = round3(float64(pollTime.Microseconds()) / 1000 / float64(polls))
	steps := len(bp.Nodes)
	for i, id := range ids {
		if err := verifyResult(ctx, cl, id, steps, normalize(in2out(inputs[i]))); err != nil {
			return nil, fmt.Errorf("single runs of C: WRONG RESULT: %w", err)
		}
	}
	lat, _, err := stepLatencies(ctx, s, prefix)
	if err != nil {
		return nil, err
	}
	res.StepLatencyMS = percentiles(lat)
	ts, err := loadTimings(ctx, s, prefix)
	if err != nil {
		return nil, err
	}
	counted := map[string]bool{}
	for _, id := range ids[warmup:] {
		counted[id] = true
	}
	res.StepBreakdown = breakdown(ts, func(t stepTiming) bool { return counted[t.run] && t.node != bp.Nodes[0].ID })
	s.log.printf("C single: a step (but the first): ready → node start %.2f ms, node %.3f ms, node done → commit start %.3f ms",
		res.StepBreakdown.ReadyToNodeStartMS, res.StepBreakdown.NodeMS, res.StepBreakdown.NodeDoneToCommitMS)
	s.log.printf("C single: %d runs (+%d warm-up), p50 %.2f ms, p90 %.2f ms (polling every %.1f ms, poll query %.3f ms); verified",
		runs, warmup, res.SingleRunMS.P50, res.SingleRunMS.P90, res.PollIntervalMS, res.PollRoundTripMS)
	return res, nil
}

func in2out(in map[string]any) any { return in }

// ---- L: long chain ----

// LongResult is the long chain's per-step cost, first steps against last.
type LongResult struct {
	Nodes       int     `json:"nodes"`
	OutputBytes int     `json:"output_bytes"`
	Window      int     `json:"window"` // steps averaged at each end
	FirstMeanMS float64 `json:"first_mean_ms"`
	LastMeanMS  float64 `json:"last_mean_ms"`
	GrowthRatio float64 `json:"growth_ratio"`
	// The same with medians, less sensitive to a stray slow step.
	FirstMedianMS     float64     `json:"first_median_ms"`
	LastMedianMS      float64     `json:"last_median_ms"`
	MedianGrowthRatio float64     `json:"median_growth_ratio"`
	RunMS             float64     `json:"run_ms"`
	StepLatency       Percentiles `json:"step_latency_ms"`
	// A least-squares line through all the steps' latencies (less noisy
	// than two windows): its slope, and its value at the last window's
	// centre over its value at the first's.
	SlopeMSPer100Steps float64 `json:"slope_ms_per_100_steps"`
	FittedGrowthRatio  float64 `json:"fitted_growth_ratio"`
	// Where the first and the last steps' latency goes.
	FirstBreakdown Breakdown `json:"first_breakdown"`
	LastBreakdown  Breakdown `json:"last_breakdown"`
}

func runLong(ctx context.Context, s *stack, cl *client.Client, nodes int, id string) (*LongResult, error) {
	bp := chainBlueprint("bench-chain"+fmt.Sprint(nodes), nodes, true)
	pad := strings.Repeat("x", 1000)
	out, _ := json.Marshal(map[string]any{"i": nodes, "pad": pad})
	res := &LongResult{Nodes: nodes, OutputBytes: len(out), Window: min(50, nodes/5)}
	s.log.printf("L (%s): one run of a %d-node chain, each node outputting %d bytes", id, nodes, len(out))
	t0 := time.Now()
	if _, err := cl.Start(ctx, bp, map[string]any{"i": 0, "pad": pad}, client.StartOptions{RunID: id}); err != nil {
		return nil, err
	}
	if err := waitFinal(ctx, s, "L", id, 1, nodes, t0); err != nil {
		return nil, err
	}
	if err := verifyResult(ctx, cl, id, nodes, normalize(map[string]any{"i": nodes, "pad": pad})); err != nil {
		return nil, fmt.Errorf("the run of L: WRONG RESULT: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT node_id, extract(epoch FROM finished_at - created_at) * 1000 FROM `+s.tables.Quoted().Steps+` WHERE run_id = $1`, id)
	if err != nil {
		return nil, err
	}
	lat := map[string]float64{}
	var all []float64
	for rows.Next() {
		var n string
		var ms float64
		if err := rows.Scan(&n, &ms); err != nil {
			rows.Close()
			return nil, err
		}
		lat[n] = ms
		all = append(all, ms)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var sx, sy, sxx, sxy float64
	for i := 1; i <= nodes; i++ {
		x, y := float64(i), lat[chainID(i)]
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	n := float64(nodes)
	slope := (n*sxy - sx*sy) / (n*sxx - sx*sx)
	icept := (sy - slope*sx) / n
	w := float64(res.Window)
	res.SlopeMSPer100Steps = round3(slope * 100)
	res.FittedGrowthRatio = round3((icept + slope*(n-(w-1)/2)) / (icept + slope*(w+1)/2))
	var first, last float64
	var firsts, lasts []float64
	for i := 1; i <= res.Window; i++ {
		first += lat[chainID(i)]
		last += lat[chainID(nodes-res.Window+i)]
		firsts, lasts = append(firsts, lat[chainID(i)]), append(lasts, lat[chainID(nodes-res.Window+i)])
	}
	res.FirstMedianMS, res.LastMedianMS = percentiles(firsts).P50, percentiles(lasts).P50
	res.MedianGrowthRatio = round3(res.LastMedianMS / res.FirstMedianMS)
	res.FirstMeanMS = round3(first / float64(res.Window))
	res.LastMeanMS = round3(last / float64(res.Window))
	res.GrowthRatio = round3(res.LastMeanMS / res.FirstMeanMS)
	var fin time.Time
	if err := s.pool.QueryRow(ctx, `SELECT finished_at FROM `+s.tables.Quoted().Statuses+` WHERE run_id = $1`, id).Scan(&fin); err != nil {
		return nil, err
	}
	res.RunMS = round1(float64(fin.Sub(t0).Microseconds()) / 1000)
	res.StepLatency = percentiles(all)
	ts, err := loadTimings(ctx, s, id)
	if err != nil {
		return nil, err
	}
	index := map[string]int{}
	for i := 1; i <= nodes; i++ {
		index[chainID(i)] = i
	}
	res.FirstBreakdown = breakdown(ts, func(t stepTiming) bool { return t.run == id && index[t.node] <= res.Window })
	res.LastBreakdown = breakdown(ts, func(t stepTiming) bool { return t.run == id && index[t.node] > nodes-res.Window })
	s.log.printf("L: first %d steps: ready → node start %.2f ms, node %.3f ms, node done → commit start %.3f ms; last %d: %.2f, %.3f, %.3f ms",
		res.Window, res.FirstBreakdown.ReadyToNodeStartMS, res.FirstBreakdown.NodeMS, res.FirstBreakdown.NodeDoneToCommitMS,
		res.Window, res.LastBreakdown.ReadyToNodeStartMS, res.LastBreakdown.NodeMS, res.LastBreakdown.NodeDoneToCommitMS)
	s.log.printf("L: %d steps in %.0f ms; mean step latency first %d %.2f ms, last %d %.2f ms: growth ratio %.3f (medians %.3f, fitted line %.3f, slope %.3f ms per 100 steps); verified",
		nodes, res.RunMS, res.Window, res.FirstMeanMS, res.Window, res.LastMeanMS, res.GrowthRatio, res.MedianGrowthRatio, res.FittedGrowthRatio, res.SlopeMSPer100Steps)
	return res, nil
}

// queueDepths describes the stack's queues that hold messages.
func queueDepths(s *stack) string {
	depths, err := s.queueDepths()
	if err != nil {
		return err.Error()
	}
	var parts []string
	for q, n := range depths {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", q, n))
		}
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "all queues empty"
	}
	return strings.Join(parts, " ")
}
