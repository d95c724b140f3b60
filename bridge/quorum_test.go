package bridge_test

// Runs through quorum queues (STEPFLOW_QUEUE_TYPE=quorum) on the real
// RabbitMQ: node retries and a transport retry wait in quorum delay
// queues, a rejected job goes to the quorum dead-letter queue and fails its
// run, and a component set to the other type is refused with an error that
// says so.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/workflow"
)

// quorumFlow: a node that fails its first attempt (a node retry, delayed
// 50 ms), then one the function answers 503 once (a transport retry), then
// a last one.
const quorumFlow = `{"id": "quorum-flow", "nodes": [
  {"id": "flaky", "uses": "flaky", "params": {"failures": 1}, "config": {"maxRetries": 2, "retryDelay": 50}},
  {"id": "unavailable", "uses": "noop"},
  {"id": "end", "uses": "noop"}
], "edges": [{"source": "flaky", "target": "unavailable"}, {"source": "unavailable", "target": "end"}]}`

// rejected: a node the function rejects (the test's handler answers 422).
const rejected = `{"id": "rejected", "nodes": [{"id": "start", "uses": "noop"}, {"id": "refused", "uses": "noop"}],
  "edges": [{"source": "start", "target": "refused"}]}`

// answer503Once answers 503 to the first delivery of node "unavailable"
// and 422 to every delivery of node "refused"; the rest reaches the
// function.
type answer503Once struct {
	mu   sync.Mutex
	seen map[string]int // deliveries by node
}

func (a *answer503Once) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		var job wire.Job
		_ = json.Unmarshal(body, &job) // binary mode (BatchSize 1): the body is the job
		a.mu.Lock()
		a.seen[job.NodeID]++
		n := a.seen[job.NodeID]
		a.mu.Unlock()
		switch {
		case job.NodeID == "unavailable" && n == 1:
			http.Error(w, "not now", http.StatusServiceUnavailable)
		case job.NodeID == "refused":
			http.Error(w, "refused by the test", http.StatusUnprocessableEntity)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func (a *answer503Once) count(node string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[node]
}

func TestRunsThroughQuorumQueues(t *testing.T) {
	t.Parallel()
	h := &answer503Once{seen: map[string]int{}}
	s := inprocess.ForTest(t, inprocess.Options{
		QueueType: string(jobqueue.QueueQuorum),
		Registry:  nodes.Registry(),
		Handler:   h.wrap,
		Bridge:    func(c *bridge.Config) { c.BatchSize = 1 },
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cl, err := client.New(ctx, client.Config{PostgresURL: s.PostgresURL, AMQPURL: s.AMQPURL, Queue: s.Queue, QueueType: s.QueueType, Tables: s.Tables})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	decode := func(src string) *workflow.Blueprint {
		bp, err := workflow.Decode([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return bp
	}

	okRun, err := cl.Start(ctx, decode(quorumFlow), nil, client.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}
	badRun, err := cl.Start(ctx, decode(rejected), nil, client.StartOptions{})
	if err != nil {
		t.Fatal(err)
	}

	res, err := cl.Wait(ctx, okRun)
	if err != nil {
		t.Fatal(err)
	}
	attempts := map[string]int{}
	for _, st := range res.Steps {
		attempts[st.NodeID] = st.Attempts
	}
	if res.Status != workflow.RunCompleted || attempts["flaky"] != 2 || attempts["unavailable"] != 1 || attempts["end"] != 1 {
		t.Errorf("run %s: %s, attempts %v; want completed, flaky retried once, the rest one attempt each", okRun, res.Status, attempts)
	}
	if n := h.count("unavailable"); n != 2 {
		t.Errorf("node unavailable delivered %d times, want 2 (one 503, one retry)", n)
	}

	// The rejected job went to the quorum DLQ; the reconciler recorded it
	// and failed its run.
	res, err = cl.Wait(ctx, badRun)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != workflow.RunFailed || len(res.Errors) == 0 || !strings.Contains(res.Errors[0].Message, "refused by the test") {
		t.Errorf("run %s: %s %+v; want failed by its dead-lettered job", badRun, res.Status, res.Errors)
	}
	dls, err := cl.DeadLetters(ctx, client.DeadLetterFilter{RunID: badRun})
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].NodeID != "refused" || dls[0].Code != "422" {
		t.Errorf("dead letters of %s: %+v; want the refused job, code 422", badRun, dls)
	}

	// A client set to classic queues is refused by the quorum queues, with
	// an error naming the queue and the setting.
	classic, err := client.New(ctx, client.Config{PostgresURL: s.PostgresURL, AMQPURL: s.AMQPURL, Queue: s.Queue, Tables: s.Tables})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(classic.Close)
	_, err = classic.Start(ctx, decode(rejected), nil, client.StartOptions{})
	var me *jobqueue.MismatchError
	if !errors.As(err, &me) || me.Queue != s.Queue || !strings.Contains(err.Error(), "STEPFLOW_QUEUE_TYPE") {
		t.Errorf("classic client on quorum queues: %v; want a MismatchError naming %s and STEPFLOW_QUEUE_TYPE", err, s.Queue)
	}
	// So is a classic bridge: it stops at once (retrying cannot help).
	b, err := bridge.New(bridge.Config{AMQPURL: s.AMQPURL, Queue: s.Queue, FunctionURL: s.FunctionURL,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Run(ctx); !errors.As(err, &me) || me.Queue != s.Queue {
		t.Errorf("classic bridge on quorum queues: Run = %v; want a MismatchError naming %s", err, s.Queue)
	}
}
