package api_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/stepflow/stepflow/api"
	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

// refusal is the reason the test's function gives the jobs it refuses.
const refusal = inprocess.Refusal

type refuser = inprocess.Refuser

// startRefused starts a run whose start job is dead-lettered, and waits
// until the reconciler has recorded it and failed the run.
func (tb *testBundle) startRefused(r *refuser, runID string) {
	tb.t.Helper()
	r.RefuseOnce(runID)
	tb.start(greet, map[string]any{"name": runID}, runID)
	if res := tb.waitForRun(runID); res.Status != workflow.RunFailed {
		tb.t.Fatalf("run %s after its start job was refused: %s, want failed", runID, res.Status)
	}
	// The reconciler fails the run in the transaction that records its
	// dead letter: it is listed now.
}

func listedDeadLetters(t *testing.T, r reply) (runs []string, next string) {
	t.Helper()
	var list api.DeadLetterList
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatalf("not a dead letter list: %v\n%s", err, r.body)
	}
	runs = []string{}
	for _, dl := range list.Items {
		runs = append(runs, dl.RunID)
	}
	return runs, list.Metadata.Continue
}

func wantDeadLetters(want ...string) func(*testing.T, reply) {
	return func(t *testing.T, r reply) {
		if got, _ := listedDeadLetters(t, r); !slices.Equal(got, want) {
			t.Errorf("dead letters of %v, want %v", got, want)
		}
	}
}

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	r := &refuser{}
	tb := setup(t, setupOptions{stack: stackRefusing(r)})
	tb.startRefused(r, "first")
	tb.startRefused(r, "second")
	tb.startRefused(r, "third")

	tb.run([]request{
		{name: "list", method: "GET", path: "/api/v1/dead-letters", code: 200, check: wantDeadLetters("first", "second", "third")},
		{name: "list items", method: "GET", path: "/api/v1/dead-letters?run=first", code: 200,
			says: []string{`"runId":"first"`, `"nodeId":"hello"`, `"blueprintId":"greet"`, `"errorCode":"400"`, `"errorReason":"` + refusal + `"`, `"messageId":"first:hello:1"`, `"jobAttempt":1`}},
		{name: "a page at a time", method: "GET", path: "/api/v1/dead-letters?limit=2", code: 200, check: func(t *testing.T, r reply) {
			runs, next := listedDeadLetters(t, r)
			if !slices.Equal(runs, []string{"first", "second"}) || next == "" {
				t.Fatalf("first page %v (continue %q), want first, second and a token", runs, next)
			}
			runs, last := listedDeadLetters(t, tb.do("GET", "/api/v1/dead-letters?limit=2&continue="+next, ""))
			if !slices.Equal(runs, []string{"third"}) || last != "" {
				t.Errorf("second page %v (continue %q), want third and no token", runs, last)
			}
			if got := tb.do("GET", "/api/v1/dead-letters?limit=2&all=true&continue="+next, ""); got.code != 400 {
				t.Errorf("the token with another filter: %d %s, want 400", got.code, got.body)
			}
		}},
		{name: "a run without any", method: "GET", path: "/api/v1/dead-letters?run=ghost", code: 200, says: []string{`"items":[]`}},
		{name: "a bad all", method: "GET", path: "/api/v1/dead-letters?all=sometimes", code: 400, causes: []string{"all: want true or false"}},
		{name: "a bad token", method: "GET", path: "/api/v1/dead-letters?continue=abc", code: 400, causes: []string{"continue: "}},
		{name: "an unknown parameter", method: "GET", path: "/api/v1/dead-letters?runId=first", code: 400, causes: []string{"runId: unknown query parameter"}},

		{name: "replay neither", method: "POST", path: "/api/v1/dead-letters/replay", body: `{}`, code: 400, says: []string{`exactly one of \"runId\"`}},
		{name: "replay both", method: "POST", path: "/api/v1/dead-letters/replay", body: `{"runId": "first", "all": true}`, code: 400, says: []string{"exactly one"}},
		{name: "replay without a body", method: "POST", path: "/api/v1/dead-letters/replay", code: 400, says: []string{"empty request body"}},
		{name: "replay one run", method: "POST", path: "/api/v1/dead-letters/replay", body: `{"runId": "first"}`, code: 200,
			says: []string{`"runs":["first"]`, `"jobs":1`}, check: func(t *testing.T, r reply) {
				if res := tb.waitForRun("first"); res.Status != workflow.RunCompleted || res.Output != "HELLO, FIRST" {
					t.Errorf("first after replay: %s %v, want completed", res.Status, res.Output)
				}
			}},
		{name: "after a replay", method: "GET", path: "/api/v1/dead-letters", code: 200, check: wantDeadLetters("second", "third")},
		{name: "with the replayed", method: "GET", path: "/api/v1/dead-letters?all=true", code: 200, check: wantDeadLetters("first", "second", "third")},
		{name: "replay a run without any", method: "POST", path: "/api/v1/dead-letters/replay", body: `{"runId": "ghost"}`, code: 200, says: []string{`"runs":[]`, `"jobs":0`}},
		{name: "replay all", method: "POST", path: "/api/v1/dead-letters/replay", body: `{"all": true}`, code: 200,
			says: []string{`"runs":["second","third"]`, `"jobs":2`}, check: func(t *testing.T, r reply) {
				for _, id := range []string{"second", "third"} {
					if res := tb.waitForRun(id); res.Status != workflow.RunCompleted {
						t.Errorf("%s after replay: %s, want completed", id, res.Status)
					}
				}
			}},
		{name: "none left", method: "GET", path: "/api/v1/dead-letters", code: 200, check: wantDeadLetters()},
		{name: "a wrong method", method: "GET", path: "/api/v1/dead-letters/replay", code: 405, says: []string{"allowed: POST"}},
	})
}

func stackRefusing(r *refuser) (o inprocess.Options) {
	o.Handler = r.Wrap
	o.Bridge = func(c *bridge.Config) { c.BatchSize = 1 }
	return o
}
