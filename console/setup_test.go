package console_test

// setup(t, o) gives each test stepflow's services in-process (a step
// function with the example nodes, a bridge and a reconciler over tables,
// a queue and a Redis prefix of the test's own), a client of them and the
// API server (which mounts the console) over that client, served by
// httptest; tests read the pages over HTTP, or drive Chromium at them.

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepflow/stepflow/api"
	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

func TestMain(m *testing.M) {
	testenv.SetDefaultParallel(4) // two cores: the browser tests are heavy
	code := m.Run()
	closeBrowser()
	os.Exit(code)
}

type testBundle struct {
	t      *testing.T
	ctx    context.Context
	stack  *inprocess.Stack
	client *client.Client
	url    string // the API server's base URL
}

type setupOptions struct {
	stack inprocess.Options
	api   func(*api.Options)
	// wrap, when set, stands between httptest and the API server (to
	// watch what the pages send).
	wrap func(http.Handler) http.Handler
}

func setup(t *testing.T, o setupOptions) *testBundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	reg := nodes.Registry()
	o.stack.Registry = reg
	s := inprocess.ForTest(t, o.stack)
	c, err := client.New(ctx, client.Config{PostgresURL: s.PostgresURL, AMQPURL: s.AMQPURL, Queue: s.Queue, Tables: s.Tables, Registry: reg})
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(c.Close)
	opts := api.Options{Registry: prometheus.NewRegistry(), Logger: testLogger(t)}
	if o.api != nil {
		o.api(&opts)
	}
	srv, err := api.New(c, opts)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	var h http.Handler = srv
	if o.wrap != nil {
		h = o.wrap(srv)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return &testBundle{t: t, ctx: ctx, stack: s, client: c, url: hs.URL}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func decode(t *testing.T, src string) *workflow.Blueprint {
	t.Helper()
	bp, err := workflow.Decode([]byte(src))
	if err != nil {
		t.Fatalf("decode blueprint: %v\n%s", err, src)
	}
	return bp
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// start starts a run through the client.
func (tb *testBundle) start(src string, input map[string]any, runID string) string {
	tb.t.Helper()
	id, err := tb.client.Start(tb.ctx, decode(tb.t, src), input, client.StartOptions{RunID: runID})
	if err != nil {
		tb.t.Fatalf("start %s: %v", runID, err)
	}
	return id
}

// wait waits for the run to finish.
func (tb *testBundle) wait(runID string) *workflow.RunResult {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	res, err := tb.client.Wait(ctx, runID)
	if err != nil {
		tb.t.Fatalf("wait for %s: %v", runID, err)
	}
	return res
}

// page is an answer of the server.
type page struct {
	code   int
	header http.Header
	body   string
}

func (tb *testBundle) get(path string) page {
	tb.t.Helper()
	req, err := http.NewRequestWithContext(tb.ctx, "GET", tb.url+path, nil)
	if err != nil {
		tb.t.Fatal(err)
	}
	// Redirects are answers to check, not to follow.
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		tb.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.t.Fatal(err)
	}
	return page{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// has fails the test unless the page holds every one of want.
func (p page) has(t *testing.T, what string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(p.body, w) {
			t.Errorf("%s: no %q in the page (%d):\n%s", what, w, p.code, p.body)
			return
		}
	}
}

// lacks fails the test if the page holds any of unwanted.
func (p page) lacks(t *testing.T, what string, unwanted ...string) {
	t.Helper()
	for _, w := range unwanted {
		if strings.Contains(p.body, w) {
			t.Errorf("%s: %q in the page", what, w)
		}
	}
}

// greet: two built-in transforms, the second fed by the first.
const greet = `{"id": "greet", "metadata": {"version": "3"}, "nodes": [
  {"id": "hello", "uses": "transform", "params": {"expression": "'hello, ' + input.name"}},
  {"id": "shout", "uses": "transform", "params": {"expression": "upper(input)"}}
], "edges": [{"source": "hello", "target": "shout"}]}`

// nap sleeps far longer than any test waits.
const nap = `{"id": "nap", "nodes": [{"id": "nap", "uses": "sleep", "params": {"duration": "1h"}}]}`
