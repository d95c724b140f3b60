package conformancetest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stepflow/stepflow/conformance"
	"github.com/stepflow/stepflow/workflow"
)

// Outcome is what a runner did with a case.
type Outcome struct {
	// Result is the run's result once it ended (or awaited with no resume
	// left to apply); nil when Err is set.
	Result *workflow.RunResult
	// Err is the error of starting or running the run (a validation
	// error, for a blueprint stepflow refuses).
	Err error
	// Awaited are the run's results each time it awaited a resume, in
	// order: Awaited[i] is the run as the case's i-th resume found it.
	Awaited []*workflow.RunResult
}

// Check compares a runner's outcome of c with what Flowcraft did, or,
// where stepflow differs on purpose (Differences), asserts what stepflow
// does instead.
func Check(t *testing.T, c conformance.Case, o Outcome) {
	t.Helper()
	d := Differences[c.Name]
	if d.Check != nil {
		d.Check(t, o)
		return
	}
	if o.Err != nil {
		t.Fatalf("run: %v", o.Err)
	}
	want := c.Expected
	// A sleep is a timer the runner resumes by itself: its run ends as
	// Flowcraft's does once its scheduler resumed it. A resume is applied
	// when the run awaits, which is compared as Flowcraft's awaited.
	for i, r := range c.Resume {
		if r.Via == "resume" {
			if len(o.Awaited) <= i {
				t.Fatalf("the run awaited %d times, want a resume %d (%s)", len(o.Awaited), i, r.NodeID)
			}
			if string(o.Awaited[i].Status) != want.Status {
				t.Fatalf("before resume %d: status %s, want %s", i, o.Awaited[i].Status, want.Status)
			}
			CompareContext(t, want, o.Awaited[i].Context, append(slices.Clone(d.Keys), d.AwaitingKeys...))
		}
		want = c.Expected.AfterResume[i]
	}
	res := o.Result
	if string(res.Status) != want.Status {
		t.Fatalf("status %s, want %s; errors %+v", res.Status, want.Status, res.Errors)
	}
	CompareContext(t, want, res.Context, d.Keys)
	if want.Status == "failed" {
		wantMsg := d.Message
		if wantMsg == "" {
			wantMsg = innermostMessage(want.Errors[0].OriginalError)
		}
		if len(res.Errors) == 0 || res.Errors[0].NodeID != want.Errors[0].NodeID || res.Errors[0].Message != wantMsg {
			t.Errorf("errors %+v, want node %s: %q", res.Errors, want.Errors[0].NodeID, wantMsg)
		}
	}
}

// CheckDifferences fails t for every case Differences names that is not
// one of cases.
func CheckDifferences(t *testing.T, cases []conformance.Case) {
	t.Helper()
	names := map[string]bool{}
	for _, c := range cases {
		names[c.Name] = true
	}
	for _, name := range sortedKeys(Differences) {
		if !names[name] {
			t.Errorf("Differences names %q, which is no corpus case", name)
		}
	}
}

// uuidPattern matches the ids Flowcraft draws (normalised in the corpus)
// and the batch ids stepflow derives; they are compared as opaque ids.
var uuidPattern = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// flowcraftOnly says whether a context key is Flowcraft's bookkeeping,
// which stepflow does not keep in the context: the edge values at
// _inputs.<id>, the execution id, the awaiting state.
func flowcraftOnly(key string) bool {
	for _, p := range []string{"_inputs.", "_executionId", "_awaiting", "_subflowState."} {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// comparable is a context (or a nested object) as the comparison sees it:
// Flowcraft's bookkeeping and the ignored keys left out, ids made opaque.
func comparable(v any, ignore map[string]bool, top bool) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			if flowcraftOnly(k) || (top && ignore[k]) {
				continue
			}
			out[uuidPattern.ReplaceAllString(k, "<id>")] = comparable(x, ignore, false)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = comparable(x, ignore, false)
		}
		return out
	case string:
		return uuidPattern.ReplaceAllString(v, "<id>")
	}
	return v
}

// CompareContext compares stepflow's final context with Flowcraft's,
// leaving out keys (node ids: their _outputs.<id> and bare key) and
// Flowcraft's bookkeeping. A value Flowcraft left undefined
// (want.UndefinedPaths) may be nil or absent.
func CompareContext(t *testing.T, want conformance.Result, got map[string]any, keys []string) {
	t.Helper()
	ignore := map[string]bool{}
	for _, k := range keys {
		ignore[k], ignore[workflow.OutputKey(k)] = true, true
	}
	undefined := map[string]bool{}
	for _, p := range want.UndefinedPaths {
		parts := make([]string, len(p))
		for i, x := range p {
			parts[i] = uuidPattern.ReplaceAllString(fmt.Sprint(x), "<id>")
		}
		undefined[strings.Join(parts, "/")] = true
	}
	w := comparable(want.Context, ignore, true)
	g := comparable(workflow.Normalize(got), ignore, true)
	var diffs []string
	var walk func(path []string, w, g any)
	walk = func(path []string, w, g any) {
		wm, wok := w.(map[string]any)
		gm, gok := g.(map[string]any)
		if !wok || !gok {
			if !reflect.DeepEqual(w, g) {
				diffs = append(diffs, fmt.Sprintf("%s = %s, want %s", strings.Join(path, "/"), toJSON(g), toJSON(w)))
			}
			return
		}
		for _, k := range unionKeys(wm, gm) {
			p := append(slices.Clone(path), k)
			wv, inW := wm[k]
			gv, inG := gm[k]
			switch {
			case inW && inG:
				walk(p, wv, gv)
			case inW:
				diffs = append(diffs, fmt.Sprintf("%s missing, want %s", strings.Join(p, "/"), toJSON(wv)))
			case gv != nil || !undefined[strings.Join(p, "/")]:
				diffs = append(diffs, fmt.Sprintf("%s = %s, which Flowcraft does not set", strings.Join(p, "/"), toJSON(gv)))
			}
		}
	}
	walk(nil, w, g)
	for _, d := range diffs {
		t.Errorf("context: %s", d)
	}
}

func unionKeys(a, b map[string]any) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// innermostMessage is the message of the error a node threw: the deepest
// cause that is an Error (Flowcraft wraps a node's error in "Node '<id>'
// execution failed").
func innermostMessage(e *conformance.ErrorInfo) string {
	msg := ""
	for ; e != nil && !e.PlainObject; e = e.Cause {
		msg = e.Message
	}
	return msg
}
