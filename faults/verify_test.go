package faults

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// poison is a hand-made message published into the main queue, and how it
// must end: dead-lettered with this code and a reason containing reason.
type poison struct {
	msg    amqp.Publishing
	code   string
	reason string
}

// verifyOptions say what besides the load a case expects.
type verifyOptions struct {
	// extra are real runs outside the load that must complete like it.
	extra []*run
	// failed are runs that must end failed, by id, with a substring of
	// their error.
	failed map[string]string
	// poison must end in the DLQ or the recorded dead letters, and be the
	// only dead letters.
	poison []poison
}

// stepRow is a stored step, as the checks read it.
type stepRow struct {
	state      workflow.StepState
	attempts   int
	startedAt  *time.Time
	finishedAt *time.Time
}

// verify waits for every run to end, stops the processes, and checks
// every guarantee the suite proves. It returns the logs it read.
func (b *bundle) verify(l *load, o verifyOptions) *logs {
	t := b.t
	t.Helper()
	l.waitAllStarted()
	runs := append(append([]*run(nil), l.runs...), o.extra...)
	ids := make([]string, 0, len(runs)+len(o.failed))
	for _, r := range runs {
		ids = append(ids, r.id)
	}
	for id := range o.failed {
		ids = append(ids, id)
	}
	q := b.tables.Quoted()

	// 1. Every run reaches a final status within the deadline.
	start := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, runsDeadline+time.Minute)
	defer cancel()
	var running int
	err := testenv.Poll(ctx, runsDeadline, 50*time.Millisecond, func() (bool, error) {
		err := b.pool.QueryRow(ctx, `SELECT count(*) FROM `+q.Statuses+` WHERE run_id = ANY($1) AND status <> 'running'`, ids).Scan(&running)
		running = len(ids) - running
		return err == nil && running == 0, err
	})
	if err != nil {
		b.reportStuck(ctx, ids)
		b.diagnose(ctx)
		t.Fatalf("%d of %d runs still not final: %v", running, len(ids), err)
	}
	t.Logf("every run final %s after the last start", time.Since(start).Round(time.Millisecond))

	// 2. Let the bridge finish what is left (duplicates, retries in the
	// delay queues), then stop every process gracefully.
	b.waitQuiet()
	for _, p := range b.stopOrder() {
		p.Stop()
	}

	// 3. Nothing lost or left unacked: the main queue and its delay
	// queues are empty; the DLQ and the recorded dead letters hold only
	// the injected poison.
	depths, err := b.queueDepths()
	if err != nil {
		t.Fatalf("queues after stop: %v", err)
	}
	dlq := jobqueue.DeadLetterQueue(b.queue)
	for _, name := range jobqueue.TopologyQueues(b.queue) {
		d := depths[name]
		if name != dlq && d.Messages != 0 {
			t.Errorf("queue %s holds %d messages after every process stopped", name, d.Messages)
		}
		if d.Consumers != 0 {
			t.Errorf("queue %s still has %d consumers after every process stopped", name, d.Consumers)
		}
	}
	b.checkDeadLetters(ctx, o.poison)

	// 4. Final statuses and outputs.
	completed := b.checkStatuses(ctx, runs, o.failed)

	// 5. Steps and logs: exactly-once commits, joins, no overlap.
	lg, err := readLogs(b.stopOrder()...)
	if err != nil {
		t.Fatalf("logs: %v", err)
	}
	b.checkSteps(ctx, completed, lg)
	if ov := lg.overlaps(); len(ov) > 0 {
		for i, s := range ov {
			if i == 20 {
				t.Errorf("… and %d more overlaps", len(ov)-20)
				break
			}
			t.Errorf("two attempts of one step ran at the same time: %s", s)
		}
	}
	t.Logf("log counters (all incarnations):\n%s", lg.summary())
	return lg
}

// waitQuiet waits until the main and delay queues are empty and the
// bridge handles nothing, three polls in a row.
func (b *bundle) waitQuiet() {
	t := b.t
	t.Helper()
	dlq := jobqueue.DeadLetterQueue(b.queue)
	streak := 0
	var last string
	err := testenv.Poll(b.ctx, quietDeadline, 100*time.Millisecond, func() (bool, error) {
		depths, err := b.queueDepths()
		if err != nil {
			streak = 0
			return false, err
		}
		busy := []string{}
		for name, d := range depths {
			if name != dlq && d.Messages > 0 {
				busy = append(busy, fmt.Sprintf("%s=%d", name, d.Messages))
			}
		}
		for _, addr := range append([]string{b.brAddr}, b.moreBridgeAddrs...) {
			inflight, err := b.bridgeInflightAt(addr)
			if err != nil {
				streak = 0
				return false, err
			}
			if inflight > 0 {
				busy = append(busy, fmt.Sprintf("bridge %s in flight=%g", addr, inflight))
			}
		}
		if len(busy) > 0 {
			sort.Strings(busy)
			last = strings.Join(busy, ", ")
			streak = 0
			return false, nil
		}
		streak++
		return streak >= 3, nil
	})
	if err != nil {
		t.Errorf("queues never quiet after every run ended: %v (last: %s)", err, last)
		if lg, lerr := readLogs(b.fn, b.br); lerr == nil {
			if n := lg.count["bridge settled retried code=timeout"]; n > 0 {
				t.Errorf("the bridge gave up waiting for the function's answer %d times (request timeout): the function took a request and never answered it — "+
					"the CloudEvents receiver wedge TestFunctionAnswersAfterAbandonedRequests reproduces", n)
			}
		}
		b.diagnose(b.ctx)
	}
}

// diagnose logs what the case's PostgreSQL sessions are doing and the
// function's stepflow goroutines (it dumps its stacks, which ends it).
func (b *bundle) diagnose(ctx context.Context) {
	t := b.t
	prefix := strings.TrimSuffix(b.tables.Statuses, "statuses")
	rows, err := b.pool.Query(ctx, `SELECT pid, state, coalesce(wait_event_type, ''), coalesce(wait_event, ''), coalesce((now() - xact_start)::text, ''), (now() - state_change)::text, left(query, 200)
		FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE '%' || $1 || '%' ORDER BY pid`, prefix)
	if err == nil {
		for rows.Next() {
			var pid int
			var state, wt, we, xact, since, query string
			if rows.Scan(&pid, &state, &wt, &we, &xact, &since, &query) == nil {
				t.Logf("postgres session %d: %s wait=%s/%s in transaction for %s, state for %s: %s", pid, state, wt, we, xact, since, query)
			}
		}
		rows.Close()
	}
	b.logSockets()
	// Every process serves Go profiles (STEPFLOW_PPROF): keep their
	// goroutine dumps beside their logs, and show the function's steps.
	for _, p := range []struct{ name, addr string }{{"function", b.fnAddr}, {"bridge", b.brAddr}, {"reconciler", b.recAddr}} {
		resp, err := http.Get("http://" + p.addr + "/debug/pprof/goroutine?debug=2")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			continue
		}
		file := filepath.Join(b.dir, p.name+"-goroutines.txt")
		_ = os.WriteFile(file, body, 0o644)
		t.Logf("%s goroutines: %s", p.name, file)
		if p.name == "function" {
			var gs []string
			for _, g := range strings.Split(string(body), "\n\n") {
				if strings.Contains(g, "stepflow/function.") {
					gs = append(gs, g)
				}
			}
			t.Logf("function goroutines in stepflow/function (%d):\n%s", len(gs), strings.Join(gs, "\n\n"))
		}
	}
}

// reportStuck logs the runs that are not final, with their pending steps.
func (b *bundle) reportStuck(ctx context.Context, ids []string) {
	q := b.tables.Quoted()
	rows, err := b.pool.Query(ctx, `SELECT s.run_id, s.updated_at, coalesce(string_agg(p.node_id || ':' || p.state || ':' || p.attempts, ' ' ORDER BY p.node_id), '')
		FROM `+q.Statuses+` s LEFT JOIN `+q.Steps+` p ON p.run_id = s.run_id AND p.state IN ('ready', 'retrying', 'sleeping')
		WHERE s.run_id = ANY($1) AND s.status = 'running' GROUP BY s.run_id, s.updated_at ORDER BY s.run_id LIMIT 20`, ids)
	if err != nil {
		b.t.Logf("stuck runs: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var id, pending string
		var updated time.Time
		if err := rows.Scan(&id, &updated, &pending); err == nil {
			b.t.Logf("still running: %s (updated %s ago), pending steps: %s", id, time.Since(updated).Round(time.Millisecond), pending)
		}
	}
	if lg, err := readLogs(b.stopOrder()...); err == nil {
		b.t.Logf("log counters so far:\n%s", lg.summary())
	}
}

// checkDeadLetters compares the DLQ and the recorded dead letters with the
// injected poison, by message id.
func (b *bundle) checkDeadLetters(ctx context.Context, want []poison) {
	t := b.t
	t.Helper()
	type dead struct{ where, id, code, reason, body string }
	var got []dead
	ch, err := b.amqp.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	for {
		d, ok, err := ch.Get(jobqueue.DeadLetterQueue(b.queue), true)
		if err != nil {
			t.Fatalf("read the DLQ: %v", err)
		}
		if !ok {
			break
		}
		code, _ := d.Headers[jobqueue.HeaderErrorCode].(string)
		reason, _ := d.Headers[jobqueue.HeaderErrorReason].(string)
		got = append(got, dead{"DLQ", d.MessageId, code, reason, string(d.Body)})
	}
	rows, err := b.pool.Query(ctx, `SELECT coalesce(message_id, ''), error_code, error_reason, body FROM `+b.tables.Quoted().DeadLetters+` ORDER BY id`)
	if err != nil {
		t.Fatalf("recorded dead letters: %v", err)
	}
	for rows.Next() {
		var d dead
		var body []byte
		if err := rows.Scan(&d.id, &d.code, &d.reason, &body); err != nil {
			t.Fatal(err)
		}
		d.where, d.body = "recorded", string(body)
		got = append(got, d)
	}
	rows.Close()

	byID := map[string][]dead{}
	for _, d := range got {
		byID[d.id] = append(byID[d.id], d)
	}
	for _, p := range want {
		ds := byID[p.msg.MessageId]
		delete(byID, p.msg.MessageId)
		switch {
		case len(ds) == 0:
			t.Errorf("poison %s (%.60q) is neither in the DLQ nor recorded as a dead letter", p.msg.MessageId, p.msg.Body)
		case len(ds) > 1:
			t.Errorf("poison %s dead-lettered %d times: %+v", p.msg.MessageId, len(ds), ds)
		default:
			d := ds[0]
			if d.code != p.code || !strings.Contains(d.reason, p.reason) || d.body != string(p.msg.Body) {
				t.Errorf("poison %s dead-lettered (%s) with code %q reason %q body %.60q; want code %q, reason containing %q, the body unchanged",
					p.msg.MessageId, d.where, d.code, d.reason, d.body, p.code, p.reason)
			} else {
				t.Logf("poison %s: %s, code %s, reason %q", p.msg.MessageId, d.where, d.code, d.reason)
			}
		}
	}
	unexpected, leased := 0, 0
	for id, ds := range byID {
		for _, d := range ds {
			unexpected++
			if d.code == "409" {
				leased++
			}
			if unexpected <= 10 {
				t.Errorf("unexpected dead letter (%s) %s: code %q reason %q body %.200q", d.where, id, d.code, d.reason, d.body)
			}
		}
	}
	if unexpected > 10 {
		t.Errorf("… %d unexpected dead letters in all", unexpected)
	}
	if leased > 0 {
		t.Errorf("%d jobs were dead-lettered after %s transport attempts all answered 409: the step's lease outlived the function that held it "+
			"(it lasts STEP_TIMEOUT+5s), and the bridge's retries (%s, full jitter) ran out first", leased, bridgeArgs[5], strings.Join(bridgeArgs, " "))
	}
}

// checkStatuses: every run completed, once and for good, with exactly the
// context the local runner computed; the runs in failed failed as said.
// It returns the runs that completed.
func (b *bundle) checkStatuses(ctx context.Context, runs []*run, failed map[string]string) (completed []*run) {
	t := b.t
	t.Helper()
	type status struct {
		status, errText string
		pending         int
		finished        *time.Time
		data            []byte
	}
	rows, err := b.pool.Query(ctx, `SELECT run_id, status, coalesce(error, ''), pending, finished_at, status_data FROM `+b.tables.Quoted().Statuses)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]status{}
	for rows.Next() {
		var id string
		var s status
		if err := rows.Scan(&id, &s.status, &s.errText, &s.pending, &s.finished, &s.data); err != nil {
			t.Fatal(err)
		}
		got[id] = s
	}
	rows.Close()
	bad := 0
	for _, r := range runs {
		s, ok := got[r.id]
		delete(got, r.id)
		switch {
		case !ok:
			t.Errorf("run %s has no status row", r.id)
		case s.status != string(workflow.RunCompleted):
			t.Errorf("run %s (input %v) ended %s: %s", r.id, r.input, s.status, s.errText)
		case s.pending != 0 || s.finished == nil:
			t.Errorf("run %s completed with pending=%d finished_at=%v", r.id, s.pending, s.finished)
		default:
			completed = append(completed, r)
			var data map[string]any
			if err := json.Unmarshal(s.data, &data); err != nil {
				t.Errorf("run %s: status_data %q: %v", r.id, s.data, err)
				continue
			}
			if g, w := canonical(data), canonical(r.expected.Context); g != w {
				bad++
				if bad <= 10 {
					t.Errorf("run %s (input %v) context differs from the local runner's:\n got  %s\n want %s", r.id, r.input, g, w)
				}
			}
		}
	}
	if bad > 10 {
		t.Errorf("… %d runs in all with a wrong context", bad)
	}
	for id, substr := range failed {
		s, ok := got[id]
		delete(got, id)
		if !ok || s.status != string(workflow.RunFailed) || !strings.Contains(s.errText, substr) {
			t.Errorf("run %s: status %q error %q; want failed with an error containing %q", id, s.status, s.errText, substr)
		}
	}
	for id, s := range got {
		t.Errorf("unexpected run %s: %s %s", id, s.status, s.errText)
	}
	return completed
}

// checkSteps: each run has exactly the steps the local runner had, in the
// same states; each succeeded step was committed by exactly one attempt
// (the one whose start and end the row holds); every join started only
// after its predecessors finished — all of them for an all join, one for
// an any join — so it fired once, with every input it needed.
func (b *bundle) checkSteps(ctx context.Context, runs []*run, lg *logs) {
	t := b.t
	t.Helper()
	rows, err := b.pool.Query(ctx, `SELECT run_id, node_id, state, attempts, started_at, finished_at FROM `+b.tables.Quoted().Steps)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]stepRow{}
	for rows.Next() {
		var id, node, state string
		var s stepRow
		if err := rows.Scan(&id, &node, &state, &s.attempts, &s.startedAt, &s.finishedAt); err != nil {
			t.Fatal(err)
		}
		s.state = workflow.StepState(state)
		if got[id] == nil {
			got[id] = map[string]stepRow{}
		}
		got[id][node] = s
	}
	rows.Close()

	errs := 0
	fail := func(format string, args ...any) {
		errs++
		if errs <= 30 {
			t.Errorf(format, args...)
		}
	}
	extra, cRuns := 0, 0
	for _, r := range runs {
		w, err := workflow.Compile(r.bp, nil)
		if err != nil {
			t.Fatal(err)
		}
		steps := got[r.id]
		want := map[string]workflow.StepState{}
		for _, s := range r.expected.Steps {
			want[cmp.Or(s.StepKey, s.NodeID)] = s.State // a loop iteration's or a dynamic node's row is keyed by its step key
		}
		if want["c"] == workflow.StepSucceeded {
			cRuns++
		}
		// A loop's exit row, named by its controller's id, is the store's
		// copy of the loop's last controller step (docs/architecture.md,
		// Loops): the local runner has no such step, and no attempt ran it.
		for node, row := range steps {
			if n, ok := w.Node(node); ok && n.Uses == workflow.NodeLoopController {
				if _, local := want[node]; !local {
					if row.state != workflow.StepSucceeded {
						fail("run %s: loop exit row %s is %s, want succeeded", r.id, node, row.state)
					}
					steps = maps.Clone(steps)
					delete(steps, node)
				}
			}
		}
		if len(steps) != len(want) {
			fail("run %s has %d steps, the local runner %d: %v vs %v", r.id, len(steps), len(want), steps, want)
		}
		committed := map[string]attempt{}
		for node, st := range want {
			row, ok := steps[node]
			if !ok {
				fail("run %s: no step row for %s (want %s)", r.id, node, st)
				continue
			}
			if row.state != st {
				fail("run %s: step %s is %s, the local runner's %s", r.id, node, row.state, st)
				continue
			}
			if st != workflow.StepSucceeded {
				continue
			}
			if row.attempts != 1 || row.startedAt == nil || row.finishedAt == nil {
				fail("run %s: step %s succeeded with attempts=%d started=%v finished=%v; want one attempt", r.id, node, row.attempts, row.startedAt, row.finishedAt)
				continue
			}
			// The committed result is the succeeded attempt that
			// finished when the row says; the row's start is its first
			// committed attempt's (a sleeping node commits twice).
			as := lg.attempts[stepKey{r.id, node}]
			var match []attempt
			startLogged := false
			for _, a := range as {
				if a.Outcome == "succeeded" && a.Finished == row.finishedAt.UnixMicro() {
					match = append(match, a)
				}
				if a.Started == row.startedAt.UnixMicro() {
					startLogged = true
				}
				if a.Outcome == "succeeded" {
					extra++
				}
			}
			extra--
			if len(match) != 1 || !startLogged {
				fail("run %s: step %s: %d succeeded attempts finished when its row says (%d µs), its start (%d µs) logged: %v; want exactly one (attempts logged: %+v)",
					r.id, node, len(match), row.finishedAt.UnixMicro(), row.startedAt.UnixMicro(), startLogged, as)
				continue
			}
			committed[node] = match[0]
		}
		// Joins fire after their predecessors' results, once.
		for _, node := range w.NodeIDs() {
			n, _ := w.Node(node)
			preds := w.Predecessors(node)
			a, ok := committed[node]
			if !ok || len(preds) < 2 {
				continue
			}
			var finished []int64
			for _, p := range preds {
				if pa, ok := committed[p]; ok {
					finished = append(finished, pa.Finished)
				}
			}
			if len(finished) == 0 {
				fail("run %s: join %s ran with no predecessor committed", r.id, node)
				continue
			}
			sort.Slice(finished, func(i, j int) bool { return finished[i] < finished[j] })
			need := finished[len(finished)-1] // all: the last predecessor
			if n.JoinStrategy == workflow.JoinAny {
				need = finished[0] // any: the first arrival
			}
			if a.Started < need {
				fail("run %s: %s join %s started at %d µs, before its predecessors (%v µs) finished", r.id, n.JoinStrategy, node, a.Started, finished)
			}
		}
	}
	if errs > 30 {
		t.Errorf("… %d step problems in all", errs)
	}
	t.Logf("%d runs checked (%d took the conditional branch c); %d succeeded node attempts beyond one per succeeded step (duplicates whose commit was discarded)", len(runs), cRuns, extra)
}

// logSockets logs the TCP sockets of the function process and of the
// case's proxies that have bytes queued: whether a stuck request waits on
// data that never arrived, or on data nobody reads.
func (b *bundle) logSockets() {
	out, err := exec.Command("ss", "-tnpH").Output()
	if err != nil {
		b.t.Logf("ss: %v", err)
		return
	}
	fnPid := "pid=" + strconv.Itoa(b.fn.Pid()) + ","
	testPid := "pid=" + strconv.Itoa(os.Getpid()) + ","
	ports := []string{}
	for _, p := range []*proxy{b.pg, b.redis, b.rabbit} {
		_, port, _ := strings.Cut(p.Addr(), ":")
		ports = append(ports, ":"+port+" ")
	}
	n := 0
	for _, line := range splitLines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mine := strings.Contains(line, fnPid)
		if !mine && strings.Contains(line, testPid) {
			for _, port := range ports {
				if strings.Contains(line+" ", port) {
					mine = true
				}
			}
		}
		if !mine {
			continue
		}
		n++
		if f[1] != "0" || f[2] != "0" {
			b.t.Logf("socket with queued bytes (state recv-q send-q local peer process): %s", line)
		}
	}
	b.t.Logf("%d sockets of the function and the proxies inspected", n)
}
