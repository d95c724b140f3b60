package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

// start --wait returns once the run awaits (exit 0), resume resumes it
// (and with --wait prints the finished run), and a second resume, an
// unknown run and an --output that is no JSON are refused.
func TestStartWaitAndResume(t *testing.T) {
	s := inprocess.ForTest(t, inprocess.Options{Registry: registry()})
	run := stackCLI(t, s)
	if code, msg := run("start", "../../examples/approval.json", "--input", "@../../examples/approval.input.json", "--run-id", "cli-1", "--wait", "--timeout", "20s"); code != 0 {
		t.Fatalf("start --wait: exit %d %s", code, msg)
	}
	c, err := client.New(context.Background(), client.Config{PostgresURL: s.PostgresURL, AMQPURL: s.AMQPURL, Queue: s.Queue, Tables: s.Tables})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if res, err := c.Result(context.Background(), "cli-1"); err != nil || res.Status != workflow.RunAwaiting {
		t.Fatalf("after start --wait: %+v, %v; want awaiting", res, err)
	}
	for _, tt := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"resume", "cli-1", "--node", "approve", "--output", "{bad"}, 2, "--output: not valid JSON"},
		{[]string{"resume", "cli-1"}, 2, "--node is required"},
		{[]string{"resume", "nope", "--node", "approve"}, 1, "run nope"},
		{[]string{"resume", "cli-1", "--node", "submit"}, 1, "not a wait node"},
		{[]string{"resume", "cli-1", "--node", "approve", "--output", `{"reviewer": "grace"}`, "--action", "approve", "--wait", "--timeout", "20s"}, 0, ""},
		{[]string{"resume", "cli-1", "--node", "approve", "--action", "reject"}, 1, "does not await"},
	} {
		if code, msg := run(tt.args...); code != tt.code || !strings.Contains(msg, tt.says) {
			t.Errorf("%v: exit %d %q; want %d with %q", tt.args, code, msg, tt.code, tt.says)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.Wait(ctx, "cli-1")
	if err != nil || res.Status != workflow.RunCompleted {
		t.Fatalf("after resume: %+v, %v", res, err)
	}
	if out, _ := res.Output.(map[string]any); out["approvedBy"] != "grace" {
		t.Errorf("output %v", res.Output)
	}
}

// run --local ends a run at its wait node with status awaiting, exit 0.
func TestRunLocalAwaits(t *testing.T) {
	r := newRoot()
	var out bytes.Buffer
	r.SetOut(&out)
	r.SetArgs([]string{"run", "--local", "../../examples/approval.json", "--input", "@../../examples/approval.input.json"})
	if err := r.Execute(); err != nil {
		t.Fatalf("run --local: %v", err)
	}
	if !strings.Contains(out.String(), `"status": "awaiting"`) || !strings.Contains(out.String(), `"state": "awaiting"`) {
		t.Errorf("output:\n%s", out.String())
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
