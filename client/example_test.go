package client_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/internal/testenv/inprocess"
	"github.com/stepflow/stepflow/workflow"
)

// Connect to stepflow's PostgreSQL and RabbitMQ. Outside an example the
// services run as `stepflow dev` or one process each, and a client
// connects with the default queue and tables:
//
//	c, err := client.New(ctx, client.Config{
//		PostgresURL: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
//		AMQPURL:     "amqp://guest:guest@127.0.0.1:5672/",
//	})
//
// Here the services run in this process, over a queue and tables of the
// example's own.
func ExampleNew() {
	ctx := context.Background()
	services, err := inprocess.Start(ctx, inprocess.Options{})
	if err != nil {
		panic(err)
	}
	defer services.Close()

	c, err := client.New(ctx, client.Config{
		PostgresURL: services.PostgresURL,
		AMQPURL:     services.AMQPURL,
		Queue:       services.Queue,  // default "flowcraft-jobs"
		Tables:      services.Tables, // default schema.DefaultTables()
	})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	// New connects lazily; Ping says whether PostgreSQL answers.
	if err := c.Ping(ctx); err != nil {
		panic(err)
	}
	fmt.Println("connected")
	// Output: connected
}

// connect is ExampleNew's set-up, for the other examples: it returns the
// client and what stops the services.
func connect(ctx context.Context, o inprocess.Options) (*client.Client, func()) {
	services, err := inprocess.Start(ctx, o)
	if err != nil {
		panic(err)
	}
	c, err := client.New(ctx, client.Config{PostgresURL: services.PostgresURL, AMQPURL: services.AMQPURL, Queue: services.Queue, Tables: services.Tables})
	if err != nil {
		_ = services.Close()
		panic(err)
	}
	return c, func() { c.Close(); _ = services.Close() }
}

// Start a run of an inline blueprint, wait for it to finish and print its
// status, its steps and its output: what `stepflow start --wait` and
// `stepflow status` show.
func ExampleClient_Start() {
	ctx := context.Background()
	c, done := connect(ctx, inprocess.Options{}) // as in ExampleNew
	defer done()

	bp, err := workflow.Decode([]byte(`{"id": "greet", "nodes": [
	  {"id": "hello", "uses": "transform", "params": {"expression": "'hello, ' + input.name"}},
	  {"id": "shout", "uses": "transform", "params": {"expression": "upper(input)"}}
	], "edges": [{"source": "hello", "target": "shout"}]}`))
	if err != nil {
		panic(err)
	}
	// The input is the run's initial context, and the start node's input.
	runID, err := c.Start(ctx, bp, map[string]any{"name": "Ada"}, client.StartOptions{RunID: "greet-ada"})
	if err != nil {
		panic(err)
	}

	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := c.Wait(wctx, runID)
	if errors.Is(err, client.ErrTimeout) {
		fmt.Println("still running; ask again later with c.Result")
		return
	}
	if err != nil {
		panic(err)
	}
	fmt.Println("run", res.RunID, res.Status)
	for _, s := range res.Steps {
		fmt.Println(" ", s.NodeID, s.State, "after", s.Attempts, "attempt(s)")
	}
	fmt.Println("output:", res.Output)
	// Output:
	// run greet-ada completed
	//   hello succeeded after 1 attempt(s)
	//   shout succeeded after 1 attempt(s)
	// output: HELLO, ADA
}

// Read a run's status by id, whatever it is; an id that names no run is
// client.ErrRunNotFound.
func ExampleClient_Result() {
	ctx := context.Background()
	c, done := connect(ctx, inprocess.Options{}) // as in ExampleNew
	defer done()

	bp, err := workflow.Decode([]byte(`{"id": "nap", "nodes": [
	  {"id": "nap", "uses": "sleep", "params": {"duration": "1h"}}]}`))
	if err != nil {
		panic(err)
	}
	runID, err := c.Start(ctx, bp, nil, client.StartOptions{RunID: "nap-1"})
	if err != nil {
		panic(err)
	}
	res, err := c.Result(ctx, runID)
	if err != nil {
		panic(err)
	}
	fmt.Println("run", res.RunID, res.Status)

	_, err = c.Result(ctx, "no-such-run")
	fmt.Println(errors.Is(err, client.ErrRunNotFound), err)
	// Output:
	// run nap-1 running
	// true run no-such-run: run not found
}

// Cancel a run: no further step of it starts, and it ends cancelled.
// Cancelling a run that already finished leaves it as it was.
func ExampleClient_Cancel() {
	ctx := context.Background()
	c, done := connect(ctx, inprocess.Options{}) // as in ExampleNew
	defer done()

	bp, err := workflow.Decode([]byte(`{"id": "nap", "nodes": [
	  {"id": "nap", "uses": "sleep", "params": {"duration": "1h"}}]}`))
	if err != nil {
		panic(err)
	}
	runID, err := c.Start(ctx, bp, nil, client.StartOptions{RunID: "nap-2"})
	if err != nil {
		panic(err)
	}
	status, err := c.Cancel(ctx, runID)
	if err != nil {
		panic(err)
	}
	fmt.Println("cancel:", status)

	res, err := c.Wait(ctx, runID)
	if err != nil {
		panic(err)
	}
	fmt.Println("run", res.RunID, res.Status)
	// Output:
	// cancel: cancelled
	// run nap-2 cancelled
}

// A job the step function cannot take is dead-lettered by the bridge; the
// reconciler records it and fails its run with the reason. Here the
// function does not know the blueprint's node type yet. Once it does (a
// new deployment, here a registration), replaying the run's dead letters
// resumes it from the step that failed.
func ExampleClient_DeadLetters() {
	ctx := context.Background()
	// The function's node types: the built-ins only, for now.
	nodes := workflow.NewRegistry()
	c, done := connect(ctx, inprocess.Options{Registry: nodes}) // as in ExampleNew
	defer done()

	bp, err := workflow.Decode([]byte(`{"id": "report", "nodes": [
	  {"id": "render", "uses": "render"}]}`))
	if err != nil {
		panic(err)
	}
	runID, err := c.Start(ctx, bp, map[string]any{"title": "Q3"}, client.StartOptions{RunID: "report-q3"})
	if err != nil {
		panic(err)
	}
	res, err := c.Wait(ctx, runID)
	if err != nil {
		panic(err)
	}
	fmt.Println("run", res.RunID, res.Status)

	dls, err := c.DeadLetters(ctx, client.DeadLetterFilter{RunID: runID})
	if err != nil {
		panic(err)
	}
	for _, dl := range dls {
		fmt.Println("dead letter: node", dl.NodeID, "answered HTTP", dl.Code)
	}

	nodes.Register("render", func(_ context.Context, in workflow.NodeInput) (workflow.NodeResult, error) {
		return workflow.NodeResult{Output: fmt.Sprintf("report %v", in.Input.(map[string]any)["title"])}, nil
	})
	replayed, err := c.ReplayDeadLetters(ctx, runID)
	if err != nil {
		panic(err)
	}
	fmt.Println("replayed runs", replayed.Runs, "jobs", replayed.Jobs)
	if res, err = c.Wait(ctx, runID); err != nil {
		panic(err)
	}
	fmt.Println("run", res.RunID, res.Status, "output:", res.Output)
	// Output:
	// run report-q3 failed
	// dead letter: node render answered HTTP 422
	// replayed runs [report-q3] jobs 1
	// run report-q3 completed output: report Q3
}
