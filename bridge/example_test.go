package bridge_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/bridge"
)

// Run a bridge until SIGTERM: it drains in-flight deliveries before returning.
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

// Enqueue a job the way clients and the reconciler do: on a confirm-mode
// channel, after declaring the topology.
func ExamplePublish() {
	conn, err := amqp.Dial("amqp://guest:guest@127.0.0.1:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		log.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		log.Fatal(err)
	}
	if err := bridge.DeclareTopology(ch, bridge.DefaultQueue); err != nil {
		log.Fatal(err)
	}
	job := bridge.Job{RunID: "run-42", BlueprintID: "order", NodeID: "charge", Attempt: 1}
	// Runs in 5 minutes, through the delay queues.
	if err := bridge.Publish(context.Background(), ch, bridge.DefaultQueue, job, 5*time.Minute); err != nil {
		log.Fatal(err)
	}
}
