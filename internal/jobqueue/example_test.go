package jobqueue_test

import (
	"context"
	"log"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
)

// Enqueue a job the way the client and the reconciler do: on a confirm-mode
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
	if err := jobqueue.DeclareTopology(ch, jobqueue.DefaultQueue); err != nil {
		log.Fatal(err)
	}
	job := jobqueue.Job{RunID: "run-42", BlueprintID: "order", NodeID: "charge", Attempt: 1}
	// Runs in 5 minutes, through the delay queues.
	if err := jobqueue.Publish(context.Background(), ch, jobqueue.DefaultQueue, job, 5*time.Minute); err != nil {
		log.Fatal(err)
	}
}
