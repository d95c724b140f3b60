package client_test

// setup(t) gives each test stepflow's services in-process (a step
// function, a bridge and a reconciler over tables, a queue and a Redis
// prefix of the test's own: internal/testenv/inprocess) and a client of
// them, so runs started by the test really run.

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

type testBundle struct {
	t      *testing.T
	ctx    context.Context // bounds every call of a test
	stack  *inprocess.Stack
	client *client.Client
}

func setup(t *testing.T, o inprocess.Options) *testBundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	s := inprocess.ForTest(t, o)
	c, err := client.New(ctx, client.Config{PostgresURL: s.PostgresURL, AMQPURL: s.AMQPURL, Queue: s.Queue, Tables: s.Tables})
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(c.Close)
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	return &testBundle{t: t, ctx: ctx, stack: s, client: c}
}

func decode(t *testing.T, src string) *workflow.Blueprint {
	t.Helper()
	bp, err := workflow.Decode([]byte(src))
	if err != nil {
		t.Fatalf("decode blueprint: %v\n%s", err, src)
	}
	return bp
}

// greet: two built-in transforms, the second fed by the first.
const greet = `{"id": "greet", "nodes": [
  {"id": "hello", "uses": "transform", "params": {"expression": "'hello, ' + input.name"}},
  {"id": "shout", "uses": "transform", "params": {"expression": "upper(input)"}}
], "edges": [{"source": "hello", "target": "shout"}]}`

// nap sleeps far longer than any test waits.
const nap = `{"id": "nap", "nodes": [{"id": "nap", "uses": "sleep", "params": {"duration": "1h"}}]}`

func (tb *testBundle) start(bp *workflow.Blueprint, input map[string]any, opts client.StartOptions) string {
	tb.t.Helper()
	id, err := tb.client.Start(tb.ctx, bp, input, opts)
	if err != nil {
		tb.t.Fatalf("start %s: %v", bp.ID, err)
	}
	return id
}

func (tb *testBundle) wait(runID string) *workflow.RunResult {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	res, err := tb.client.Wait(ctx, runID)
	if err != nil {
		cur, _ := tb.client.Result(tb.ctx, runID)
		tb.t.Fatalf("wait for %s: %v; now %+v", runID, err, cur)
	}
	return res
}

func TestStartRunsToCompletion(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	runID := tb.start(decode(t, greet), map[string]any{"name": "Ada"}, client.StartOptions{RunID: "greet-ada"})
	if runID != "greet-ada" {
		t.Errorf("Start returned run id %q, want the one asked for", runID)
	}
	res := tb.wait(runID)
	if res.RunID != runID || res.BlueprintID != "greet" || res.Status != workflow.RunCompleted || res.Output != "HELLO, ADA" || len(res.Errors) != 0 {
		t.Errorf("result %+v, want run greet-ada of greet completed with output HELLO, ADA", res)
	}
	var steps []string
	for _, s := range res.Steps {
		steps = append(steps, fmt.Sprintf("%s:%s:%s:%d", s.NodeID, s.Uses, s.State, s.Attempts))
		if s.StartedAt == nil || s.FinishedAt == nil {
			t.Errorf("step %s has no start or finish time", s.NodeID)
		}
	}
	if want := []string{"hello:transform:succeeded:1", "shout:transform:succeeded:1"}; !reflect.DeepEqual(steps, want) {
		t.Errorf("steps %v, want %v (in blueprint order)", steps, want)
	}
	if got := res.Context["name"]; got != "Ada" {
		t.Errorf("context name %v, want the input's Ada", got)
	}

	// Result reads the same finished run again.
	again, err := tb.client.Result(tb.ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, res) {
		t.Errorf("Result after the run finished\n%+v\nwant what Wait returned\n%+v", again, res)
	}
}

func TestStartNamesARunWithAUUIDByDefault(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	runID := tb.start(decode(t, greet), map[string]any{"name": "Grace"}, client.StartOptions{})
	if _, err := uuid.Parse(runID); err != nil {
		t.Errorf("run id %q is not a UUID: %v", runID, err)
	}
	if res := tb.wait(runID); res.Output != "HELLO, GRACE" {
		t.Errorf("output %v, want HELLO, GRACE", res.Output)
	}
}

func TestUnknownRunIsNamedInTheError(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	runID := "no-such-run-" + testenv.RandomHex(4)
	_, resultErr := tb.client.Result(tb.ctx, runID)
	_, waitErr := tb.client.Wait(tb.ctx, runID)
	_, cancelErr := tb.client.Cancel(tb.ctx, runID)
	for name, err := range map[string]error{"Result": resultErr, "Wait": waitErr, "Cancel": cancelErr} {
		if !errors.Is(err, client.ErrRunNotFound) || !strings.Contains(fmt.Sprint(err), runID) {
			t.Errorf("%s of an unknown run: %v, want client.ErrRunNotFound naming %s", name, err, runID)
		}
	}
}

func TestStartRefusesATakenRunID(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	bp := decode(t, greet)
	runID := tb.start(bp, map[string]any{"name": "Ada"}, client.StartOptions{RunID: "twice"})
	_, err := tb.client.Start(tb.ctx, bp, map[string]any{"name": "Bob"}, client.StartOptions{RunID: runID})
	if !errors.Is(err, client.ErrRunExists) || !strings.Contains(fmt.Sprint(err), runID) {
		t.Errorf("second Start of %s: %v, want client.ErrRunExists naming the run", runID, err)
	}
	// The first run is untouched: its input is still Ada.
	if res := tb.wait(runID); res.Output != "HELLO, ADA" {
		t.Errorf("first run's output %v after the refused second start, want HELLO, ADA", res.Output)
	}
}

func TestStartRefusesBadInput(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	good := decode(t, greet)
	for _, tc := range []struct {
		name  string
		bp    *workflow.Blueprint
		input map[string]any
		runID string
		want  []string // what the error says
	}{
		{name: "no blueprint", want: []string{"no blueprint"}},
		{
			name: "edge to a missing node",
			bp: decode(t, `{"id": "broken", "nodes": [{"id": "a", "uses": "noop"}],
			  "edges": [{"source": "a", "target": "ghost"}]}`),
			want: []string{`blueprint "broken" is invalid`, "edges[0]", "ghost"},
		},
		{name: "input that is not JSON", bp: good, input: map[string]any{"f": func() {}}, runID: "not-json", want: []string{"input", "func"}},
		{name: "run id too long", bp: good, runID: strings.Repeat("r", 600), want: []string{"runId", "600 bytes"}},
		{name: "run id with a NUL byte", bp: good, runID: "nul\x00id", want: []string{"runId", "NUL"}},
		{name: "run id not UTF-8", bp: good, runID: "bad\xffid", want: []string{"runId", "UTF-8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tb.client.Start(tb.ctx, tc.bp, tc.input, client.StartOptions{RunID: tc.runID})
			if err == nil {
				t.Fatalf("Start succeeded (run %q), want an error saying %q", id, tc.want)
			}
			if !errors.Is(err, client.ErrInvalid) {
				t.Errorf("error %q is not client.ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if tc.runID != "" && !strings.Contains(tc.runID, "\x00") && utf8.ValidString(tc.runID) {
				if _, err := tb.client.Result(tb.ctx, tc.runID); !errors.Is(err, client.ErrRunNotFound) {
					t.Errorf("after the refused Start, Result(%.20s…): %v, want client.ErrRunNotFound (nothing recorded)", tc.runID, err)
				}
			}
		})
	}
}

func TestCancelStopsARun(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	runID := tb.start(decode(t, nap), nil, client.StartOptions{})
	status, err := tb.client.Cancel(tb.ctx, runID)
	if err != nil || status != workflow.RunCancelled {
		t.Fatalf("Cancel: %s, %v; want cancelled", status, err)
	}
	res := tb.wait(runID)
	if res.Status != workflow.RunCancelled || len(res.Errors) != 1 || res.Errors[0].Message != "cancelled" {
		t.Errorf("cancelled run reads %s with errors %+v, want cancelled with error cancelled", res.Status, res.Errors)
	}
	// Cancelling again, or a run that finished, says what it already was.
	if status, err := tb.client.Cancel(tb.ctx, runID); err != nil || status != workflow.RunCancelled {
		t.Errorf("second Cancel: %s, %v; want cancelled", status, err)
	}
	done := tb.start(decode(t, greet), map[string]any{"name": "Ada"}, client.StartOptions{})
	tb.wait(done)
	if status, err := tb.client.Cancel(tb.ctx, done); err != nil || status != workflow.RunCompleted {
		t.Errorf("Cancel of a completed run: %s, %v; want completed, left alone", status, err)
	}
}

func TestWaitGivesUpWithItsContext(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	runID := tb.start(decode(t, nap), nil, client.StartOptions{})
	// The nap has started once its step sleeps (its wake-up is queued).
	testenv.Eventually(t, 10*time.Second, "the nap step to sleep", func() bool {
		res, err := tb.client.Result(tb.ctx, runID)
		return err == nil && len(res.Steps) == 1 && res.Steps[0].State == workflow.StepSleeping
	})
	ctx, cancel := context.WithTimeout(tb.ctx, 100*time.Millisecond)
	defer cancel()
	res, err := tb.client.Wait(ctx, runID)
	if !errors.Is(err, client.ErrTimeout) || !strings.Contains(fmt.Sprint(err), runID) || res != nil {
		t.Errorf("Wait past its context: %+v, %v; want client.ErrTimeout naming %s", res, err, runID)
	}
	if res, err := tb.client.Result(tb.ctx, runID); err != nil || res.Status != workflow.RunRunning {
		t.Errorf("after Wait gave up the run reads %+v, %v; want it still running", res, err)
	}
}
