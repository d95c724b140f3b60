package client_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

func TestInspectReadsStepsWithTheirInputsAndOutputs(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	bp := decode(t, strings.Replace(greet, `"id": "greet",`, `"id": "greet", "metadata": {"version": "7"},`, 1))
	runID := tb.wait(tb.start(bp, map[string]any{"name": "Ada"}, client.StartOptions{RunID: "inspected"})).RunID

	d, err := tb.client.Inspect(tb.ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	r := d.Run
	if r.RunID != "inspected" || r.BlueprintID != "greet" || r.BlueprintVersion != "7" || r.Status != workflow.RunCompleted || r.FinishedAt == nil || r.DurationMs <= 0 {
		t.Errorf("run %+v, want inspected of greet version 7, completed, with its times", r)
	}
	if r.Steps == nil || *r.Steps != (client.StepCounts{Finished: 2, Total: 2}) {
		t.Errorf("step counts %+v, want 2 of 2 finished", r.Steps)
	}
	if d.Blueprint == nil || d.Blueprint.ID != "greet" || len(d.Blueprint.Nodes) != 2 {
		t.Errorf("blueprint %+v, want the run's snapshot of greet", d.Blueprint)
	}
	if d.Output != "HELLO, ADA" || d.Context["name"] != "Ada" || d.Context["_outputs.shout"] != "HELLO, ADA" {
		t.Errorf("output %v and context %v, want HELLO, ADA and the completed run's context", d.Output, d.Context)
	}
	if len(d.Steps) != 2 {
		t.Fatalf("steps %+v, want hello and shout", d.Steps)
	}
	hello, shout := d.Steps[0], d.Steps[1]
	if hello.NodeID != "hello" || hello.Uses != "transform" || hello.State != workflow.StepSucceeded || hello.Attempts != 1 ||
		hello.Output != "hello, Ada" || !slices.Equal(hello.Taken, []string{"shout"}) || hello.ReadyAt.IsZero() || hello.StartedAt == nil {
		t.Errorf("hello %+v, want a succeeded transform with output hello, Ada that took the edge to shout", hello)
	}
	if in, _ := hello.Input.(map[string]any); in["name"] != "Ada" {
		t.Errorf("hello's input %v, want the run's input", hello.Input)
	}
	if shout.NodeID != "shout" || shout.Input != "hello, Ada" || shout.Output != "HELLO, ADA" || shout.ReadyAt.Before(hello.ReadyAt) {
		t.Errorf("shout %+v, want input hello, Ada and output HELLO, ADA, made ready after hello", shout)
	}

	if _, err := tb.client.Inspect(tb.ctx, "ghost"); !errors.Is(err, client.ErrRunNotFound) {
		t.Errorf("Inspect of an unknown run: %v, want ErrRunNotFound", err)
	}
}

func TestRunsWithProgressAndAPrefix(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	tb.wait(tb.start(decode(t, greet), map[string]any{"name": "a"}, client.StartOptions{RunID: "order-1"}))
	tb.wait(tb.start(decode(t, greet), map[string]any{"name": "b"}, client.StartOptions{RunID: "order-2"}))
	tb.start(decode(t, nap), nil, client.StartOptions{RunID: "other-1"})

	list := tb.runs(client.RunFilter{Progress: true})
	byID := map[string]client.RunSummary{}
	for _, r := range list.Runs {
		byID[r.RunID] = r
	}
	if s := byID["order-1"].Steps; s == nil || *s != (client.StepCounts{Finished: 2, Total: 2}) {
		t.Errorf("order-1's steps %+v, want 2 of 2", s)
	}
	// The sleeping nap has its one step, not finished.
	if s := byID["other-1"].Steps; s == nil || *s != (client.StepCounts{Finished: 0, Total: 1}) {
		t.Errorf("other-1's steps %+v, want 0 of 1", s)
	}
	if plain := tb.runs(client.RunFilter{}); plain.Runs[0].Steps != nil {
		t.Errorf("a listing without Progress has steps %+v", plain.Runs[0].Steps)
	}

	page := tb.runs(client.RunFilter{RunIDPrefix: "order-", Limit: 1})
	if got := summaryIDs(page); !slices.Equal(got, []string{"order-2"}) || page.Continue == "" {
		t.Fatalf("runs with prefix order-, a page of one: %v (continue %q), want order-2 and a token", got, page.Continue)
	}
	next := tb.runs(client.RunFilter{RunIDPrefix: "order-", Limit: 1, Continue: page.Continue})
	if got := summaryIDs(next); !slices.Equal(got, []string{"order-1"}) {
		t.Errorf("second page with prefix order-: %v, want order-1", got)
	}
	if _, err := tb.client.Runs(tb.ctx, client.RunFilter{Continue: page.Continue}); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("the prefix's token without the prefix: %v, want ErrInvalid", err)
	}
	if got := summaryIDs(tb.runs(client.RunFilter{RunIDPrefix: "order-%"})); len(got) != 0 {
		t.Errorf("prefix order-%% (no LIKE pattern): %v, want none", got)
	}
	if !slices.Contains(client.RunStatuses(), workflow.RunRunning) {
		t.Errorf("RunStatuses() = %v, want running among them", client.RunStatuses())
	}
}
