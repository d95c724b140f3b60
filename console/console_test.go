package console_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/api"
	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

func TestRunsPage(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{})
	tb.wait(tb.start(greet, map[string]any{"name": "Ada"}, "greet-ada"))
	tb.wait(tb.start(greet, map[string]any{"name": "Bob"}, "greet-bob"))
	tb.start(nap, nil, "napping")

	p := tb.get("/")
	if p.code != 200 || !strings.HasPrefix(p.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", p.code, p.header.Get("Content-Type"))
	}
	if csp := p.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q, want scripts from the server only and no framing", csp)
	}
	p.has(t, "the runs list",
		`<tr data-run="napping">`, `<tr data-run="greet-bob">`, `<tr data-run="greet-ada">`,
		`<a href="/runs/greet-ada">greet-ada</a>`, `<span class="status st-completed">completed</span>`, `<span class="status st-running">running</span>`,
		`<a href="/?blueprint=greet">greet</a> <span class="version">v3</span>`, `2/2`, `0/1`,
		`data-running="true"`, `refreshing while runs run`)
	if strings.Index(p.body, `data-run="napping"`) > strings.Index(p.body, `data-run="greet-ada"`) {
		t.Error("the runs are not newest first")
	}

	for _, tc := range []struct {
		name, path string
		code       int
		has, lacks []string
	}{
		{"by status", "/?status=completed", 200, []string{`data-run="greet-ada"`, `data-running="false"`, `<option value="completed" selected>`}, []string{`data-run="napping"`, "refreshing"}},
		{"by blueprint", "/?blueprint=nap", 200, []string{`data-run="napping"`}, []string{`data-run="greet-ada"`}},
		{"by a prefix of the id", "/?q=greet-", 200, []string{`data-run="greet-ada"`, `data-run="greet-bob"`}, []string{`data-run="napping"`}},
		{"nothing matches", "/?q=nobody", 200, []string{"No runs match this filter."}, nil},
		{"a page of one", "/?limit=1", 200, []string{`data-run="napping"`, `rel="next">Older »`}, []string{`data-run="greet-bob"`, "« Newest"}},
		{"a bad status", "/?status=sleepy", 400, []string{"<h1>400 Bad Request</h1>", `status &#34;sleepy&#34;`}, nil},
		{"a bad limit", "/?limit=0", 400, []string{"limit &#34;0&#34;"}, nil},
		{"a bad token", "/?continue=xyz", 400, []string{"continue token"}, nil},
		{"the live part", "/fragments/runs?status=running", 200, []string{`<div class="live" data-live-url="/fragments/runs?status=running" data-running="true">`, `data-run="napping"`}, []string{"<html", "<header"}},
	} {
		p := tb.get(tc.path)
		if p.code != tc.code {
			t.Errorf("%s: GET %s: %d, want %d\n%s", tc.name, tc.path, p.code, tc.code, p.body)
			continue
		}
		p.has(t, tc.name, tc.has...)
		p.lacks(t, tc.name, tc.lacks...)
	}

	// The next page's link leads on with the same filter.
	first := tb.get("/?blueprint=greet&limit=1")
	next := regexp.MustCompile(`href="([^"]+)" rel="next"`).FindStringSubmatch(first.body)
	if next == nil {
		t.Fatalf("no next page link:\n%s", first.body)
	}
	second := tb.get(strings.ReplaceAll(next[1], "&amp;", "&"))
	second.has(t, "the second page", `data-run="greet-ada"`, "« Newest")
	second.lacks(t, "the second page", `data-run="greet-bob"`, `rel="next"`)

	// A search naming one run opens it.
	if p := tb.get("/?q=greet-ada"); p.code != http.StatusSeeOther || p.header.Get("Location") != "/runs/greet-ada" {
		t.Errorf("searching greet-ada: %d to %q, want 303 to its page", p.code, p.header.Get("Location"))
	}
}

func TestRunPage(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{})
	order := readFile(t, "../examples/order.json")
	input := map[string]any{}
	mustJSON(t, readFile(t, "../examples/order.input.json"), &input)
	id := tb.start(order, input, "order-1")
	if res := tb.wait(id); res.Status != workflow.RunCompleted {
		t.Fatalf("order-1: %s %v", res.Status, res.Errors)
	}

	p := tb.get("/runs/order-1")
	if p.code != 200 {
		t.Fatalf("GET /runs/order-1: %d\n%s", p.code, p.body)
	}
	p.has(t, "the run page", `<svg class="graph"`, `<span class="status st-completed">completed</span>`,
		`order <span class="version">v1</span>`, `data-running="false"`, "7 of 7 finished")
	for _, n := range []string{"validate", "review", "reserve", "payment-gateway", "charge", "ship", "notify"} {
		p.has(t, "node "+n, `data-node="`+n+`"`, `<tr id="step-`)
	}
	// The retried node: two attempts, marked, in the graph and the table.
	row := stepRow(t, p.body, "payment-gateway")
	if !strings.Contains(row, `class="retried"`) || !strings.Contains(row, `<td class="num attempts">2 `) || !strings.Contains(row, "<h3>Input</h3>") {
		t.Errorf("payment-gateway's row shows no retry or no input:\n%s", row)
	}
	p.has(t, "the graph", `flaky · succeeded · 2 attempts`)
	// Edges drawn with their conditions; the order is big, so review ran.
	p.has(t, "the review edge", `<g class="edge taken"><title>if result.output.total &gt; 100</title>`)
	p.lacks(t, "a finished run", "Cancel run", `class="resume"`)
	p.has(t, "the context", `<h2 id="context-title">Context</h2>`, `&#34;_outputs.notify&#34;`)

	frag := tb.get("/fragments/runs/order-1")
	if frag.code != 200 || !strings.HasPrefix(strings.TrimSpace(frag.body), `<div class="live" data-live-url="/fragments/runs/order-1" data-running="false">`) {
		t.Errorf("the live part: %d\n%.300s", frag.code, frag.body)
	}

	// A run that runs can be cancelled, and its page polls.
	tb.start(nap, nil, "napping")
	tb.sleeping("napping")
	p = tb.get("/runs/napping")
	p.has(t, "a running run", `data-running="true"`, `data-post="/api/v1/runs/napping/cancel"`, "updating while it runs", `sleep · sleeping`, `data-state="awaiting"`)

	if p := tb.get("/runs/ghost"); p.code != 404 || !strings.Contains(p.body, "<h1>404 Not Found</h1>") || !strings.Contains(p.body, "ghost") {
		t.Errorf("an unknown run: %d\n%s", p.code, p.body)
	}
}

// stepRow is the table row of a step.
func stepRow(t *testing.T, body, key string) string {
	t.Helper()
	i := strings.Index(body, `data-step="`+key+`"`)
	if i < 0 {
		t.Fatalf("no row of step %s", key)
	}
	start := strings.LastIndex(body[:i], "<tr")
	end := strings.Index(body[i:], "</tr>")
	return body[start : i+end]
}

// Whatever a blueprint, an input, an output or a run id holds is shown as
// text: in the table, the facts and the SVG.
func TestEverythingIsEscaped(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{})
	const evil = `{"id": "x<script>alert('bp')</script>", "nodes": [
	  {"id": "<script>alert('node')</script>", "uses": "transform", "params": {"expression": "'<script>alert(\"out\")</script>'"}},
	  {"id": "<img src=x onerror=alert(1)>", "uses": "noop"}
	], "edges": [{"source": "<script>alert('node')</script>", "target": "<img src=x onerror=alert(1)>", "condition": "'</text><script>alert(2)</script>' != ''"}]}`
	id := `"><script>alert('run')</script>/../x`
	tb.wait(tb.start(evil, map[string]any{"<b>key</b>": "</pre><script>alert('in')</script>"}, id))

	for _, path := range []string{"/runs/" + url.PathEscape(id), "/", "/?q=" + url.QueryEscape(`">`)} {
		p := tb.get(path)
		if p.code != 200 {
			t.Fatalf("GET %s: %d\n%s", path, p.code, p.body)
		}
		if n := strings.Count(p.body, "<script"); n != 1 { // the console's own, in <head>
			t.Errorf("GET %s: %d <script elements, want the console's one:\n%s", path, n, p.body)
		}
		p.lacks(t, path, "<img", "<b>")
	}
	p := tb.get("/runs/" + url.PathEscape(id))
	svg := p.body[strings.Index(p.body, "<svg"):strings.Index(p.body, "</svg>")]
	for _, want := range []string{`data-node="&lt;script&gt;alert(&#39;node&#39;)&lt;/script&gt;"`, `&lt;script&gt;alert(&#39;node&#39;)`, `&lt;img src=x onerror=alert(1)&gt;`, `if &#39;&lt;/text&gt;&lt;script&gt;alert(2)`} {
		if !strings.Contains(svg, want) {
			t.Errorf("the SVG has no %q:\n%s", want, svg)
		}
	}
	p.has(t, "the output and the input", `&lt;script&gt;alert(\&#34;out\&#34;)&lt;/script&gt;`, `&lt;/pre&gt;&lt;script&gt;alert(&#39;in&#39;)`)
	// The run's links escape its id as one path segment.
	p = tb.get("/")
	p.has(t, "the runs list", `href="/runs/%22%3E%3Cscript%3Ealert%28%27run%27%29%3C%2Fscript%3E%2F..%2Fx"`)
}

// An awaiting run (examples/approval.json at its wait node) gets the
// resume form, with the actions of the wait node's edges.
func TestAwaitingRunOffersTheResumeForm(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{})
	tb.start(nap, nil, "napping")
	tb.sleeping("napping")
	tb.get("/runs/napping").lacks(t, "a sleeping run", `class="resume"`)

	tb.startAwaiting("approval-1")
	p := tb.get("/runs/approval-1")
	p.has(t, "an awaiting run",
		`<span class="status st-awaiting">awaiting</span>`,
		`<form class="resume-form" data-resume="/api/v1/runs/approval-1/resume">`,
		`<input type="hidden" name="node" value="approve">`,
		`<textarea name="output"`,
		`<option value="">(none: the default edges)</option>`, `<option value="approve">approve</option>`, `<option value="reject">reject</option>`,
		`data-node="approve" data-state="awaiting"`, `data-running="true"`, "Cancel run")
	// The form stands outside the part the page polls, so a poll never
	// wipes what is being typed.
	if strings.Index(p.body, `class="resume-form"`) > strings.Index(p.body, `<div class="live"`) {
		t.Error("the resume form is inside the live part")
	}
	tb.get("/?status=awaiting").has(t, "the awaiting runs", `data-run="approval-1"`, `<option value="awaiting" selected>`)
}

// startAwaiting starts examples/approval.json and waits until it awaits
// at its wait node.
func (tb *testBundle) startAwaiting(runID string) {
	tb.t.Helper()
	input := map[string]any{}
	mustJSON(tb.t, readFile(tb.t, "../examples/approval.input.json"), &input)
	tb.start(readFile(tb.t, "../examples/approval.json"), input, runID)
	if res := tb.wait(runID); res.Status != workflow.RunAwaiting {
		tb.t.Fatalf("%s: %s, want awaiting at its wait node", runID, res.Status)
	}
}

// sleeping waits until the run's one step sleeps.
func (tb *testBundle) sleeping(runID string) {
	tb.t.Helper()
	testenv.Eventually(tb.t, 20*time.Second, runID+" sleeping", func() bool {
		d, err := tb.client.Inspect(tb.ctx, runID)
		return err == nil && len(d.Steps) == 1 && d.Steps[0].State == workflow.StepSleeping
	})
}

func TestDeadLettersPage(t *testing.T) {
	t.Parallel()
	r := &refuser{}
	tb := setup(t, setupOptions{stack: stackRefusing(r)})
	tb.startRefused(r, "refused-1")
	tb.startRefused(r, "refused-2")

	p := tb.get("/dead-letters")
	if p.code != 200 {
		t.Fatalf("GET /dead-letters: %d\n%s", p.code, p.body)
	}
	p.has(t, "the dead letters",
		`<a href="/runs/refused-1">refused-1</a>`, `<a href="/runs/refused-2">refused-2</a>`,
		`<td class="id">hello</td>`, `<span class="code">400</span> `+refusal, `refused-1:hello:1`,
		`data-body="{&#34;runId&#34;:&#34;refused-1&#34;}"`, `data-body="{&#34;all&#34;:true}"`, "Replay all")
	one := tb.get("/dead-letters?run=refused-2")
	one.has(t, "one run's", `refused-2`)
	one.lacks(t, "one run's", `refused-1`, "Replay all")
	if p := tb.get("/dead-letters?after=x"); p.code != 400 {
		t.Errorf("a bad after: %d", p.code)
	}
	tb.get("/runs/refused-1").has(t, "the failed run", "Replay 1 dead letter", `data-post="/api/v1/dead-letters/replay"`, "dead-lettered: 400")
}

// With a token, the pages stay open (as the API's reads do) and tell the
// script that writes need it.
func TestPagesWithAToken(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{api: func(o *api.Options) { o.Token = testToken }})
	tb.start(nap, nil, "napping")
	for _, path := range []string{"/", "/runs/napping", "/dead-letters"} {
		p := tb.get(path)
		if p.code != 200 {
			t.Errorf("GET %s with a token set, without it: %d", path, p.code)
		}
		p.has(t, path, `<body data-token-required="true">`, `id="token-dialog"`)
	}
	req, _ := http.NewRequestWithContext(tb.ctx, "POST", tb.url+"/api/v1/runs/napping/cancel", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("cancel without the token: %v %v, want 401", resp.StatusCode, err)
	}
	if p := setup(t, setupOptions{}).get("/"); !strings.Contains(p.body, `<body data-token-required="false">`) {
		t.Error("without a token the pages say one is required")
	}
}

const testToken = "0123456789abcdef0123456789abcdef"

func TestAssetsAndWhatIsNotAPage(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{})
	home := tb.get("/")
	m := regexp.MustCompile(`src="(/assets/console\.js\?v=[0-9a-f]+)"`).FindStringSubmatch(home.body)
	if m == nil {
		t.Fatalf("no script in the page:\n%s", home.body)
	}
	js := tb.get(m[1])
	if js.code != 200 || !strings.Contains(js.header.Get("Content-Type"), "javascript") || !strings.Contains(js.header.Get("Cache-Control"), "immutable") || !strings.Contains(js.body, "sessionStorage") {
		t.Errorf("GET %s: %d %v", m[1], js.code, js.header)
	}
	if css := tb.get("/assets/console.css"); css.code != 200 || !strings.HasPrefix(css.header.Get("Content-Type"), "text/css") || css.header.Get("Cache-Control") != "" {
		t.Errorf("the stylesheet without its version: %d %v, want it uncached", css.code, css.header)
	}
	for path, code := range map[string]int{"/assets/nothing.js": 404, "/nowhere": 404, "/api/v1/nowhere": 404} {
		if p := tb.get(path); p.code != code || (path != "/assets/nothing.js" && !strings.Contains(p.body, `"error"`)) {
			t.Errorf("GET %s: %d %s, want %d (JSON from the API server)", path, p.code, p.body, code)
		}
	}
	req, _ := http.NewRequestWithContext(tb.ctx, "POST", tb.url+"/", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 405 {
		t.Errorf("POST /: %v %v, want 405", resp.StatusCode, err)
	}
}

// refusal is the reason the test's function gives the jobs it refuses.
const refusal = inprocess.Refusal

type refuser = inprocess.Refuser

func stackRefusing(r *refuser) (o inprocess.Options) {
	o.Handler = r.Wrap
	o.Bridge = func(c *bridge.Config) { c.BatchSize = 1 }
	return o
}

// startRefused starts a run whose start job is dead-lettered, and waits
// until the reconciler has recorded it and failed the run.
func (tb *testBundle) startRefused(r *refuser, runID string) {
	tb.t.Helper()
	r.RefuseOnce(runID)
	tb.start(greet, map[string]any{"name": runID}, runID)
	if res := tb.wait(runID); res.Status != workflow.RunFailed {
		tb.t.Fatalf("run %s after its start job was refused: %s, want failed", runID, res.Status)
	}
}

func mustJSON(t *testing.T, src string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(src), v); err != nil {
		t.Fatal(err)
	}
}
