package testenv

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// RabbitMQ connects to RabbitMQURL and closes the connection when the test
// ends. The test fails at once when the broker does not answer.
func RabbitMQ(t testing.TB) *amqp.Connection {
	t.Helper()
	conn, err := amqp.DialConfig(RabbitMQURL(), amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		t.Fatalf("RabbitMQ at %s does not answer: %v (set RABBITMQ_URL)", RabbitMQURL(), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// DeleteQueues deletes queues (a test's topology: jobqueue.TopologyQueues),
// whatever they hold, failing the test (not at once) for each it cannot
// delete. For t.Cleanup, once nothing consumes them any more.
func DeleteQueues(t testing.TB, conn *amqp.Connection, queues ...string) {
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("cleanup: open channel: %v", err)
		return
	}
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			t.Errorf("cleanup: delete queue %s: %v", q, err)
			// The error closed the channel; go on with another.
			if ch, err = conn.Channel(); err != nil {
				t.Errorf("cleanup: open channel: %v", err)
				return
			}
		}
	}
	_ = ch.Close()
}
