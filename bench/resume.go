package main

// The R workload: resume latency. Runs of a → gate (wait) → next all
// await at gate; then, one at a time, each is resumed through the HTTP API
// (`stepflow api`, a process of its own like the function and the bridge)
// and timed from the call to next's step finishing (its finished_at,
// written by the function on this machine's clock).

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

// ResumeResult is what R measured.
type ResumeResult struct {
	Runs int `json:"runs"`
	// ResumeToNextDoneMS: POST /api/v1/runs/{id}/resume sent → the node
	// after the wait finished (its step's finished_at).
	ResumeToNextDoneMS Percentiles `json:"resume_to_next_done_ms"`
	// APICallMS: the resume request's round trip (its transaction and the
	// publish of next's job).
	APICallMS Percentiles `json:"api_call_ms"`
}

const resumeBlueprint = `{"id": "bench-resume", "nodes": [
  {"id": "a", "uses": "noop"}, {"id": "gate", "uses": "wait"}, {"id": "next", "uses": "noop"}
], "edges": [{"source": "a", "target": "gate"}, {"source": "gate", "target": "next"}]}`

// runResume starts runs+warmup runs, waits until every one awaits, then
// resumes them one after another through the API and times each.
func runResume(ctx context.Context, s *stack, cl *client.Client, runs, warmup int) (*ResumeResult, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	api, err := s.spawn("api", []string{"api", "--api-address", addr}, s.env())
	if err != nil {
		return nil, err
	}
	defer stopProcess(api)
	base := "http://" + addr
	if err := s.waitReady(ctx, api, base+"/health/readiness", 30*time.Second); err != nil {
		return nil, err
	}
	bp, err := workflow.Decode([]byte(resumeBlueprint))
	if err != nil {
		return nil, err
	}
	total := warmup + runs
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("rs-%05d", i)
		if _, err := cl.Start(ctx, bp, map[string]any{"k": i}, client.StartOptions{RunID: ids[i]}); err != nil {
			return nil, err
		}
	}
	q := s.tables.Quoted()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var n int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM `+q.Statuses+` WHERE run_id LIKE 'rs-%' AND status = 'awaiting'`).Scan(&n); err != nil {
			return nil, err
		}
		if n == total {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("resume workload: %d of %d runs await after 60 s (queues: %s)", n, total, queueDepths(s))
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.log.printf("R: %d runs await; resuming them one at a time through the API", total)

	conn, err := pgx.Connect(ctx, s.cfg.PostgresURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Prepare(ctx, "next", `SELECT finished_at FROM `+q.Steps+` WHERE run_id = $1 AND node_id = 'next' AND state = 'succeeded'`); err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	var toNext, calls []float64
	for i, id := range ids {
		t0 := time.Now()
		resp, err := hc.Post(base+"/api/v1/runs/"+id+"/resume", "application/json", strings.NewReader(`{"node": "gate", "output": {"ok": true}}`))
		if err != nil {
			return nil, fmt.Errorf("resume workload: resume %s: %w", id, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		call := time.Since(t0)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Warning") != "" {
			return nil, fmt.Errorf("resume workload: resume %s answered %d %s (%s)", id, resp.StatusCode, body, resp.Header.Get("Warning"))
		}
		var fin time.Time
		for {
			err := conn.QueryRow(ctx, "next", id).Scan(&fin)
			if err == nil {
				break
			}
			if err != pgx.ErrNoRows {
				return nil, err
			}
			if time.Since(t0) > 30*time.Second {
				return nil, fmt.Errorf("resume workload: next of %s not done 30 s after its resume (queues: %s)", id, queueDepths(s))
			}
			if err := s.alive(); err != nil {
				return nil, err
			}
			time.Sleep(s.cfg.PollInterval)
		}
		if i < warmup {
			continue
		}
		toNext = append(toNext, float64(fin.Sub(t0).Microseconds())/1000)
		calls = append(calls, float64(call.Microseconds())/1000)
	}
	for _, id := range ids {
		if err := verifyResult(ctx, cl, id, 3, map[string]any{"ok": true}); err != nil {
			return nil, err
		}
	}
	return &ResumeResult{Runs: runs, ResumeToNextDoneMS: percentiles(toNext), APICallMS: percentiles(calls)}, nil
}

// stopProcess stops a process of the stack with SIGTERM (SIGKILL after
// 10 s).
func stopProcess(p *process) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}
