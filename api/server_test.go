package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepflow/stepflow/api"
	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv"
)

const token = "test-token-0123456789abcdef"

// With a token, every write needs it; reads and probes do not.
func TestTokenGuardsWrites(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{api: func(o *api.Options) { o.Token = token }})
	tb.start(nap, nil, "napping")
	tb.start(nap, nil, "dozing")
	bearer := []string{"Authorization", "Bearer " + token}
	start := startBody(t, greet, `, "input": {"name": "Ada"}`)
	unauthorized := func(t *testing.T, r reply) {
		if got := r.header.Get("WWW-Authenticate"); got != `Bearer realm="stepflow"` {
			t.Errorf("WWW-Authenticate %q", got)
		}
	}
	tb.run([]request{
		{name: "start without a token", method: "POST", path: "/api/v1/runs", body: start, code: 401, says: []string{"Authorization: Bearer"}, check: unauthorized},
		{name: "start with a wrong token", method: "POST", path: "/api/v1/runs", body: start, headers: []string{"Authorization", "Bearer " + token + "x"}, code: 401,
			says: []string{"not the server's STEPFLOW_API_TOKEN"}, check: unauthorized},
		{name: "start with a prefix of the token", method: "POST", path: "/api/v1/runs", body: start, headers: []string{"Authorization", "Bearer " + token[:10]}, code: 401},
		{name: "start with another scheme", method: "POST", path: "/api/v1/runs", body: start, headers: []string{"Authorization", "Basic " + token}, code: 401},
		{name: "the token before the body", method: "POST", path: "/api/v1/runs", body: "{", code: 401},
		{name: "start with the token", method: "POST", path: "/api/v1/runs", body: start, headers: bearer, code: 201},
		{name: "the scheme in lower case", method: "POST", path: "/api/v1/runs", body: start, headers: []string{"Authorization", "bearer " + token}, code: 201},
		{name: "cancel without a token", method: "POST", path: "/api/v1/runs/napping/cancel", code: 401, check: func(t *testing.T, r reply) {
			if res, err := tb.client.Result(tb.ctx, "napping"); err != nil || res.Status != "running" {
				t.Errorf("napping after the refused cancel: %v %v, want running", res.Status, err)
			}
		}},
		{name: "cancel with the token", method: "POST", path: "/api/v1/runs/dozing/cancel", headers: bearer, code: 200},
		{name: "replay without a token", method: "POST", path: "/api/v1/dead-letters/replay", body: `{"all": true}`, code: 401},
		{name: "replay with the token", method: "POST", path: "/api/v1/dead-letters/replay", body: `{"all": true}`, headers: bearer, code: 200},
		{name: "list runs without a token", method: "GET", path: "/api/v1/runs", code: 200},
		{name: "read a run without a token", method: "GET", path: "/api/v1/runs/napping", code: 200},
		{name: "list dead letters without a token", method: "GET", path: "/api/v1/dead-letters", code: 200},
		{name: "probe without a token", method: "GET", path: "/health/readiness", code: 200},
		{name: "metrics without a token", method: "GET", path: "/metrics", code: 200},
	})
}

// A listener that other machines reach needs a token: the server refuses
// to start without one, saying why.
func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		address, token, publicURL string
		maxBody                   int64
		refused                   []string // what the error says; nil: accepted
	}{
		{address: "127.0.0.1:8088"},
		{address: "localhost:8088"},
		{address: "[::1]:8088"},
		{address: "127.0.0.5:0"},
		{address: "0.0.0.0:8088", token: token},
		{address: "0.0.0.0:8088", refused: []string{"--api-address 0.0.0.0:8088 is not a loopback address", "STEPFLOW_API_TOKEN"}},
		{address: ":8088", refused: []string{"not a loopback address"}},
		{address: "[::]:8088", refused: []string{"not a loopback address"}},
		{address: "10.1.2.3:8088", refused: []string{"not a loopback address"}},
		{address: "stepflow.example.com:8088", refused: []string{"not a loopback address"}},
		{address: "8088", refused: []string{"--api-address"}},
		{address: "127.0.0.1:8088", token: "short", refused: []string{"STEPFLOW_API_TOKEN", "at least 16"}},
		{address: "127.0.0.1:8088", token: "has a space in it, sadly", refused: []string{"STEPFLOW_API_TOKEN"}},
		{address: "127.0.0.1:8088", publicURL: "https://stepflow.example.com/base"},
		{address: "127.0.0.1:8088", publicURL: "stepflow.example.com", refused: []string{"--public-url"}},
		{address: "127.0.0.1:8088", publicURL: "ftp://stepflow.example.com/", refused: []string{"--public-url"}},
		{address: "127.0.0.1:8088", maxBody: -1, refused: []string{"--api-max-body-bytes"}},
	} {
		o := api.Options{Address: tc.address, Token: tc.token, PublicURL: tc.publicURL, MaxBodyBytes: tc.maxBody}
		err := o.Validate()
		if tc.refused == nil {
			if err != nil {
				t.Errorf("%+v: %v, want accepted", o, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%+v accepted, want refused saying %q", o, tc.refused)
			continue
		}
		for _, s := range tc.refused {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%+v: %q does not say %q", o, err, s)
			}
		}
	}
	// New validates too.
	if _, err := api.New(&client.Client{}, api.Options{Address: "0.0.0.0:8088"}); err == nil {
		t.Error("api.New of a public address without a token succeeded")
	}
}

// A body over the limit is refused with 413, whatever the endpoint.
func TestBodyLimit(t *testing.T) {
	t.Parallel()
	small := setup(t, setupOptions{api: func(o *api.Options) { o.MaxBodyBytes = 1024 }})
	deflt := setup(t, setupOptions{})
	padded := func(n int) string { // a start request of n bytes
		s := startBody(t, greet, `, "input": {"name": "Ada", "pad": "`)
		return s + strings.Repeat("x", n-len(s)-3) + `"}}`
	}
	for _, tc := range []struct {
		tb   *testBundle
		path string
		body string
		code int
		says string
	}{
		{small, "/api/v1/runs", padded(1024), 201, ""},
		{small, "/api/v1/runs", padded(1025), 413, "larger than 1024 bytes"},
		{small, "/api/v1/dead-letters/replay", `{"all": true, "x": "` + strings.Repeat("x", 2000) + `"}`, 413, "--api-max-body-bytes"},
		{deflt, "/api/v1/runs", padded(api.DefaultMaxBodyBytes), 201, ""},
		{deflt, "/api/v1/runs", padded(api.DefaultMaxBodyBytes + 1), 413, "larger than 1048576 bytes"},
	} {
		r := tc.tb.do("POST", tc.path, tc.body)
		if r.code != tc.code || !strings.Contains(r.errorText(), tc.says) {
			t.Errorf("POST %s of %d bytes: %d %.200s, want %d saying %q", tc.path, len(tc.body), r.code, r.body, tc.code, tc.says)
		}
	}
	// A body of no declared length (chunked) is cut at the limit as it is read.
	for size, code := range map[int]int{1024: 201, 1025: 413} {
		req, err := http.NewRequestWithContext(small.ctx, "POST", small.url+"/api/v1/runs", io.NopCloser(strings.NewReader(padded(size))))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.ContentLength != 0 || resp.StatusCode != code {
			t.Errorf("chunked POST of %d bytes (length %d): %d, want %d", size, req.ContentLength, resp.StatusCode, code)
		}
	}
}

// On its context's end Serve stops taking requests, lets the one in flight
// finish, then returns.
func TestServeDrains(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	tb := setup(t, setupOptions{api: func(o *api.Options) {
		o.Routes = func(mux *http.ServeMux) {
			mux.HandleFunc("GET /test/slow", func(w http.ResponseWriter, _ *http.Request) {
				close(entered)
				<-release
				io.WriteString(w, "finished")
			})
		}
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(tb.ctx)
	served := make(chan error, 1)
	go func() { served <- tb.server.Serve(ctx, ln) }()

	answer := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/test/slow")
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- string(b)
	}()
	<-entered
	stop()
	// Draining: the listener closes (new connections are refused) ...
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still takes connections 10 s after the context ended")
		}
	}
	// ... while the request in flight goes on.
	select {
	case err := <-served:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	if got := <-answer; got != "finished" {
		t.Errorf("the request in flight got %q, want its answer", got)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v, want nil after a drain", err)
	}
}

// syncBuffer is a log destination the test reads while the server writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) records(t *testing.T) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(b.buf.Bytes()), []byte("\n")) {
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// The request log and the handlers' own records carry the run's id.
func TestLogsCarryTheRunID(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	tb := setup(t, setupOptions{api: func(o *api.Options) {
		o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	if r := tb.do("POST", "/api/v1/runs", startBody(t, nap, `, "runId": "logged"`)); r.code != 201 {
		t.Fatalf("start: %d %s", r.code, r.body)
	}
	tb.do("GET", "/api/v1/runs/logged", "")
	tb.do("POST", "/api/v1/runs/logged/cancel", "")
	tb.do("GET", "/health/liveness", "")
	want := map[string]string{ // msg (and route) → level
		"run started": "INFO", "run cancelled": "INFO",
		"api request POST /api/v1/runs": "INFO", "api request GET /api/v1/runs/{id}": "INFO", "api request POST /api/v1/runs/{id}/cancel": "INFO",
	}
	for _, rec := range logs.records(t) {
		key := rec["msg"].(string)
		if route, ok := rec["route"].(string); ok {
			key += " " + route
		}
		if key == "api request GET /health/liveness" {
			if rec["level"] != "DEBUG" || rec["code"] != float64(200) {
				t.Errorf("probe logged as %v, want at debug with its code", rec)
			}
			continue
		}
		level, ok := want[key]
		if !ok {
			continue
		}
		delete(want, key)
		if rec["level"] != level || rec["run_id"] != "logged" {
			t.Errorf("%q logged as %v, want level %s and run_id logged", key, rec, level)
		}
	}
	if len(want) > 0 {
		t.Errorf("no log records %v", want)
	}
}

// An error that is the server's, not the request's, is a 500 that says
// what went wrong: here the tables were never migrated.
func TestInternalErrorsAreJSON(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{})
	tables := testenv.PrefixedTables(testenv.TablePrefix()) // not migrated
	c, err := client.New(tb.ctx, client.Config{PostgresURL: tb.stack.PostgresURL, AMQPURL: tb.stack.AMQPURL, Queue: tb.stack.Queue, Tables: tables})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	srv, err := api.New(c, api.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	resp, err := http.Get(hs.URL + "/api/v1/runs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != 500 || !strings.Contains(e.Msg, "list runs") || !strings.Contains(e.Msg, tables.Statuses) {
		t.Errorf("GET /api/v1/runs without tables: %d %+v (%v), want 500 naming the listing and the table", resp.StatusCode, e, err)
	}
}
