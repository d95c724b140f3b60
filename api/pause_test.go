package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stepflow/stepflow/api"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

const approval = inprocess.ApprovalBlueprint

// payment: a webhook, the wait its request resumes, then charge or
// decline by the request's action.
const payment = `{"id": "payment", "nodes": [
  {"id": "hook", "uses": "webhook"},
  {"id": "paid", "uses": "wait"},
  {"id": "charge", "uses": "transform", "params": {"expression": "input.amount * 2"}},
  {"id": "decline", "uses": "transform", "params": {"expression": "'declined'"}}
], "edges": [
  {"source": "hook", "target": "paid"},
  {"source": "paid", "target": "charge"},
  {"source": "paid", "target": "decline", "action": "declined"}
]}`

// waitForStatus polls GET /api/v1/runs/{id} until the run has status.
func (tb *testBundle) waitForStatus(id string, status workflow.RunStatus) workflow.RunResult {
	tb.t.Helper()
	var res workflow.RunResult
	err := testenv.Poll(tb.ctx, 20*time.Second, 10*time.Millisecond, func() (bool, error) {
		r := tb.do("GET", "/api/v1/runs/"+id, "")
		res = workflow.RunResult{}
		if err := json.Unmarshal(r.body, &res); err != nil {
			return false, err
		}
		return res.Status == status, nil
	})
	if err != nil {
		tb.t.Fatalf("run %s is %s, not %s: %v", id, res.Status, status, err)
	}
	return res
}

func TestResumeThroughTheAPI(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{api: func(o *api.Options) { o.Token = token }})
	bearer := []string{"Authorization", "Bearer " + token}
	tb.start(approval, map[string]any{"doc": "a.pdf"}, "r1")
	tb.start(approval, nil, "r2")
	tb.waitForStatus("r1", workflow.RunAwaiting)
	tb.waitForStatus("r2", workflow.RunAwaiting)

	list := tb.do("GET", "/api/v1/runs?status=awaiting", "")
	if list.code != 200 || !strings.Contains(string(list.body), `"runId":"r1"`) || !strings.Contains(string(list.body), `"status":"awaiting"`) {
		t.Errorf("awaiting runs: %d %s", list.code, list.body)
	}
	tests := []struct {
		name, path, body string
		headers          []string
		code             int
		says             string
	}{
		{"without the token", "/api/v1/runs/r1/resume", `{"node": "review"}`, nil, 401, "Authorization: Bearer"},
		{"unknown run", "/api/v1/runs/nope/resume", `{"node": "review"}`, bearer, 404, "run nope"},
		{"malformed JSON", "/api/v1/runs/r1/resume", `{"node": "review",`, bearer, 400, "malformed JSON"},
		{"unknown field", "/api/v1/runs/r1/resume", `{"node": "review", "outputs": 1}`, bearer, 400, `unknown field "outputs"`},
		{"no node", "/api/v1/runs/r1/resume", `{"output": 1}`, bearer, 400, "node: required"},
		{"node of no blueprint", "/api/v1/runs/r1/resume", `{"node": "ghost"}`, bearer, 400, `has no node "ghost" (its wait nodes: review)`},
		{"not a wait node", "/api/v1/runs/r1/resume", `{"node": "start"}`, bearer, 409, "not a wait node"},
		{"resume", "/api/v1/runs/r1/resume", `{"node": "review", "output": {"by": "ada"}, "action": "approve"}`, bearer, 200, `"status":"running"`},
		// "was resumed already", or "is completed" once approve ran
		{"resume again", "/api/v1/runs/r1/resume", `{"node": "review", "output": {"by": "eve"}, "action": "reject"}`, bearer, 409, "does not await"},
	}
	for _, tt := range tests {
		r := tb.do("POST", tt.path, tt.body, tt.headers...)
		if r.code != tt.code || !strings.Contains(string(r.body), tt.says) && !strings.Contains(r.errorText(), tt.says) {
			t.Errorf("%s: %d %s; want %d with %q", tt.name, r.code, r.body, tt.code, tt.says)
		}
		if tt.name == "resume" {
			testenv.AssertJSON(t, "resume answer", r.json(t), map[string]any{"runId": "r1", "node": "review", "status": "running", "ready": []any{"approve"}})
		}
	}
	if res := tb.waitForRun("r1"); res.Status != workflow.RunCompleted || res.Output != "approved by ada" {
		t.Errorf("r1: %s, output %v", res.Status, res.Output)
	}

	// Racing resumes of r2 over HTTP: one 200, the others 409.
	codes := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			r := tb.do("POST", "/api/v1/runs/r2/resume", fmt.Sprintf(`{"node": "review", "output": {"by": "n%d"}, "action": "reject"}`, i), bearer...)
			mu.Lock()
			codes[r.code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[200] != 1 || codes[409] != 15 {
		t.Errorf("racing resumes answered %v; want one 200 and 15 409s", codes)
	}
	if res := tb.waitForRun("r2"); res.Status != workflow.RunCompleted || !strings.HasPrefix(fmt.Sprint(res.Output), "rejected by n") {
		t.Errorf("r2: %s, output %v", res.Status, res.Output)
	}
}

// logBuffer collects the API's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// webhookOf reads the URL the webhook node of run id output, and returns
// it with the path to POST to the test's server.
func (tb *testBundle) webhookOf(id string) (string, string) {
	tb.t.Helper()
	res := tb.waitForStatus(id, workflow.RunAwaiting)
	out, _ := res.Context[workflow.OutputKey("hook")].(map[string]any)
	raw, _ := out["url"].(string)
	if out["event"] != "webhook:hook" || raw == "" {
		tb.t.Fatalf("webhook output %v", out)
	}
	u, err := url.Parse(raw)
	if err != nil {
		tb.t.Fatal(err)
	}
	return raw, u.EscapedPath()
}

func TestWebhooks(t *testing.T) {
	t.Parallel()
	logs := &logBuffer{}
	tb := setup(t, setupOptions{
		stack: inprocess.Options{PublicURL: "https://hooks.example.test/"},
		api: func(o *api.Options) {
			o.Token = token // webhooks carry their own: no API token needed
			o.MaxBodyBytes = 1024
			o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		},
	})
	tb.start(payment, nil, "pay-1")
	raw, path := tb.webhookOf("pay-1")
	prefix := "https://hooks.example.test/webhooks/pay-1/hook/"
	tok := strings.TrimPrefix(raw, prefix)
	if !strings.HasPrefix(raw, prefix) || len(tok) < 43 || strings.ContainsAny(tok, "/+=") {
		t.Fatalf("webhook URL %q: want %s<a 256-bit base64url token>", raw, prefix)
	}
	altered := []byte(tok)
	altered[5] ^= 1
	tests := []struct {
		name, method, path, body string
		code                     int
		says                     string
	}{
		{"altered token", "POST", "/webhooks/pay-1/hook/" + string(altered), `{"amount": 21}`, 404, "no such webhook"},
		{"truncated token", "POST", "/webhooks/pay-1/hook/" + tok[:20], `{"amount": 21}`, 404, "no such webhook"},
		{"wrong node: the wait", "POST", "/webhooks/pay-1/paid/" + tok, `{"amount": 21}`, 404, "no such webhook"},
		{"wrong node: another", "POST", "/webhooks/pay-1/charge/" + tok, `{"amount": 21}`, 404, "no such webhook"},
		{"unknown run", "POST", "/webhooks/pay-0/hook/" + tok, `{"amount": 21}`, 404, "no such webhook"},
		{"not JSON", "POST", path, `amount=21`, 400, "malformed JSON"},
		{"empty body", "POST", path, ``, 400, "empty request body"},
		{"too large", "POST", path, `{"pad": "` + strings.Repeat("x", 2000) + `"}`, 413, "larger than 1024 bytes"},
		{"unknown query parameter", "POST", path + "?acton=x", `{"amount": 21}`, 400, "acton"},
		{"GET", "GET", path, ``, 405, "not allowed"},
	}
	for _, tt := range tests {
		r := tb.do(tt.method, tt.path, tt.body)
		if r.code != tt.code || !strings.Contains(r.errorText(), tt.says) {
			t.Errorf("%s: %d %s; want %d with %q", tt.name, r.code, r.body, tt.code, tt.says)
		}
	}
	if res := tb.waitForStatus("pay-1", workflow.RunAwaiting); stateOf(res, "paid") != workflow.StepAwaiting {
		t.Fatalf("after refused requests: paid is %s", stateOf(res, "paid"))
	}

	r := tb.do("POST", path, `{"amount": 21}`)
	if r.code != 200 {
		t.Fatalf("webhook: %d %s", r.code, r.body)
	}
	testenv.AssertJSON(t, "webhook answer", r.json(t), map[string]any{"runId": "pay-1", "node": "paid", "status": "running", "ready": []any{"charge"}})
	if res := tb.waitForRun("pay-1"); res.Status != workflow.RunCompleted || res.Output != 42.0 {
		t.Errorf("pay-1: %s, output %v", res.Status, res.Output)
	}
	if r := tb.do("POST", path, `{"amount": 1}`); r.code != 410 || !strings.Contains(r.errorText(), "used once") {
		t.Errorf("replay: %d %s; want 410", r.code, r.body)
	}

	// ?action= routes the wait node's edges.
	tb.start(payment, nil, "pay-2")
	_, path2 := tb.webhookOf("pay-2")
	if r := tb.do("POST", path2+"?action=declined", `{"reason": "card"}`); r.code != 200 {
		t.Fatalf("webhook with an action: %d %s", r.code, r.body)
	}
	if res := tb.waitForRun("pay-2"); res.Output != "declined" || stateOf(res, "charge") != workflow.StepSkipped {
		t.Errorf("pay-2: output %v, charge %s", res.Output, stateOf(res, "charge"))
	}

	// The request log names the webhook, never its token.
	text := logs.String()
	if !strings.Contains(text, "/webhooks/pay-1/hook/…") || strings.Contains(text, tok) || strings.Contains(text, tok[:20]) {
		t.Errorf("the request log shows a token (or no webhook request):\n%s", text)
	}
}

func stateOf(res workflow.RunResult, node string) workflow.StepState {
	for _, s := range res.Steps {
		if s.NodeID == node {
			return s.State
		}
	}
	return ""
}

// A resume of a parent's subflow node whose child awaits goes to the
// child: 200 with the child's resume under "child"; 409 naming the steps
// of a child awaiting at two; 409 for a second resume.
func TestResumeThroughASubflowNode(t *testing.T) {
	t.Parallel()
	children := []*workflow.Blueprint{}
	for _, src := range []string{
		`{"id": "one-wait", "nodes": [{"id": "ask", "uses": "wait"}]}`,
		`{"id": "two-waits", "nodes": [{"id": "a", "uses": "wait"}, {"id": "b", "uses": "wait"}]}`,
	} {
		bp, err := workflow.Decode([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		children = append(children, bp)
	}
	tb := setup(t, setupOptions{stack: inprocess.Options{Blueprints: children}})
	tb.start(`{"id": "asks-once", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "one-wait"}}]}`, nil, "p1")
	tb.start(`{"id": "asks-twice", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "two-waits"}}]}`, nil, "p2")
	tb.waitForStatus("p1", workflow.RunAwaiting)
	tb.waitForStatus("p2", workflow.RunAwaiting)

	r := tb.do("POST", "/api/v1/runs/p2/resume", `{"node": "sub", "output": 1}`)
	if r.code != 409 || !strings.Contains(r.errorText(), "awaits at 2 steps (a, b): resume the child run by id") || !strings.Contains(r.errorText(), workflow.ChildRunID("p2", "sub", 1)) {
		t.Errorf("resume through a child awaiting twice: %d %s; want 409 naming a, b and the child", r.code, r.body)
	}
	r = tb.do("POST", "/api/v1/runs/p1/resume", `{"node": "sub", "output": {"ok": true}}`)
	if r.code != 200 {
		t.Fatalf("resume through the subflow node: %d %s", r.code, r.body)
	}
	child := workflow.ChildRunID("p1", "sub", 1)
	got := r.json(t)
	if c, _ := got["child"].(map[string]any); got["runId"] != "p1" || got["node"] != "sub" || c["runId"] != child || c["node"] != "ask" {
		t.Errorf("answer %s; want p1 at sub, its child %s at ask", r.body, child)
	}
	if res := tb.waitForRun("p1"); res.Status != workflow.RunCompleted || !reflect.DeepEqual(res.Output, map[string]any{"ok": true}) {
		t.Errorf("p1: %s, output %v; want completed with the resume's output", res.Status, res.Output)
	}
	if r := tb.do("POST", "/api/v1/runs/p1/resume", `{"node": "sub", "output": 2}`); r.code != 409 {
		t.Errorf("second resume: %d %s; want 409", r.code, r.body)
	}
}
