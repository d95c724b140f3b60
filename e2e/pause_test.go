package e2e

// Pausing on the stack: the approval and payment examples, resumed
// through the client and through the API's webhook, and a wait beside a
// sleep (Flowcraft's "reminder").

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepflow/stepflow/api"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/workflow"
)

// The approval example (examples/approval.json) awaits at "approve";
// resumed with the action reject, it returns the document to its author,
// and each node ran once.
func TestApprovalExample(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	runID := tb.start(testenv.Example(t, "approval"), exampleInput(t, "approval"))
	res := tb.wait(runID, 20*time.Second)
	if res.Status != workflow.RunAwaiting {
		t.Fatalf("status %s, want awaiting; errors %v", res.Status, res.Errors)
	}
	assertSteps(t, res, map[string]wantStep{"submit": {workflow.StepSucceeded, 1}, "approve": {workflow.StepAwaiting, 1}})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := tb.client.Resume(ctx, runID, workflow.Resume{Node: "approve", Output: map[string]any{"reviewer": "grace@example.com", "reason": "figures missing"}, Action: "reject"}); err != nil {
		t.Fatal(err)
	}
	res = tb.wait(runID, 20*time.Second)
	if res.Status != workflow.RunCompleted {
		t.Fatalf("after the resume: %s; errors %v", res.Status, res.Errors)
	}
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(`{"returned":"q3-report.pdf","to":"ada@example.com","reason":"figures missing"}`))
	assertSteps(t, res, map[string]wantStep{"submit": {workflow.StepSucceeded, 1}, "approve": {workflow.StepSucceeded, 1},
		"publish": {workflow.StepSkipped, 0}, "return-to-author": {workflow.StepSucceeded, 1}})
	for _, id := range []string{"submit", "approve", "return-to-author"} {
		if n := tb.nodes.count(runID, id); n != 1 {
			t.Errorf("node %s ran %d times, want 1", id, n)
		}
	}
}

// The payment example (examples/payment.json): the webhook node outputs a
// URL; a POST of the provider's JSON to it, served by the API, resumes the
// run at "paid" and the order is charged. The URL then answers 410.
func TestPaymentExampleThroughTheWebhook(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	srv, err := api.New(tb.client, api.Options{Registry: prometheus.NewRegistry(), Logger: tb.logger})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)

	runID := tb.start(testenv.Example(t, "payment"), exampleInput(t, "order"))
	res := tb.wait(runID, 20*time.Second)
	if res.Status != workflow.RunAwaiting {
		t.Fatalf("status %s, want awaiting; errors %v", res.Status, res.Errors)
	}
	link, _ := res.Context[workflow.OutputKey("payment-link")].(map[string]any)
	raw, _ := link["url"].(string)
	if link["event"] != "webhook:payment-link" || !strings.HasPrefix(raw, "http://127.0.0.1:8088/webhooks/"+runID+"/payment-link/") {
		t.Fatalf("payment link %v", link)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	post := func() int {
		resp, err := http.Post(hs.URL+u.EscapedPath(), "application/json", strings.NewReader(`{"provider": "psp", "status": "paid"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	if code := post(); code != http.StatusOK {
		t.Fatalf("webhook answered %d", code)
	}
	res = tb.wait(runID, 20*time.Second)
	if res.Status != workflow.RunCompleted {
		t.Fatalf("after the webhook: %s; errors %v", res.Status, res.Errors)
	}
	testenv.AssertJSON(t, "output", res.Output, json.RawMessage(fmt.Sprintf(`{"chargeId":"ch-%s","amount":138.9,"currency":"EUR"}`, runID)))
	testenv.AssertJSON(t, "paid's output", res.Context[workflow.OutputKey("paid")], json.RawMessage(`{"provider":"psp","status":"paid"}`))
	if code := post(); code != http.StatusGone {
		t.Errorf("a replay answered %d, want 410", code)
	}
	if n := tb.nodes.count(runID, "charge"); n != 1 {
		t.Errorf("charge ran %d times, want 1", n)
	}
}

// Flowcraft's "reminder" example (docs/src/guide/hitl.md), with a wait
// beside a sleep: while the sleep is pending the run is running, not
// awaiting; it awaits once only the wait is left, and a resume with
// action pending leads to a second sleep and the reminder.
func TestReminderExample(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	bp := blueprint(t, `{"id": "reminder-workflow", "nodes": [
	  {"id": "start", "uses": "transform", "params": {"expression": "{task: 'Review quarterly report'}"}},
	  {"id": "initial-approval", "uses": "wait"},
	  {"id": "grace", "uses": "sleep", "params": {"duration": 1500}},
	  {"id": "reminder-delay", "uses": "sleep", "params": {"duration": 100}},
	  {"id": "send-reminder", "uses": "transform", "params": {"expression": "'Reminder sent'"}}
	], "edges": [
	  {"source": "start", "target": "initial-approval"},
	  {"source": "start", "target": "grace"},
	  {"source": "initial-approval", "target": "reminder-delay", "action": "pending"},
	  {"source": "reminder-delay", "target": "send-reminder"}
	]}`)
	runID := tb.start(bp, nil)
	// grace may still be ready when initial-approval awaits: wait for both.
	testenv.Eventually(t, 10*time.Second, "initial-approval to await and grace to sleep", func() bool {
		steps := tb.steps(runID)
		a, g := steps["initial-approval"], steps["grace"]
		return a != nil && a.State == workflow.StepAwaiting && g != nil && g.State == workflow.StepSleeping
	})
	if r, _ := tb.store.GetRun(context.Background(), runID); r.Status != workflow.RunRunning {
		t.Fatalf("with grace sleeping the run is %s, want running", r.Status)
	}
	res := tb.wait(runID, 20*time.Second) // returns once it awaits
	if res.Status != workflow.RunAwaiting || tb.steps(runID)["grace"].State != workflow.StepSucceeded {
		t.Fatalf("status %s; want awaiting once grace has slept", res.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := tb.client.Resume(ctx, runID, workflow.Resume{Node: "initial-approval", Action: "pending"})
	if err != nil || r.Status != workflow.RunRunning {
		t.Fatalf("resume: %+v, %v", r, err)
	}
	res = tb.wait(runID, 20*time.Second)
	if res.Status != workflow.RunCompleted {
		t.Fatalf("after the resume: %s; errors %v", res.Status, res.Errors)
	}
	testenv.AssertJSON(t, "send-reminder", res.Context[workflow.OutputKey("send-reminder")], json.RawMessage(`"Reminder sent"`))
}
