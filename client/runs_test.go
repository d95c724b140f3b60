package client_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

func (tb *testBundle) runs(f client.RunFilter) client.RunList {
	tb.t.Helper()
	list, err := tb.client.Runs(tb.ctx, f)
	if err != nil {
		tb.t.Fatalf("Runs(%+v): %v", f, err)
	}
	return list
}

func summaryIDs(list client.RunList) []string {
	out := []string{}
	for _, r := range list.Runs {
		out = append(out, r.RunID)
	}
	return out
}

func TestRunsListsNewestFirstAPageAtATime(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	greetBP, napBP := decode(t, greet), decode(t, nap)
	for _, id := range []string{"g1", "g2", "g3"} {
		tb.wait(tb.start(greetBP, map[string]any{"name": id}, client.StartOptions{RunID: id}))
	}
	tb.start(napBP, nil, client.StartOptions{RunID: "n1"})

	all := tb.runs(client.RunFilter{})
	if got := summaryIDs(all); !slices.Equal(got, []string{"n1", "g3", "g2", "g1"}) || all.Continue != "" {
		t.Fatalf("all runs %v (continue %q), want n1 g3 g2 g1 in one page", got, all.Continue)
	}
	g3, n1 := all.Runs[1], all.Runs[0]
	if g3.BlueprintID != "greet" || g3.Status != workflow.RunCompleted || g3.FinishedAt == nil || g3.CreatedAt.IsZero() ||
		g3.UpdatedAt.Before(g3.CreatedAt) || g3.DurationMs <= 0 || g3.Error != "" {
		t.Errorf("g3 listed as %+v, want greet completed with its times", g3)
	}
	if n1.Status != workflow.RunRunning || n1.FinishedAt != nil || n1.DurationMs <= 0 {
		t.Errorf("n1 listed as %+v, want running, unfinished, its age as duration", n1)
	}

	// Pages of two, each token leading to the next.
	var pages [][]string
	f := client.RunFilter{Limit: 2}
	for {
		page := tb.runs(f)
		pages = append(pages, summaryIDs(page))
		if page.Continue == "" {
			break
		}
		f.Continue = page.Continue
	}
	if fmt.Sprint(pages) != "[[n1 g3] [g2 g1]]" {
		t.Errorf("pages of two: %v, want [[n1 g3] [g2 g1]]", pages)
	}

	for _, tc := range []struct {
		filter client.RunFilter
		want   []string
	}{
		{client.RunFilter{Status: workflow.RunRunning}, []string{"n1"}},
		{client.RunFilter{Status: workflow.RunCompleted, Limit: 1}, []string{"g3"}},
		{client.RunFilter{BlueprintID: "greet"}, []string{"g3", "g2", "g1"}},
		{client.RunFilter{BlueprintID: "nap", Status: workflow.RunCompleted}, []string{}},
	} {
		if got := summaryIDs(tb.runs(tc.filter)); !slices.Equal(got, tc.want) {
			t.Errorf("Runs(%+v): %v, want %v", tc.filter, got, tc.want)
		}
	}

	// What does not parse is refused, naming the problem.
	token := tb.runs(client.RunFilter{Limit: 1}).Continue
	for _, tc := range []struct {
		filter client.RunFilter
		want   string
	}{
		{client.RunFilter{Status: "complete"}, `status "complete"`},
		{client.RunFilter{Limit: -1}, "limit -1"},
		{client.RunFilter{Limit: client.MaxRunsLimit + 1}, "limit 1001"},
		{client.RunFilter{Continue: "garbage!"}, "continue token"},
		{client.RunFilter{Continue: token, Status: workflow.RunFailed}, "made for the filter"},
	} {
		_, err := tb.client.Runs(tb.ctx, tc.filter)
		if !errors.Is(err, client.ErrInvalid) || !strings.Contains(fmt.Sprint(err), tc.want) {
			t.Errorf("Runs(%+v): %v, want client.ErrInvalid saying %q", tc.filter, err, tc.want)
		}
	}
}

func TestBlueprintReadsTheSnapshotStoredLast(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	if _, err := tb.client.Blueprint(tb.ctx, "greet"); !errors.Is(err, client.ErrBlueprintNotFound) || !strings.Contains(err.Error(), "greet") {
		t.Fatalf("Blueprint before any run: %v, want client.ErrBlueprintNotFound naming greet", err)
	}
	tb.wait(tb.start(decode(t, greet), map[string]any{"name": "Ada"}, client.StartOptions{}))
	v2 := decode(t, strings.Replace(greet, `"id": "greet",`, `"id": "greet", "metadata": {"version": "2"},`, 1))
	tb.wait(tb.start(v2, map[string]any{"name": "Ada"}, client.StartOptions{}))
	bp, err := tb.client.Blueprint(tb.ctx, "greet")
	if err != nil || bp.Version() != "2" || len(bp.Nodes) != 2 {
		t.Fatalf("Blueprint after runs of two versions: %+v, %v; want version 2", bp, err)
	}
}

// A client given the function's registry refuses, at Start, a node type
// the function does not serve; nothing is recorded.
func TestStartWithARegistryRefusesUnknownNodeTypes(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	c, err := client.New(tb.ctx, client.Config{PostgresURL: tb.stack.PostgresURL, AMQPURL: tb.stack.AMQPURL, Queue: tb.stack.Queue,
		Tables: tb.stack.Tables, Registry: workflow.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	bp := decode(t, `{"id": "odd", "nodes": [{"id": "a", "uses": "noop"}, {"id": "b", "uses": "frobnicate"}], "edges": [{"source": "a", "target": "b"}]}`)
	_, err = c.Start(tb.ctx, bp, nil, client.StartOptions{RunID: "odd-run"})
	var verr *workflow.ValidationError
	if !errors.Is(err, client.ErrInvalid) || !errors.As(err, &verr) || !strings.Contains(err.Error(), `nodes[1].uses: unknown node type "frobnicate"`) {
		t.Fatalf("Start with an unknown node type: %v, want client.ErrInvalid, a *workflow.ValidationError naming nodes[1].uses and frobnicate", err)
	}
	if _, err := c.Result(tb.ctx, "odd-run"); !errors.Is(err, client.ErrRunNotFound) {
		t.Errorf("after the refusal: %v, want no run recorded", err)
	}
	// Without a registry the same blueprint starts (and its job, which the
	// function cannot run, is dead-lettered later).
	if _, err := tb.client.Start(tb.ctx, bp, nil, client.StartOptions{}); err != nil {
		t.Errorf("Start without a registry: %v", err)
	}
}

func TestPingRabbitMQ(t *testing.T) {
	t.Parallel()
	tb := setup(t, inprocess.Options{})
	if err := tb.client.PingRabbitMQ(tb.ctx); err != nil {
		t.Errorf("PingRabbitMQ: %v", err)
	}
	c, err := client.New(tb.ctx, client.Config{PostgresURL: tb.stack.PostgresURL, AMQPURL: "amqp://guest:guest@127.0.0.1:1/", Queue: tb.stack.Queue, Tables: tb.stack.Tables})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.PingRabbitMQ(tb.ctx); err == nil || !strings.Contains(err.Error(), "RabbitMQ") {
		t.Errorf("PingRabbitMQ of a port nothing listens on: %v, want an error naming RabbitMQ", err)
	}
}
