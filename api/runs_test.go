package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stepflow/stepflow/api"
	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/workflow"
)

// request is one case of a handler's table: a request and what its answer
// must be.
type request struct {
	name         string
	method, path string
	body         string
	headers      []string // name, value pairs
	code         int
	says         []string // in the body
	causes       []string // the error's causes, as field: message prefixes
	check        func(t *testing.T, r reply)
}

func (tb *testBundle) run(cases []request) {
	tb.t.Helper()
	for _, tc := range cases {
		tb.t.Run(tc.name, func(t *testing.T) {
			r := tb.do(tc.method, tc.path, tc.body, tc.headers...)
			if r.code != tc.code {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, r.code, r.body, tc.code)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(tc.path, "/health/") && !strings.HasPrefix(tc.path, "/metrics") && ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if r.code >= 400 && r.errorText() == "" {
				t.Errorf("error answer %d without {\"error\": ...}: %s", r.code, r.body)
			}
			for _, s := range tc.says {
				if !strings.Contains(string(r.body), s) {
					t.Errorf("answer %s does not say %q", r.body, s)
				}
			}
			got := r.causes()
			for _, want := range tc.causes {
				if !slices.ContainsFunc(got, func(c string) bool { return strings.HasPrefix(c, want) }) {
					t.Errorf("causes %q lack %q", got, want)
				}
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func listed(t *testing.T, r reply) (ids []string, next string) {
	t.Helper()
	var list api.RunList
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatalf("not a run list: %v\n%s", err, r.body)
	}
	ids = []string{}
	for _, run := range list.Items {
		ids = append(ids, run.RunID)
	}
	return ids, list.Metadata.Continue
}

func wantListed(want ...string) func(*testing.T, reply) {
	return func(t *testing.T, r reply) {
		if got, _ := listed(t, r); !slices.Equal(got, want) {
			t.Errorf("listed %v, want %v", got, want)
		}
	}
}

func startBody(t *testing.T, bp, rest string) string {
	return `{"blueprint": ` + compact(t, bp) + rest + `}`
}

const unknownUses = `{"id": "odd", "nodes": [{"id": "a", "uses": "noop"}, {"id": "b", "uses": "frobnicate"}], "edges": [{"source": "a", "target": "b"}]}`

func TestRuns(t *testing.T) {
	t.Parallel()
	dirGreet, err := workflow.Decode([]byte(strings.Replace(greet, `"id": "greet"`, `"id": "greet-dir"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	// The odd one among --blueprints is refused when a run names it: the
	// function could not run its frobnicate node.
	dirOdd, err := workflow.Decode([]byte(strings.Replace(unknownUses, `"id": "odd"`, `"id": "odd-dir"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	tb := setup(t, setupOptions{api: func(o *api.Options) {
		o.Blueprints = map[string]*workflow.Blueprint{"greet-dir": dirGreet, "odd-dir": dirOdd}
		o.PublicURL = "https://stepflow.example.com/"
	}})
	tb.start(greet, map[string]any{"name": "Ada"}, "done")
	tb.waitForRun("done")
	tb.start(nap, nil, "napping")
	tb.start(nap, nil, "dozing")

	tb.run([]request{
		{name: "list", method: "GET", path: "/api/v1/runs", code: 200, check: wantListed("dozing", "napping", "done")},
		{name: "list by status", method: "GET", path: "/api/v1/runs?status=completed", code: 200, check: wantListed("done")},
		{name: "list by blueprint", method: "GET", path: "/api/v1/runs?blueprint=nap&limit=1", code: 200, check: func(t *testing.T, r reply) {
			ids, next := listed(t, r)
			if !slices.Equal(ids, []string{"dozing"}) || next == "" {
				t.Fatalf("first page %v (continue %q), want dozing and a token", ids, next)
			}
			ids, last := listed(t, tb.do("GET", "/api/v1/runs?blueprint=nap&limit=1&continue="+next, ""))
			if !slices.Equal(ids, []string{"napping"}) || last != "" {
				t.Errorf("second page %v (continue %q), want napping and no token", ids, last)
			}
		}},
		{name: "list items", method: "GET", path: "/api/v1/runs?status=completed", code: 200,
			says: []string{`"runId":"done"`, `"blueprintId":"greet"`, `"status":"completed"`, `"createdAt":`, `"finishedAt":`, `"durationMs":`}},
		{name: "list by an unknown status", method: "GET", path: "/api/v1/runs?status=complete", code: 400, says: []string{`status \"complete\"`}},
		{name: "list with a bad limit", method: "GET", path: "/api/v1/runs?limit=0", code: 400, causes: []string{"limit: want an integer from 1 to 1000"}},
		{name: "list with a limit too large", method: "GET", path: "/api/v1/runs?limit=1001", code: 400, says: []string{"limit"}},
		{name: "list with an unknown parameter", method: "GET", path: "/api/v1/runs?state=running", code: 400, causes: []string{"state: unknown query parameter"}},
		{name: "list with a garbled token", method: "GET", path: "/api/v1/runs?continue=nope", code: 400, says: []string{"continue token"}},

		{name: "get", method: "GET", path: "/api/v1/runs/done", code: 200, check: func(t *testing.T, r reply) {
			var res workflow.RunResult
			if err := json.Unmarshal(r.body, &res); err != nil {
				t.Fatal(err)
			}
			want, err := tb.client.Result(tb.ctx, "done") // what stepflow status --json prints
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != workflow.RunCompleted || res.Output != "HELLO, ADA" || len(res.Steps) != 2 {
				t.Errorf("run %+v, want completed with HELLO, ADA and two steps", res)
			}
			if fmt.Sprint(res.Steps) != fmt.Sprint(want.Steps) || !reflect.DeepEqual(res.Context, want.Context) || res.Output != want.Output {
				t.Errorf("GET gives\n%+v\nstepflow status --json gives\n%+v", res, want)
			}
		}},
		{name: "get an unknown run", method: "GET", path: "/api/v1/runs/ghost", code: 404, says: []string{"ghost", "not found"}},

		{name: "start inline", method: "POST", path: "/api/v1/runs", body: startBody(t, greet, `, "input": {"name": "Bob"}, "runId": "bob"`), code: 201,
			says: []string{`"runId":"bob"`, `"blueprintId":"greet"`, `"status":"running"`}, check: func(t *testing.T, r reply) {
				if loc := r.header.Get("Location"); loc != "https://stepflow.example.com/api/v1/runs/bob" {
					t.Errorf("Location %q, want the run under the public URL", loc)
				}
				if res := tb.waitForRun("bob"); res.Output != "HELLO, BOB" {
					t.Errorf("bob's output %v, want HELLO, BOB", res.Output)
				}
			}},
		{name: "start with a new id", method: "POST", path: "/api/v1/runs", body: startBody(t, greet, `, "input": {"name": "Cy"}`), code: 201, check: func(t *testing.T, r reply) {
			id, _ := r.json(t)["runId"].(string)
			if id == "" || r.header.Get("Location") != "https://stepflow.example.com/api/v1/runs/"+id {
				t.Errorf("run id %q, Location %q", id, r.header.Get("Location"))
			}
		}},
		{name: "start an id with a slash", method: "POST", path: "/api/v1/runs", body: startBody(t, greet, `, "input": {"name": "Di"}, "runId": "a/b c"`), code: 201, check: func(t *testing.T, r reply) {
			if loc := r.header.Get("Location"); !strings.HasSuffix(loc, "/api/v1/runs/a%2Fb%20c") {
				t.Fatalf("Location %q, want the id escaped", loc)
			}
			if got := tb.do("GET", "/api/v1/runs/a%2Fb%20c", ""); got.code != 200 || !strings.Contains(string(got.body), `"runId":"a/b c"`) {
				t.Errorf("GET of the escaped id: %d %s", got.code, got.body)
			}
		}},
		{name: "start by id from --blueprints", method: "POST", path: "/api/v1/runs", body: `{"blueprintId": "greet-dir", "input": {"name": "Eve"}, "runId": "eve"}`, code: 201,
			says: []string{`"blueprintId":"greet-dir"`}},
		{name: "start by id of a stored snapshot", method: "POST", path: "/api/v1/runs", body: `{"blueprintId": "greet", "input": {"name": "Fay"}, "runId": "fay"}`, code: 201,
			check: func(t *testing.T, r reply) {
				if res := tb.waitForRun("fay"); res.Output != "HELLO, FAY" {
					t.Errorf("fay's output %v", res.Output)
				}
			}},
		{name: "start a taken id", method: "POST", path: "/api/v1/runs", body: startBody(t, greet, `, "runId": "done"`), code: 409, says: []string{"done", "already exists"}},
		{name: "start an unknown blueprint id", method: "POST", path: "/api/v1/runs", body: `{"blueprintId": "ghost"}`, code: 400, causes: []string{"blueprintId: no such blueprint"}},
		{name: "start with both", method: "POST", path: "/api/v1/runs", body: startBody(t, greet, `, "blueprintId": "greet"`), code: 400, says: []string{"not both"}},
		{name: "start with neither", method: "POST", path: "/api/v1/runs", body: `{"input": {}}`, code: 400, says: []string{"blueprint or blueprintId"}},
		{name: "start an unknown node type", method: "POST", path: "/api/v1/runs", body: startBody(t, unknownUses, `, "runId": "odd"`), code: 400,
			says: []string{`unknown node type \"frobnicate\"`}, causes: []string{`blueprint.nodes[1].uses: unknown node type "frobnicate"`}, check: func(t *testing.T, r reply) {
				if got := tb.do("GET", "/api/v1/runs/odd", ""); got.code != 404 {
					t.Errorf("after the refusal GET answers %d, want 404: nothing recorded", got.code)
				}
			}},
		{name: "start a blueprint of a bad shape", method: "POST", path: "/api/v1/runs", body: `{"blueprint": {"id": "x", "nodes": [{"id": "a", "uses": "noop", "config": {"maxRetries": "3"}}]}}`, code: 400,
			causes: []string{"blueprint.nodes[0].config.maxRetries: "}},
		{name: "start a blueprint with an unknown field", method: "POST", path: "/api/v1/runs", body: `{"blueprint": {"id": "x", "nodes": [{"id": "a", "uses": "noop", "colour": "red"}]}}`, code: 400,
			says: []string{"colour"}, causes: []string{"blueprint.nodes[0]"}},
		{name: "start an invalid graph", method: "POST", path: "/api/v1/runs", body: `{"blueprint": {"id": "x", "nodes": [{"id": "a", "uses": "noop"}], "edges": [{"source": "a", "target": "ghost"}]}}`, code: 400,
			causes: []string{`blueprint.edges[0].target: no node with id "ghost"`}},
		{name: "start a subflow whose child is neither in --blueprints nor stored", method: "POST", path: "/api/v1/runs",
			body: `{"blueprint": {"id": "lost", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "nowhere"}}]}, "runId": "lost"}`, code: 400,
			causes: []string{`blueprint.nodes[0].params.blueprintId: no blueprint "nowhere" among those given`}, check: func(t *testing.T, r reply) {
				if got := tb.do("GET", "/api/v1/runs/lost", ""); got.code != 404 {
					t.Errorf("after the refusal GET answers %d, want 404: nothing recorded", got.code)
				}
			}},
		{name: "start a subflow whose child is stored", method: "POST", path: "/api/v1/runs",
			body: `{"blueprint": {"id": "wrapper", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "greet"}}]}, "runId": "wrapped"}`, code: 201},
		{name: "start a named blueprint that does not validate here", method: "POST", path: "/api/v1/runs", body: `{"blueprintId": "odd-dir"}`, code: 400,
			causes: []string{`blueprintId: nodes[1].uses: unknown node type "frobnicate"`}},
		{name: "malformed JSON", method: "POST", path: "/api/v1/runs", body: "{\n  \"blueprint\": {\"id\": \"x\",}\n}", code: 400, says: []string{"malformed JSON at line 2, column 27"}},
		{name: "truncated JSON", method: "POST", path: "/api/v1/runs", body: `{"blueprint": {"id": `, code: 400, says: []string{"malformed JSON"}},
		{name: "empty body", method: "POST", path: "/api/v1/runs", code: 400, says: []string{"empty request body"}},
		{name: "not an object", method: "POST", path: "/api/v1/runs", body: `[1, 2]`, code: 400, says: []string{"the body is a JSON array"}},
		{name: "an unknown request field", method: "POST", path: "/api/v1/runs", body: `{"blueprintID": "greet"}`, code: 400, causes: []string{"blueprintID: unknown field"}},
		{name: "a run id that is no string", method: "POST", path: "/api/v1/runs", body: startBody(t, greet, `, "runId": 7`), code: 400, causes: []string{"runId: expected a string, got a JSON number"}},
		{name: "an input that is no object", method: "POST", path: "/api/v1/runs", body: startBody(t, greet, `, "input": ["Ada"]`), code: 400, causes: []string{"input: expected an object"}},
		{name: "a run id too long", method: "POST", path: "/api/v1/runs", body: startBody(t, greet, `, "runId": "`+strings.Repeat("r", 600)+`"`), code: 400, says: []string{"runId", "600 bytes"}},
		{name: "not JSON", method: "POST", path: "/api/v1/runs", body: "blueprint=x", headers: []string{"Content-Type", "application/x-www-form-urlencoded"}, code: 415, says: []string{"application/json"}},

		{name: "cancel", method: "POST", path: "/api/v1/runs/napping/cancel", code: 200, says: []string{`"runId":"napping"`, `"status":"cancelled"`}, check: func(t *testing.T, r reply) {
			if res := tb.waitForRun("napping"); res.Status != workflow.RunCancelled {
				t.Errorf("napping reads %s after cancel", res.Status)
			}
		}},
		{name: "cancel again", method: "POST", path: "/api/v1/runs/napping/cancel", code: 200, says: []string{`"status":"cancelled"`}},
		{name: "cancel a finished run", method: "POST", path: "/api/v1/runs/done/cancel", code: 409, says: []string{"run done is already completed"}},
		{name: "cancel an unknown run", method: "POST", path: "/api/v1/runs/ghost/cancel", code: 404, says: []string{"ghost"}},

		{name: "a wrong method", method: "GET", path: "/api/v1/runs/done/cancel", code: 405, says: []string{"allowed: POST"}, check: func(t *testing.T, r reply) {
			if r.header.Get("Allow") != "POST" {
				t.Errorf("Allow %q, want POST", r.header.Get("Allow"))
			}
		}},
		{name: "another wrong method", method: "DELETE", path: "/api/v1/runs/done", code: 405, says: []string{"method DELETE is not allowed"}},
		{name: "no such endpoint", method: "GET", path: "/api/v1/nothing", code: 404, says: []string{"no such endpoint: GET /api/v1/nothing"}},
	})
}

// A run started through POST /api/v1/runs runs on the real stack and
// reads completed through GET /api/v1/runs/{id}: examples/order.json with
// the example nodes, its payment gateway failing once and retried.
func TestStartThroughTheAPIRunsToCompletion(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{registry: nodes.Registry()})
	bp, err := os.ReadFile("../examples/order.json")
	if err != nil {
		t.Fatal(err)
	}
	input, err := os.ReadFile("../examples/order.input.json")
	if err != nil {
		t.Fatal(err)
	}
	r := tb.do("POST", "/api/v1/runs", `{"blueprint": `+string(bp)+`, "input": `+string(input)+`}`)
	if r.code != http.StatusCreated {
		t.Fatalf("POST /api/v1/runs: %d %s", r.code, r.body)
	}
	id, _ := r.json(t)["runId"].(string)
	if loc := r.header.Get("Location"); loc != "/api/v1/runs/"+id {
		t.Errorf("Location %q, want /api/v1/runs/%s", loc, id)
	}
	res := tb.waitForRun(id)
	if res.Status != workflow.RunCompleted || res.BlueprintID != "order" {
		t.Fatalf("run %s: %s %+v", id, res.Status, res.Errors)
	}
	if want := map[string]any{"channel": "email", "notified": "ada@example.com"}; !reflect.DeepEqual(res.Output, want) {
		t.Errorf("output %v, want %v", res.Output, want)
	}
	var steps []string
	for _, s := range res.Steps {
		steps = append(steps, fmt.Sprintf("%s:%s:%d", s.NodeID, s.State, s.Attempts))
	}
	want := []string{"validate:succeeded:1", "review:succeeded:1", "reserve:succeeded:1", "payment-gateway:succeeded:2", "charge:succeeded:1", "ship:succeeded:1", "notify:succeeded:1"}
	if !slices.Equal(steps, want) {
		t.Errorf("steps %v, want %v", steps, want)
	}
	// And it is listed as completed.
	if ids, _ := listed(t, tb.do("GET", "/api/v1/runs?status=completed&blueprint=order", "")); !slices.Equal(ids, []string{id}) {
		t.Errorf("completed runs of order: %v, want %s", ids, id)
	}
}
