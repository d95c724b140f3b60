package api_test

// setup(t, o) gives each test stepflow's services in-process (a step
// function, a bridge and a reconciler over tables, a queue and a Redis
// prefix of the test's own: internal/testenv/inprocess), a client of them
// and the API server over that client, served by httptest; tests speak
// HTTP to it.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepflow/stepflow/api"
	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

type testBundle struct {
	t        *testing.T
	ctx      context.Context // bounds every call of a test
	stack    *inprocess.Stack
	client   *client.Client
	server   *api.Server
	registry *prometheus.Registry
	url      string // the httptest server's base URL
}

type setupOptions struct {
	stack inprocess.Options
	// registry holds the node types of the stack's function and of the
	// API's client (nil: the built-ins).
	registry *workflow.Registry
	api      func(*api.Options)
}

func setup(t *testing.T, o setupOptions) *testBundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if o.registry == nil {
		o.registry = workflow.NewRegistry()
	}
	o.stack.Registry = o.registry
	s := inprocess.ForTest(t, o.stack)
	c, err := client.New(ctx, client.Config{PostgresURL: s.PostgresURL, AMQPURL: s.AMQPURL, Queue: s.Queue, Tables: s.Tables, Registry: o.registry})
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(c.Close)
	reg := prometheus.NewRegistry()
	opts := api.Options{Registry: reg, Logger: testLogger(t)}
	if o.api != nil {
		o.api(&opts)
	}
	srv, err := api.New(c, opts)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &testBundle{t: t, ctx: ctx, stack: s, client: c, server: srv, registry: reg, url: hs.URL}
}

// reply is an answer of the server.
type reply struct {
	code   int
	header http.Header
	body   []byte
}

// json decodes the answer's body into a generic value.
func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("answer %d is not a JSON object: %v\n%s", r.code, err, r.body)
	}
	return v
}

// errorText is the "error" of a JSON error answer ("" when there is none).
func (r reply) errorText() string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(r.body, &e)
	return e.Error
}

// causes are the "causes" of a JSON error answer, as field: message.
func (r reply) causes() []string {
	var e struct {
		Causes []api.Cause `json:"causes"`
	}
	_ = json.Unmarshal(r.body, &e)
	var out []string
	for _, c := range e.Causes {
		out = append(out, c.Field+": "+c.Message)
	}
	return out
}

// do sends a request; headers are name, value pairs. A POST, and a request
// with a body, carries Content-Type: application/json, as the console and a
// JSON client send it; a header given with the value "" is left out.
func (tb *testBundle) do(method, path, body string, headers ...string) reply {
	tb.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(tb.ctx, method, tb.url+path, rd)
	if err != nil {
		tb.t.Fatal(err)
	}
	if body != "" || method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.t.Fatalf("%s %s: read the answer: %v", method, path, err)
	}
	return reply{code: resp.StatusCode, header: resp.Header, body: b}
}

// waitForRun polls GET /api/v1/runs/{id} until the run has a final
// status, and returns it.
func (tb *testBundle) waitForRun(id string) workflow.RunResult {
	tb.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		r := tb.do("GET", "/api/v1/runs/"+id, "")
		var res workflow.RunResult
		if r.code == http.StatusOK && json.Unmarshal(r.body, &res) == nil && res.Status.Final() {
			return res
		}
		if time.Now().After(deadline) {
			tb.t.Fatalf("run %s not finished after 20 s; GET answers %d %s", id, r.code, r.body)
		}
		<-tick.C
	}
}

// start starts a run through the client, not the API (a fixture).
func (tb *testBundle) start(src string, input map[string]any, runID string) string {
	tb.t.Helper()
	bp, err := workflow.Decode([]byte(src))
	if err != nil {
		tb.t.Fatal(err)
	}
	id, err := tb.client.Start(tb.ctx, bp, input, client.StartOptions{RunID: runID})
	if err != nil {
		tb.t.Fatalf("start %s: %v", runID, err)
	}
	return id
}

// greet: two built-in transforms, the second fed by the first.
const greet = `{"id": "greet", "nodes": [
  {"id": "hello", "uses": "transform", "params": {"expression": "'hello, ' + input.name"}},
  {"id": "shout", "uses": "transform", "params": {"expression": "upper(input)"}}
], "edges": [{"source": "hello", "target": "shout"}]}`

// nap sleeps far longer than any test waits.
const nap = `{"id": "nap", "nodes": [{"id": "nap", "uses": "sleep", "params": {"duration": "1h"}}]}`

// testLogger logs warnings and errors to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func compact(t *testing.T, src string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(src)); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}
