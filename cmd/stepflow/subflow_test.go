package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

// On the stack, status of a parent lists its child runs (id and
// blueprint), status of a child names its parent, and cancel of the
// parent cancels the child.
func TestSubflowStatusAndCancel(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	children := filepath.Join(dir, "children")
	if err := os.Mkdir(children, 0o755); err != nil {
		t.Fatal(err)
	}
	// The child sleeps an hour: the parent waits on it, holding nothing.
	write("children/napper.json", `{"id": "napper", "nodes": [{"id": "nap", "uses": "sleep", "params": {"duration": "1h"}}]}`)
	parent := write("parent.json", `{"id": "waiter", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "napper"}}]}`)

	s := inprocess.ForTest(t, inprocess.Options{Registry: registry(), BlueprintsDir: children})
	run := stackCLI(t, s)
	// A child found neither in --blueprints nor stored is refused, named.
	missing := write("missing.json", `{"id": "lost", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "nowhere"}}]}`)
	if code, msg := run("start", missing, "--blueprints", children); code != 2 || !strings.Contains(msg, `nodes[0].params.blueprintId: no blueprint "nowhere" among those given (napper)`) {
		t.Errorf("start of a blueprint whose child is missing: exit %d %s; want 2, naming it", code, msg)
	}
	if code, msg := run("start", parent, "--blueprints", children, "--run-id", "p-1"); code != 0 {
		t.Fatalf("start: exit %d %s", code, msg)
	}
	childID := workflow.ChildRunID("p-1", "sub", 1)
	c, err := client.New(context.Background(), client.Config{PostgresURL: s.PostgresURL, AMQPURL: s.AMQPURL, Queue: s.Queue, Tables: s.Tables})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testenv.Eventually(t, 20*time.Second, "the child to sleep", func() bool {
		res, err := c.Result(context.Background(), childID)
		return err == nil && len(res.Steps) == 1 && res.Steps[0].State == workflow.StepSleeping
	})

	// Stored by the child's run, napper is found where --blueprints lacks it.
	others := filepath.Join(dir, "others")
	if err := os.Mkdir(others, 0o755); err != nil {
		t.Fatal(err)
	}
	write("others/unrelated.json", `{"id": "unrelated", "nodes": [{"id": "x", "uses": "noop"}]}`)
	if code, msg := run("start", parent, "--blueprints", others, "--run-id", "p-2"); code != 0 {
		t.Errorf("start with a child only stored: exit %d %s; want it started", code, msg)
	}

	code, out := run("status", "p-1")
	if code != 0 || !strings.Contains(out, "status running") || !strings.Contains(out, "child runs:") ||
		!strings.Contains(out, childID+"  napper     sub   running") || !strings.Contains(out, "awaiting_child") {
		t.Errorf("status of the parent: exit %d\n%s\nwant it running, sub awaiting_child, and its child %s listed", code, out, childID)
	}
	code, out = run("status", childID)
	if code != 0 || !strings.Contains(out, "blueprint napper") || !strings.Contains(out, "parent: run p-1  blueprint waiter  step sub  status running") {
		t.Errorf("status of the child: exit %d\n%s\nwant its parent named", code, out)
	}
	// status --json prints the client's result, which links them too.
	if res, err := c.Result(context.Background(), "p-1"); err != nil || len(res.Children) != 1 ||
		res.Children[0] != (workflow.RunLink{RunID: childID, BlueprintID: "napper", Step: "sub", Status: workflow.RunRunning}) {
		t.Errorf("the parent's result: %+v, %v; want its child linked", res, err)
	}

	if code, out := run("cancel", "p-1"); code != 0 || !strings.Contains(out, "run p-1 cancelled") {
		t.Fatalf("cancel: exit %d %s", code, out)
	}
	res, err := c.Result(context.Background(), childID)
	if err != nil || res.Status != workflow.RunCancelled {
		t.Fatalf("the child after its parent's cancel: %+v, %v; want cancelled", res, err)
	}
	if code, out := run("status", "p-1"); !strings.Contains(out, childID+"  napper     sub   cancelled") {
		t.Errorf("status after cancel: exit %d\n%s\nwant the child cancelled", code, out)
	}
}

// start --wait of a parent whose child pauses returns at awaiting, and
// resume of the parent's subflow node goes to the child, whose end
// completes the parent.
func TestSubflowStartWaitReturnsAtTheChildsPause(t *testing.T) {
	dir := t.TempDir()
	children := filepath.Join(dir, "children")
	if err := os.Mkdir(children, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(children, "asker.json"), []byte(`{"id": "asker", "nodes": [{"id": "ask", "uses": "wait"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(dir, "parent.json")
	if err := os.WriteFile(parent, []byte(`{"id": "asking", "nodes": [{"id": "sub", "uses": "subflow", "params": {"blueprintId": "asker"}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := inprocess.ForTest(t, inprocess.Options{Registry: registry(), BlueprintsDir: children})
	run := stackCLI(t, s)
	// start --wait returns (exit 0) only once the run completed or awaits.
	if code, out := run("start", parent, "--blueprints", children, "--run-id", "ask-1", "--wait", "--timeout", "30s"); code != 0 {
		t.Fatalf("start --wait: exit %d %s; want 0", code, out)
	}
	if code, out := run("status", "ask-1"); code != 0 || !strings.Contains(out, "status awaiting") || !strings.Contains(out, "awaiting: sub (stepflow resume ask-1 --node sub") {
		t.Fatalf("status after start --wait: exit %d\n%s\nwant awaiting at sub", code, out)
	}
	if code, out := run("resume", "ask-1", "--node", "sub", "--output", `{"ok": true}`, "--wait", "--timeout", "30s"); code != 0 {
		t.Fatalf("resume --wait through the parent: exit %d %s; want 0", code, out)
	}
	if code, out := run("status", "ask-1"); code != 0 || !strings.Contains(out, "status completed") {
		t.Fatalf("status after the resume: exit %d\n%s\nwant completed", code, out)
	}
}
