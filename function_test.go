package stepflow_test

// The root package as func-go's HTTP scaffolding serves it: New() behind
// knative.dev/func-go/http's own Service handler (the mux that answers
// /health/* and hands every other path to Handle), against the real
// PostgreSQL and Redis.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	fhttp "knative.dev/func-go/http"

	"github.com/stepflow/stepflow"
	examples "github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
	"github.com/stepflow/stepflow/schema"
	"github.com/stepflow/stepflow/workflow"
)

// TestMain keeps the function's logs (slog and func-go's zerolog) to errors.
func TestMain(m *testing.M) {
	os.Setenv("LOG_LEVEL", "error")
	os.Exit(m.Run())
}

type bundle struct {
	t      *testing.T
	ctx    context.Context
	tables schema.Tables
	store  *store.Store
	f      *stepflow.Function
	url    string // the func-go service's base URL, no trailing slash
	srv    *httptest.Server
}

// setup starts stepflow.New() on the test's own tables and Redis prefix
// and serves it through func-go's HTTP service handler. adjust may change
// the test server before it starts.
func setup(t *testing.T, adjust func(*http.Server)) *bundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	pool := testenv.Pool(t, 3)
	b := &bundle{t: t, ctx: ctx, tables: testenv.Tables(t, pool)}
	var err error
	if b.store, err = store.New(pool, b.tables); err != nil {
		t.Fatal(err)
	}
	prefix := "froot:" + testenv.RandomHex(6) + ":"
	rdb := testenv.Redis(t)
	t.Cleanup(func() { testenv.DeleteRedisKeys(t, rdb, prefix) })

	b.f = stepflow.New()
	cfg := map[string]string{
		"POSTGRES_URL":              testenv.PostgresURL(),
		"REDIS_URL":                 testenv.RedisURL(),
		"REDIS_PREFIX":              prefix,
		"POSTGRES_MAX_CONNS":        "4",
		"STEPFLOW_CONTEXTS_TABLE":   b.tables.Contexts,
		"STEPFLOW_STATUSES_TABLE":   b.tables.Statuses,
		"STEPFLOW_STEPS_TABLE":      b.tables.Steps,
		"STEPFLOW_BLUEPRINTS_TABLE": b.tables.Blueprints,
	}
	// What func-go's Service.Start does: the instance's Start, then serve.
	if err := b.f.Start(ctx, cfg); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = b.f.Stop(context.Background()) })
	b.srv = httptest.NewUnstartedServer(fhttp.New(b.f).Handler)
	if adjust != nil {
		adjust(b.srv.Config)
	}
	b.srv.Start()
	t.Cleanup(b.srv.Close)
	b.url = b.srv.URL
	b.waitReady()
	return b
}

// waitReady polls GET /health/readiness until 200 (Start returns before
// the connections are checked).
func (b *bundle) waitReady() {
	b.t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		if code, _ := get(b.t, b.url+"/health/readiness"); code == http.StatusOK {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			b.t.Fatal("the function was not ready within 30 s")
		}
	}
}

// start records a run of bp and returns its id.
func (b *bundle) start(bp *workflow.Blueprint) string {
	b.t.Helper()
	w, err := workflow.Compile(bp, examples.Registry())
	if err != nil {
		b.t.Fatal(err)
	}
	runID := "froot-" + testenv.RandomHex(6)
	if _, err := b.store.CreateRun(b.ctx, runID, w, map[string]any{"k": 1}); err != nil {
		b.t.Fatal(err)
	}
	return runID
}

func readBlueprint(t *testing.T, name string) *workflow.Blueprint {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("examples", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	bp, err := workflow.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return bp
}

func jobEvent(t *testing.T, j wire.Job) event.Event {
	t.Helper()
	e := event.New()
	e.SetID(j.ID())
	e.SetType(wire.JobEventType)
	e.SetSource("stepflow/test")
	e.SetSubject(j.RunID)
	if err := e.SetData(event.ApplicationJSON, j); err != nil {
		t.Fatal(err)
	}
	return e
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, req *http.Request) (reply, error) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: body}, err
}

// postBinary sends e as the bridge sends one job: a binary-mode CloudEvent.
func postBinary(t *testing.T, ctx context.Context, url string, e event.Event) (reply, error) {
	t.Helper()
	req, err := cehttp.NewHTTPRequestFromEvent(ctx, url, e)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

// postStructured sends e as one structured-mode CloudEvent.
func postStructured(t *testing.T, ctx context.Context, url string, e event.Event) (reply, error) {
	t.Helper()
	body, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/cloudevents+json")
	return do(t, req)
}

// postBatch sends events as the bridge sends a batch.
func postBatch(t *testing.T, ctx context.Context, url string, events []event.Event) (reply, []wire.Result, error) {
	t.Helper()
	body, err := json.Marshal(events)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", wire.BatchContentType)
	r, err := do(t, req)
	if err != nil || r.status != http.StatusOK {
		return r, nil, err
	}
	var out []event.Event
	if err := json.Unmarshal(r.body, &out); err != nil {
		return r, nil, fmt.Errorf("batch reply: %w", err)
	}
	results := make([]wire.Result, len(out))
	for i, e := range out {
		if e.Type() != wire.ResultEventType || e.ID() != events[i].ID() {
			return r, nil, fmt.Errorf("batch reply %d: type %s id %s, want %s id %s", i, e.Type(), e.ID(), wire.ResultEventType, events[i].ID())
		}
		if err := e.DataAs(&results[i]); err != nil {
			return r, nil, err
		}
	}
	return r, results, nil
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// replyJobs decodes the dev.stepflow.jobs.v1 reply of a one-event request.
func replyJobs(t *testing.T, r reply) []wire.NextJob {
	t.Helper()
	if r.status != http.StatusOK || r.header.Get("Ce-Type") != wire.JobsEventType {
		t.Fatalf("reply %d, ce-type %q (%s), want 200 with a %s event", r.status, r.header.Get("Ce-Type"), r.body, wire.JobsEventType)
	}
	var jobs wire.Reply
	if err := json.Unmarshal(r.body, &jobs); err != nil {
		t.Fatalf("reply data %s: %v", r.body, err)
	}
	return jobs.Jobs
}

// A fan-out run driven by hand through the func-go route, in every form the
// bridge (or anyone) may send: binary, structured, batched; and the other
// paths `stepflow function` serves.
func TestFuncRouteServesTheStepFunction(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := b.ctx
	must := func(r reply, err error) reply {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	bp := readBlueprint(t, "fanout")
	runID := b.start(bp)
	job := func(node string) wire.Job {
		return wire.Job{RunID: runID, BlueprintID: bp.ID, NodeID: node, Attempt: 1}
	}

	// Binary mode: the start node, whose reply holds the eight branches.
	r, err := postBinary(t, ctx, b.url+"/", jobEvent(t, job("start")))
	if err != nil {
		t.Fatal(err)
	}
	if got := replyJobs(t, r); len(got) != 8 {
		t.Fatalf("start replied %d jobs, want the 8 branches: %+v", len(got), got)
	}

	// Structured mode: one branch (the join waits for all eight).
	r, err = postStructured(t, ctx, b.url+"/", jobEvent(t, job("b1")))
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusOK {
		t.Fatalf("structured b1: %d %s", r.status, r.body)
	}

	// A batch of the seven others: the last one releases the join.
	var events []event.Event
	for i := 2; i <= 8; i++ {
		events = append(events, jobEvent(t, job(fmt.Sprintf("b%d", i))))
	}
	r, results, err := postBatch(t, ctx, b.url+"/", events)
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusOK || r.header.Get("Content-Type") != wire.BatchContentType || len(results) != 7 {
		t.Fatalf("batch: %d %s, %d results (%s)", r.status, r.header.Get("Content-Type"), len(results), r.body)
	}
	var next []wire.NextJob
	for i, res := range results {
		if res.Status != http.StatusOK {
			t.Errorf("batch result %d: %d %s", i, res.Status, res.Error)
		}
		next = append(next, res.Jobs...)
	}
	if len(next) != 1 || next[0].NodeID != "join" {
		t.Fatalf("the batch released %+v, want the join", next)
	}

	// Any path is the step function's: func-go passes it to Handle.
	if got := replyJobs(t, must(postBinary(t, ctx, b.url+"/any/path", jobEvent(t, job("join"))))); len(got) != 1 || got[0].NodeID != "end" {
		t.Fatalf("join released %+v, want end", got)
	}
	if r := must(postBinary(t, ctx, b.url+"/", jobEvent(t, job("end")))); r.status != http.StatusOK || r.header.Get("Ce-Type") != "" {
		t.Fatalf("end: %d, ce-type %q (%s), want 200 without an event", r.status, r.header.Get("Ce-Type"), r.body)
	}
	if st, err := b.store.Status(ctx, runID); err != nil || st != workflow.RunCompleted {
		t.Fatalf("run %s is %s (%v), want completed", runID, st, err)
	}

	// A redelivered job is answered again (the stored result), not rerun.
	if r := must(postBinary(t, ctx, b.url+"/", jobEvent(t, job("end")))); r.status != http.StatusOK {
		t.Errorf("redelivered end: %d %s", r.status, r.body)
	}
	// The same statuses as `stepflow function` (docs/contract.md).
	if r := must(postBinary(t, ctx, b.url+"/", jobEvent(t, wire.Job{RunID: "froot-nope", BlueprintID: "fanout", NodeID: "start"}))); r.status != http.StatusUnprocessableEntity {
		t.Errorf("unknown run: %d %s, want 422", r.status, r.body)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, b.url+"/", strings.NewReader("not an event"))
	req.Header.Set("Content-Type", "text/plain")
	if r := must(do(t, req)); r.status != http.StatusBadRequest {
		t.Errorf("not a CloudEvent: %d %s, want 400", r.status, r.body)
	}
	if r := must(do(t, mustRequest(http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/", nil)))); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != http.MethodPost {
		t.Errorf("GET /: %d (Allow %q), want 405 (Allow POST)", r.status, r.header.Get("Allow"))
	}
	if r := must(do(t, mustRequest(http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/debug/pprof/", nil)))); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /debug/pprof/ without STEPFLOW_PPROF: %d, want 405 as any other path", r.status)
	}
	if code, body := get(t, b.url+"/health/readiness"); code != http.StatusOK || body != "READY" {
		t.Errorf("readiness: %d %q", code, body)
	}
	if code, body := get(t, b.url+"/health/liveness"); code != http.StatusOK || body != "ALIVE" {
		t.Errorf("liveness: %d %q", code, body)
	}

	// /metrics: the step function's metrics and the Go runtime's.
	code, body := get(t, b.url+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`stepflow_steps_total{node_type="noop",outcome="succeeded"} 11`,
		"stepflow_function_request_jobs_sum 13", // 6 one-job requests and the batch of 7
		"stepflow_function_request_jobs_count 7",
		`stepflow_function_replies_total{code="422"`,
		"go_goroutines ",
		"process_cpu_seconds_total ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grep(body, "stepflow_"))
	}
}

// 24 requests at once, binary, structured and batched, each answered.
// func-go's CloudEvents handler (sdk-go's EventReceiver) could leave a
// request waiting under concurrency (cloudevents/sdk-go#1224); its HTTP
// scaffolding serves each request in its own goroutine, as `stepflow
// function` does.
func TestFuncRouteAnswersConcurrentRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
			defer cancel()
			j := wire.Job{RunID: fmt.Sprintf("froot-none-%d-%s", i, testenv.RandomHex(3)), BlueprintID: "fanout", NodeID: "start", Attempt: 1}
			var r reply
			var err error
			switch i % 3 {
			case 0:
				r, err = postBinary(t, ctx, b.url+"/", jobEvent(t, j))
			case 1:
				r, err = postStructured(t, ctx, b.url+"/", jobEvent(t, j))
			default:
				var results []wire.Result
				r, results, err = postBatch(t, ctx, b.url+"/", []event.Event{jobEvent(t, j), jobEvent(t, wire.Job{RunID: j.RunID + "b", BlueprintID: "fanout", NodeID: "start"})})
				if err == nil && (len(results) != 2 || results[0].Status != http.StatusUnprocessableEntity || results[1].Status != http.StatusUnprocessableEntity) {
					err = fmt.Errorf("batch %d: results %+v, want two 422", i, results)
				}
				if err == nil {
					r.status = http.StatusUnprocessableEntity
				}
			}
			switch {
			case err != nil:
				errs <- fmt.Errorf("request %d: %w", i, err)
			case r.status != http.StatusUnprocessableEntity:
				errs <- fmt.Errorf("request %d: %d %s, want 422", i, r.status, r.body)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// func-go's server cuts a response 30 s after its request was read; Handle
// lifts that limit as `stepflow function` has none. Here the server's limit
// is 100 ms and the node takes 400 ms.
func TestFuncRouteLiftsTheWriteTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, func(s *http.Server) { s.WriteTimeout = 100 * time.Millisecond })
	bp, err := workflow.Decode([]byte(`{"id":"froot-slow","nodes":[{"id":"s","uses":"slow","params":{"ms":400}}],"edges":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	runID := b.start(bp)
	r, err := postBinary(t, b.ctx, b.url+"/", jobEvent(t, wire.Job{RunID: runID, BlueprintID: bp.ID, NodeID: "s", Attempt: 1}))
	if err != nil {
		t.Fatalf("a 400 ms step behind a 100 ms write timeout got no answer: %v", err)
	}
	if r.status != http.StatusOK {
		t.Fatalf("slow step: %d %s", r.status, r.body)
	}
}

// Start fails, naming the variable, on a configuration the function cannot
// run with: func-go then exits instead of serving.
func TestFuncRouteStartFailsOnBadConfig(t *testing.T) {
	t.Parallel()
	for key, val := range map[string]string{"STEP_TIMEOUT": "soon", "STEPFLOW_PPROF": "maybe"} {
		f := stepflow.New()
		err := f.Start(t.Context(), map[string]string{key: val})
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Start with %s=%q: %v, want an error naming %s", key, val, err, key)
		}
		_ = f.Stop(context.Background())
	}
}

// func reads every .go file at the root to pick the scaffolding: a
// package-level New and no package-level Handle make it "instanced";
// func.yaml's invoke: http makes it instanced-http, whose main calls
// knative.dev/func-go/http.Start(New()).
func TestRootIsAnInstancedHTTPFunction(t *testing.T) {
	t.Parallel()
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	news := 0
	for _, p := range paths {
		file, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("%s must parse (func reads it): %v", p, err)
		}
		for _, d := range file.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv != nil {
				continue
			}
			switch fd.Name.Name {
			case "New":
				news++
			case "Handle":
				t.Errorf("%s declares a package-level Handle: func would scaffold a static function", p)
			}
		}
	}
	if news != 1 {
		t.Errorf("%d package-level New at the root, want 1", news)
	}
	var _ fhttp.Handler = stepflow.New()
	var _ fhttp.Starter = stepflow.New()
	var _ fhttp.Stopper = stepflow.New()
	var _ fhttp.ReadinessReporter = stepflow.New()
	var _ fhttp.LivenessReporter = stepflow.New()
	spec, err := os.ReadFile("func.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^invoke: http$`).Match(spec) {
		t.Error("func.yaml must say invoke: http (the instanced-http scaffolding)")
	}
}

// funcScaffoldingPins are the requirements of the Go scaffolding of func
// v0.50.1 (templates/go/scaffolding/*/go.mod, the same in all four), the
// func version scripts/func-check.sh builds. func build --builder=host
// copies into that go.mod only our requirements it does not list, and
// builds with -mod=readonly: if our dependencies need a higher version of
// one of these, go stops with "updates to go.mod needed" (docs/knative.md,
// "func build and go.mod"). Our go.mod lists each at the pin itself, so the
// function func builds links exactly our versions.
var funcScaffoldingPins = map[string]string{
	"knative.dev/func-go":           "v0.22.0",
	"golang.org/x/sys":              "v0.47.0",
	"github.com/rs/zerolog":         "v1.35.1",
	"github.com/mattn/go-colorable": "v0.1.15",
	"github.com/mattn/go-isatty":    "v0.0.23",
}

func TestGoModFitsFuncScaffolding(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	req := regexp.MustCompile(`(?m)^\s*(?:require\s+)?(\S+) (v\S+)(?: // indirect)?$`)
	listed := map[string]string{}
	for _, m := range req.FindAllStringSubmatch(string(data), -1) {
		listed[m[1]] = m[2]
	}
	for path, pin := range funcScaffoldingPins {
		switch v := listed[path]; v {
		case pin:
		case "":
			t.Errorf("go.mod does not list %s; func's scaffolding pins it at %s", path, pin)
		default:
			t.Errorf("go.mod lists %s %s; func v0.50.1's scaffolding pins %s, and func build --builder=host fails unless our module graph selects exactly that (docs/knative.md)", path, v, pin)
		}
	}
}

func mustRequest(r *http.Request, err error) *http.Request {
	if err != nil {
		panic(err) // a malformed literal URL
	}
	return r
}

func grep(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
