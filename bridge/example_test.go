package bridge_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepflow/stepflow/bridge"
)

// Run a bridge until SIGTERM: it drains in-flight deliveries before returning.
// Jobs reach its queue from client.Client, the reconciler, the function's
// replies, or the Flowcraft adapter.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	b, err := bridge.New(bridge.Config{
		AMQPURL:     "amqp://guest:guest@127.0.0.1:5672/",
		FunctionURL: "http://127.0.0.1:8080/",
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := b.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// A bridge for a function that takes one event per request (one built with
// func build): BatchSize 1 sends every job alone, in binary mode, and its
// metrics go to the process's registry.
func ExampleNew() {
	b, err := bridge.New(bridge.Config{
		AMQPURL:     "amqp://guest:guest@127.0.0.1:5672/",
		Queue:       bridge.DefaultQueue,
		FunctionURL: "http://order-steps.default.svc.cluster.local/",
		BatchSize:   1,
		Registerer:  prometheus.DefaultRegisterer,
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = b // b.Run(ctx) consumes until ctx is cancelled
}
