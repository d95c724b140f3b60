package nodes

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/stepflow/stepflow/workflow"
)

// The approval example awaits at its wait node "approve"; the reviewer's
// resume, by its action, publishes the document or returns it.
func TestApprovalExample(t *testing.T) {
	t.Parallel()
	w := loadExample(t, "approval")
	in, _ := workflow.Normalize(exampleInput(t, "approval")).(map[string]any)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	res, err := w.Run(ctx, in, workflow.RunOptions{RunID: "run-a"})
	if err != nil || res.Status != workflow.RunAwaiting {
		t.Fatalf("without a resume: %v, %+v; want awaiting", err, res)
	}

	tests := []struct {
		action string
		output map[string]any
		sink   string
		want   map[string]any
	}{
		{"approve", map[string]any{"reviewer": "grace@example.com"}, "publish",
			map[string]any{"published": "q3-report.pdf", "approvedBy": "grace@example.com"}},
		{"reject", map[string]any{"reviewer": "grace@example.com", "reason": "figures missing"}, "return-to-author",
			map[string]any{"returned": "q3-report.pdf", "to": "ada@example.com", "reason": "figures missing"}},
	}
	for _, tt := range tests {
		got := runExampleWith(t, w, workflow.RunOptions{RunID: "run-a", OnAwait: func(r *workflow.RunResult) (workflow.Resume, bool) {
			return workflow.Resume{Node: "approve", Output: tt.output, Action: tt.action}, true
		}}, in)
		assertOutputs(t, got, map[string]any{tt.sink: tt.want, "approve": tt.output})
		if len(got.Skipped) != 1 {
			t.Errorf("%s: skipped %v, want the other branch", tt.action, got.Skipped)
		}
	}
}

// examplePaymentLinks stand in for the API server's webhook endpoints.
type examplePaymentLinks struct{}

func (examplePaymentLinks) Register(_ context.Context, in workflow.NodeInput) (workflow.Webhook, error) {
	return workflow.Webhook{URL: "https://pay.example/webhooks/" + in.RunID + "/" + in.NodeID + "/t0ken", Event: workflow.WebhookEvent(in.NodeID)}, nil
}

// The payment example outputs a webhook URL, awaits the provider's call at
// "paid", then charges the order (or cancels it when the call's action
// is declined).
func TestPaymentExample(t *testing.T) {
	t.Parallel()
	w := loadExample(t, "payment")
	in, _ := workflow.Normalize(exampleInput(t, "order")).(map[string]any)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = workflow.WithWebhookEndpoints(ctx, examplePaymentLinks{})
	for _, action := range []string{"", "declined"} {
		var link any
		res, err := w.Run(ctx, in, workflow.RunOptions{RunID: "R", OnAwait: func(r *workflow.RunResult) (workflow.Resume, bool) {
			link = r.Context[workflow.OutputKey("payment-link")]
			return workflow.Resume{Node: "paid", Output: map[string]any{"provider": "psp", "reason": "card expired"}, Action: action}, true
		}})
		if err != nil || res.Status != workflow.RunCompleted {
			t.Fatalf("%q: %v %+v", action, err, res)
		}
		wantLink := map[string]any{"url": "https://pay.example/webhooks/R/payment-link/t0ken", "event": "webhook:payment-link"}
		if !equalJSON(link, wantLink) {
			t.Errorf("payment link %v, want %v", link, wantLink)
		}
		want := map[string]any{"chargeId": "ch-R", "amount": 138.9, "currency": "EUR"}
		if action == "declined" {
			want = map[string]any{"cancelled": "A-1001", "reason": "card expired"}
		}
		if !equalJSON(res.Output, want) {
			t.Errorf("%q: output %v, want %v", action, res.Output, want)
		}
	}
	// Without webhook endpoints (stepflow run --local) the webhook fails.
	res, err := w.Run(context.Background(), in, workflow.RunOptions{RunID: "R"})
	if err != nil || res.Status != workflow.RunFailed || res.Errors[0].NodeID != "payment-link" {
		t.Errorf("without endpoints: %v %+v", err, res)
	}
}

func equalJSON(a, b any) bool {
	return reflect.DeepEqual(workflow.Normalize(a), workflow.Normalize(b))
}
