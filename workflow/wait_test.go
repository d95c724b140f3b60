package workflow

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// approval: start → review (wait) → approve | reject by action.
const approvalDoc = `{"id": "approval", "nodes": [
  {"id": "start", "uses": "noop"},
  {"id": "review", "uses": "wait"},
  {"id": "approve", "uses": "transform", "params": {"expression": "'approved by ' + input.by"}},
  {"id": "reject", "uses": "transform", "params": {"expression": "'rejected by ' + input.by"}}
], "edges": [
  {"source": "start", "target": "review"},
  {"source": "review", "target": "approve", "action": "approve"},
  {"source": "review", "target": "reject", "action": "reject"}
]}`

func runLocal(t *testing.T, doc string, opts RunOptions) *RunResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := Run(ctx, mustDecode(t, doc), NewRegistry(), map[string]any{"order": 1.0}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func stepState(res *RunResult, node string) StepState {
	for _, s := range res.Steps {
		if s.NodeID == node {
			return s.State
		}
	}
	return ""
}

func TestLocalRunEndsAwaiting(t *testing.T) {
	t.Parallel()
	res := runLocal(t, approvalDoc, RunOptions{})
	if res.Status != RunAwaiting || stepState(res, "review") != StepAwaiting || stepState(res, "approve") != "" {
		t.Fatalf("status %s, steps %+v; want awaiting at review, nothing after it", res.Status, res.Steps)
	}
	if res.Output != nil || len(res.Errors) > 0 {
		t.Errorf("an awaiting run has output %v, errors %v", res.Output, res.Errors)
	}
}

func TestLocalResumeRoutesByAction(t *testing.T) {
	t.Parallel()
	for _, action := range []string{"approve", "reject"} {
		var seen *RunResult
		res := runLocal(t, approvalDoc, RunOptions{OnAwait: func(r *RunResult) (Resume, bool) {
			if seen != nil {
				t.Errorf("OnAwait called twice")
				return Resume{}, false
			}
			seen = r
			return Resume{Node: "review", Output: map[string]any{"by": "ada"}, Action: action}, true
		}})
		if seen == nil || seen.Status != RunAwaiting || stepState(seen, "review") != StepAwaiting {
			t.Fatalf("%s: OnAwait saw %+v", action, seen)
		}
		other := map[string]string{"approve": "reject", "reject": "approve"}[action]
		want := map[string]string{"approve": "approved by ada", "reject": "rejected by ada"}[action]
		if res.Status != RunCompleted || res.Output != want || stepState(res, other) != StepSkipped {
			t.Errorf("%s: status %s, output %v, steps %+v", action, res.Status, res.Output, res.Steps)
		}
		if got := res.Context[OutputKey("review")]; !reflect.DeepEqual(got, map[string]any{"by": "ada"}) {
			t.Errorf("%s: the wait node's output is %v, want the resume's", action, got)
		}
	}
}

func TestLocalResumeRefused(t *testing.T) {
	t.Parallel()
	res := runLocal(t, approvalDoc, RunOptions{OnAwait: func(*RunResult) (Resume, bool) {
		return Resume{Node: "approve"}, true
	}})
	if res.Status != RunFailed || len(res.Errors) == 0 || !strings.Contains(res.Errors[0].Message, "is a transform node, not a wait node") {
		t.Errorf("status %s, errors %+v; want the resume of a transform refused", res.Status, res.Errors)
	}
}

// A branch beside the wait runs to its end before the run awaits: the run
// is awaiting only when nothing else is pending (a sleep included).
func TestLocalAwaitsOnlyWhenNothingElseRuns(t *testing.T) {
	t.Parallel()
	doc := `{"id": "side", "nodes": [
	  {"id": "start", "uses": "noop"},
	  {"id": "gate", "uses": "wait"},
	  {"id": "nap", "uses": "sleep", "params": {"duration": 30}},
	  {"id": "side-after", "uses": "transform", "params": {"expression": "'slept'"}},
	  {"id": "after-gate", "uses": "noop"}
	], "edges": [
	  {"source": "start", "target": "gate"}, {"source": "start", "target": "nap"},
	  {"source": "nap", "target": "side-after"}, {"source": "gate", "target": "after-gate"}
	]}`
	var awaited *RunResult
	res := runLocal(t, doc, RunOptions{OnAwait: func(r *RunResult) (Resume, bool) {
		awaited = r
		return Resume{Node: "gate", Output: "opened"}, true
	}})
	if awaited == nil || stepState(awaited, "side-after") != StepSucceeded || stepState(awaited, "gate") != StepAwaiting {
		t.Fatalf("when the run awaited: %+v; want side-after done and gate awaiting", awaited)
	}
	want := map[string]any{"after-gate": "opened", "side-after": "slept"}
	if res.Status != RunCompleted || !reflect.DeepEqual(res.Output, want) {
		t.Errorf("status %s, output %v; want completed with %v", res.Status, res.Output, want)
	}
}

// Flowcraft's "reminder" example (docs/src/guide/hitl.md): a resume with
// action pending leads to a sleep, then to the reminder.
func TestLocalReminderExample(t *testing.T) {
	t.Parallel()
	doc := `{"id": "reminder-workflow", "nodes": [
	  {"id": "start", "uses": "transform", "params": {"expression": "{task: 'Review quarterly report'}"}},
	  {"id": "initial-approval", "uses": "wait"},
	  {"id": "reminder-delay", "uses": "sleep", "params": {"duration": 20}},
	  {"id": "send-reminder", "uses": "transform", "params": {"expression": "'Reminder sent'"}}
	], "edges": [
	  {"source": "start", "target": "initial-approval"},
	  {"source": "initial-approval", "target": "reminder-delay", "action": "pending"},
	  {"source": "reminder-delay", "target": "send-reminder"}
	]}`
	res := runLocal(t, doc, RunOptions{OnAwait: func(*RunResult) (Resume, bool) {
		return Resume{Node: "initial-approval", Action: "pending"}, true
	}})
	if res.Status != RunCompleted || res.Output != "Reminder sent" {
		t.Errorf("status %s, output %v, steps %+v", res.Status, res.Output, res.Steps)
	}
}

func TestCheckResume(t *testing.T) {
	t.Parallel()
	w := mustCompile(t, nil, approvalDoc)
	tests := []struct {
		key   string
		st    StepStatus
		found bool
		is    error
		msg   string
	}{
		{key: "review", st: StepStatus{State: StepAwaiting}, found: true},
		{key: "review", found: false, is: ErrNotAwaiting, msg: "has not been reached yet"},
		{key: "review", st: StepStatus{State: StepSucceeded}, found: true, is: ErrNotAwaiting, msg: "resumed already"},
		{key: "review", st: StepStatus{State: StepSkipped}, found: true, is: ErrNotAwaiting, msg: "is skipped"},
		{key: "approve", st: StepStatus{State: StepReady}, found: true, is: ErrNotAwaiting, msg: "not a wait node (its wait nodes: review)"},
		{key: "nope", is: ErrUnknownStep, msg: `has no node "nope"`},
	}
	for _, tt := range tests {
		err := w.CheckResume(tt.key, tt.st, tt.found)
		if tt.is == nil {
			if err != nil {
				t.Errorf("%s %v: %v", tt.key, tt.st, err)
			}
			continue
		}
		if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s %v: %v; want %v with %q", tt.key, tt.st, err, tt.is, tt.msg)
		}
	}
}

func TestResumeStepRoutes(t *testing.T) {
	t.Parallel()
	w := mustCompile(t, nil, approvalDoc)
	res, r, err := w.ResumeStep(StepStatus{State: StepAwaiting}, true, Resume{Node: "review", Output: map[string]any{"by": "ada"}, Action: "reject"}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != "reject" || !reflect.DeepEqual(r.Taken, []string{"reject"}) || !reflect.DeepEqual(r.Deliveries["reject"], map[string]any{"by": "ada"}) {
		t.Errorf("result %+v, routing %+v", res, r)
	}
	// No edge carries the action: the action-less edges (none here).
	if _, r, err = w.ResumeStep(StepStatus{State: StepAwaiting}, true, Resume{Node: "review", Action: "escalate"}, Env{}); err != nil || len(r.Taken) != 0 {
		t.Errorf("escalate: %+v, %v", r, err)
	}
}

func TestAwaitStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status            RunStatus
		pending, awaiting int
		want              RunStatus
	}{
		{RunRunning, 1, 1, RunAwaiting},
		{RunRunning, 2, 2, RunAwaiting},
		{RunRunning, 2, 1, RunRunning}, // a sleep, a ready step, … beside the wait
		{RunRunning, 0, 0, RunRunning},
		{RunCompleted, 0, 0, RunCompleted},
		{RunFailed, 1, 1, RunFailed},
	}
	for _, tt := range tests {
		if got := AwaitStatus(tt.status, tt.pending, tt.awaiting); got != tt.want {
			t.Errorf("AwaitStatus(%s, %d, %d) = %s, want %s", tt.status, tt.pending, tt.awaiting, got, tt.want)
		}
	}
	applied := []AppliedStep{{NodeID: "a", State: StepAwaiting}, {NodeID: "b", State: StepSucceeded}}
	if got := AwaitingAfter(1, applied); got != 2 {
		t.Errorf("AwaitingAfter = %d, want 2", got)
	}
}

// An awaiting step stays pending: the run does not complete behind it.
func TestDecideRunKeepsAwaitingPending(t *testing.T) {
	t.Parallel()
	w := mustCompile(t, nil, approvalDoc)
	states := newFakeStates()
	states.took("start", map[string]any{"review": 1.0})
	states.status["review"] = StepStatus{State: StepAwaiting}
	d := w.DecideRun(RunRunning, 1, []AppliedStep{{NodeID: "review", State: StepAwaiting}}, states)
	if d.Status != RunRunning || d.Pending != 1 || len(d.Ready) != 0 {
		t.Fatalf("decision %+v; want running with the awaiting step pending", d)
	}
	if got := AwaitStatus(d.Status, d.Pending, AwaitingAfter(0, []AppliedStep{{NodeID: "review", State: StepAwaiting}})); got != RunAwaiting {
		t.Errorf("status %s, want awaiting", got)
	}
	// DecideResync counts it too: a run with only an awaiting step is not
	// complete.
	rs := w.DecideResync([]StoredStep{{NodeID: "start", State: StepSucceeded}, {NodeID: "review", State: StepAwaiting}}, states)
	if rs.Status != RunRunning || rs.Pending != 1 {
		t.Errorf("resync %+v; want running with one pending", rs)
	}
}

func TestWaitOutcome(t *testing.T) {
	t.Parallel()
	n := &CompiledNode{MaxAttempts: 3, Fallback: "f"}
	if out := n.Outcome(1, Await()); out.State != StepAwaiting || out.Attempt != 1 {
		t.Errorf("Outcome(Await) = %+v; want awaiting, not a retry", out)
	}
}

type stubEndpoints struct{}

func (stubEndpoints) Register(_ context.Context, in NodeInput) (Webhook, error) {
	return Webhook{URL: "https://hooks.example/" + in.RunID + "/" + in.Key(), Event: WebhookEvent(in.NodeID)}, nil
}

const paymentDoc = `{"id": "payment", "nodes": [
  {"id": "hook", "uses": "webhook"},
  {"id": "notify", "uses": "noop"},
  {"id": "paid", "uses": "wait"},
  {"id": "charge", "uses": "transform", "params": {"expression": "input.amount"}}
], "edges": [
  {"source": "hook", "target": "notify"}, {"source": "notify", "target": "paid"}, {"source": "paid", "target": "charge"}
]}`

func TestWebhookNode(t *testing.T) {
	t.Parallel()
	bp := mustDecode(t, paymentDoc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := Run(ctx, bp, NewRegistry(), nil, RunOptions{RunID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != RunFailed || !strings.Contains(res.Errors[0].Message, "serves no webhooks") {
		t.Errorf("without endpoints: %s %+v; want the webhook failed", res.Status, res.Errors)
	}
	res, err = Run(WithWebhookEndpoints(ctx, stubEndpoints{}), bp, NewRegistry(), nil, RunOptions{RunID: "r1",
		OnAwait: func(r *RunResult) (Resume, bool) {
			want := map[string]any{"url": "https://hooks.example/r1/hook", "event": "webhook:hook"}
			if got := r.Context[OutputKey("hook")]; !reflect.DeepEqual(got, want) {
				t.Errorf("webhook output %v, want %v", got, want)
			}
			return Resume{Node: "paid", Output: map[string]any{"amount": 42.0}}, true
		}})
	if err != nil || res.Status != RunCompleted || res.Output != 42.0 {
		t.Errorf("with endpoints: %v %+v", err, res)
	}
	w := mustCompile(t, nil, paymentDoc)
	if key, ok := w.WebhookWait("hook"); !ok || key != "paid" {
		t.Errorf("WebhookWait(hook) = %q, %v; want paid", key, ok)
	}
	if _, ok := w.WebhookWait("notify"); ok {
		t.Errorf("WebhookWait(notify): not a webhook")
	}
}

func TestWebhookNeedsOneWait(t *testing.T) {
	t.Parallel()
	tests := []struct{ doc, want string }{
		{`{"id": "x", "nodes": [{"id": "hook", "uses": "webhook"}, {"id": "after", "uses": "noop"}],
		   "edges": [{"source": "hook", "target": "after"}]}`,
			`nodes[0].uses: webhook "hook" has no wait node after it`},
		{`{"id": "x", "nodes": [{"id": "hook", "uses": "WebhookNode"}, {"id": "a", "uses": "wait"}, {"id": "b", "uses": "wait"}],
		   "edges": [{"source": "hook", "target": "a"}, {"source": "hook", "target": "b"}]}`,
			`webhook "hook" has wait nodes a and b equally near`},
	}
	for _, tt := range tests {
		_, err := Compile(mustDecode(t, tt.doc), NewRegistry())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("err = %v, want %q", err, tt.want)
		}
	}
	// The nearest wins: a second wait further on is another wait's.
	w := mustCompile(t, NewRegistry(), `{"id": "x", "nodes": [{"id": "hook", "uses": "webhook"}, {"id": "a", "uses": "wait"}, {"id": "b", "uses": "wait"}],
	   "edges": [{"source": "hook", "target": "a"}, {"source": "a", "target": "b"}]}`)
	if key, _ := w.WebhookWait("hook"); key != "a" {
		t.Errorf("WebhookWait = %q, want a", key)
	}
}
