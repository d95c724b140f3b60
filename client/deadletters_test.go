package client_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/bridge"
	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

// refusal is the reason the test's function gives the jobs it refuses.
const refusal = inprocess.Refusal

type refuser = inprocess.Refuser

func setupRefusing(t *testing.T) (*testBundle, *refuser) {
	t.Helper()
	r := &refuser{}
	tb := setup(t, inprocess.Options{
		Handler: r.Wrap,
		Bridge:  func(c *bridge.Config) { c.BatchSize = 1 },
	})
	return tb, r
}

// startRefused starts a run whose start job is dead-lettered, and waits
// until the reconciler has recorded it and failed the run.
func (tb *testBundle) startRefused(r *refuser, runID string) {
	tb.t.Helper()
	r.RefuseOnce(runID)
	tb.start(decode(tb.t, greet), map[string]any{"name": runID}, client.StartOptions{RunID: runID})
	res := tb.wait(runID)
	if res.Status != workflow.RunFailed || len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Message, refusal) || res.Errors[0].NodeID != "hello" {
		tb.t.Fatalf("run %s after its start job was refused: %s %+v, want failed at hello with the refusal", runID, res.Status, res.Errors)
	}
}

func (tb *testBundle) deadLetters(f client.DeadLetterFilter) []client.DeadLetter {
	tb.t.Helper()
	dls, err := tb.client.DeadLetters(tb.ctx, f)
	if err != nil {
		tb.t.Fatalf("DeadLetters(%+v): %v", f, err)
	}
	return dls
}

func runsOf(dls []client.DeadLetter) []string {
	out := []string{}
	for _, dl := range dls {
		out = append(out, dl.RunID)
	}
	return out
}

func TestDeadLettersListFilterAndReplay(t *testing.T) {
	t.Parallel()
	tb, r := setupRefusing(t)
	tb.startRefused(r, "first")
	tb.startRefused(r, "second")
	healthy := tb.start(decode(t, greet), map[string]any{"name": "Ada"}, client.StartOptions{RunID: "healthy"})
	tb.wait(healthy)

	all := tb.deadLetters(client.DeadLetterFilter{})
	if got := runsOf(all); !slices.Equal(got, []string{"first", "second"}) {
		t.Fatalf("dead letters of runs %v, want first and second, oldest first", got)
	}
	dl := all[0]
	var job map[string]any
	if err := json.Unmarshal(dl.Body, &job); err != nil || job["runId"] != "first" || job["nodeId"] != "hello" {
		t.Errorf("dead letter body %q (%v), want first's hello job", dl.Body, err)
	}
	if dl.ID == 0 || dl.DeadLetterID == "" || dl.MessageID != "first:hello:1" || dl.NodeID != "hello" || dl.BlueprintID != "greet" ||
		dl.Code != "400" || dl.Reason != refusal || dl.Attempts != 1 || dl.JobAttempt != 1 || dl.At.IsZero() || dl.ReplayedAt != nil {
		t.Errorf("dead letter %+v, want first's hello job (attempt 1), 400 %q after 1 attempt, not replayed", dl, refusal)
	}

	if got := runsOf(tb.deadLetters(client.DeadLetterFilter{RunID: "second"})); !slices.Equal(got, []string{"second"}) {
		t.Errorf("filtered by run second: %v", got)
	}
	if got := tb.deadLetters(client.DeadLetterFilter{RunID: healthy}); got == nil || len(got) != 0 {
		t.Errorf("filtered by a run with none: %#v, want an empty list", got)
	}
	if got := runsOf(tb.deadLetters(client.DeadLetterFilter{Limit: 1})); !slices.Equal(got, []string{"first"}) {
		t.Errorf("limited to 1: %v, want the oldest", got)
	}
	if got := runsOf(tb.deadLetters(client.DeadLetterFilter{Limit: 1, AfterID: dl.ID})); !slices.Equal(got, []string{"second"}) {
		t.Errorf("limited to 1 after the first: %v, want the next page, second", got)
	}

	// Replaying one run re-drives it from the step that was refused.
	rep, err := tb.client.ReplayDeadLetters(tb.ctx, "first")
	if err != nil {
		t.Fatalf("replay first: %v", err)
	}
	if want := (client.Replayed{Runs: []string{"first"}, Jobs: 1}); !reflect.DeepEqual(rep, want) {
		t.Errorf("replay first: %+v, want %+v", rep, want)
	}
	if res := tb.wait("first"); res.Status != workflow.RunCompleted || res.Output != "HELLO, FIRST" {
		t.Errorf("first after replay: %s %v, want completed with HELLO, FIRST", res.Status, res.Output)
	}
	if got := runsOf(tb.deadLetters(client.DeadLetterFilter{})); !slices.Equal(got, []string{"second"}) {
		t.Errorf("unreplayed dead letters of %v, want second's only", got)
	}
	withReplayed := tb.deadLetters(client.DeadLetterFilter{Replayed: true})
	if got := runsOf(withReplayed); !slices.Equal(got, []string{"first", "second"}) || withReplayed[0].ReplayedAt == nil || withReplayed[1].ReplayedAt != nil {
		t.Errorf("with the replayed ones: %+v, want first (replayed) and second", withReplayed)
	}

	// Replaying every run takes what is left.
	rep, err = tb.client.ReplayDeadLetters(tb.ctx, "")
	if err != nil {
		t.Fatalf("replay all: %v", err)
	}
	if want := (client.Replayed{Runs: []string{"second"}, Jobs: 1}); !reflect.DeepEqual(rep, want) {
		t.Errorf("replay all: %+v, want %+v", rep, want)
	}
	if res := tb.wait("second"); res.Status != workflow.RunCompleted {
		t.Errorf("second after replay: %s, want completed", res.Status)
	}
	if got := tb.deadLetters(client.DeadLetterFilter{}); len(got) != 0 {
		t.Errorf("dead letters left after replaying all: %+v", got)
	}
}

func TestReplayLeavesGarbageUnplayable(t *testing.T) {
	t.Parallel()
	tb, _ := setupRefusing(t)
	// A foreign publisher's message that is no job: the function answers
	// 400, the bridge dead-letters it, the reconciler records it.
	ch, err := testenv.RabbitMQ(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	testenv.PublishConfirmed(t, ch, tb.stack.Queue,
		amqp.Publishing{ContentType: "application/json", Body: []byte(`{"hello": "world"}`)})
	var dls []client.DeadLetter
	testenv.Eventually(t, 20*time.Second, "the garbage to be recorded as a dead letter", func() bool {
		dls = tb.deadLetters(client.DeadLetterFilter{})
		return len(dls) == 1
	})
	if dl := dls[0]; dl.RunID != "" || dl.Code != "400" || string(dl.Body) != `{"hello": "world"}` {
		t.Errorf("garbage recorded as %+v (body %q), want no run, 400 and the body", dl, dl.Body)
	}
	rep, err := tb.client.ReplayDeadLetters(tb.ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := (client.Replayed{Unplayable: []string{dls[0].DeadLetterID}}); !reflect.DeepEqual(rep, want) {
		t.Errorf("replay: %+v, want %+v", rep, want)
	}
}

// The JSON of a dead letter is what `stepflow dlq list --json` prints:
// its field names do not change.
func TestDeadLetterJSON(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	full := client.DeadLetter{
		ID: 7, DeadLetterID: "d", MessageID: "r:n:1", RunID: "r", NodeID: "n", BlueprintID: "b",
		Body: []byte(`{}`), Headers: map[string]any{"x-error-code": "400"}, Code: "400", Reason: "why",
		Attempts: 2, JobAttempt: 1, FirstFailure: &at, At: at, ReplayedAt: &at,
	}
	for _, tc := range []struct {
		dl   client.DeadLetter
		keys []string
	}{
		{full, []string{"attempts", "blueprintId", "deadLetterId", "deadLetteredAt", "errorCode", "errorReason", "firstFailure", "headers", "id", "jobAttempt", "messageId", "nodeId", "replayedAt", "runId"}},
		{client.DeadLetter{}, []string{"attempts", "deadLetterId", "deadLetteredAt", "errorCode", "errorReason", "id", "jobAttempt"}},
	} {
		b, err := json.Marshal(tc.dl)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if !slices.Equal(keys, tc.keys) {
			t.Errorf("JSON %s has keys %v, want %v", b, keys, tc.keys)
		}
	}
}
