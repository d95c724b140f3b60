package testenv

import (
	"context"
	"errors"
	"fmt"
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
	for _, err := range removeQueues(conn, queues) {
		t.Errorf("cleanup: %v", err)
	}
}

// RemoveQueues is DeleteQueues for what has no testing.TB (an example): it
// returns what it could not delete.
func RemoveQueues(conn *amqp.Connection, queues ...string) error {
	return errors.Join(removeQueues(conn, queues)...)
}

func removeQueues(conn *amqp.Connection, queues []string) []error {
	ch, err := conn.Channel()
	if err != nil {
		return []error{fmt.Errorf("open channel: %w", err)}
	}
	var errs []error
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			errs = append(errs, fmt.Errorf("delete queue %s: %w", q, err))
			// The error closed the channel; go on with another.
			if ch, err = conn.Channel(); err != nil {
				return append(errs, fmt.Errorf("open channel: %w", err))
			}
		}
	}
	_ = ch.Close()
	return errs
}

// QueueDepth is the number of ready messages on queue q, which must exist.
// It inspects q on a channel of its own, as an inspection that fails
// closes its channel.
func QueueDepth(t testing.TB, conn *amqp.Connection, q string) int {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("RabbitMQ: open channel: %v", err)
	}
	defer ch.Close()
	info, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("RabbitMQ: inspect %s: %v", q, err)
	}
	return info.Messages
}

// PublishConfirmed publishes msg to queue q on ch, which must be in
// confirm mode, and waits up to 10 s for the broker's confirm; the test
// fails at once without one.
func PublishConfirmed(t testing.TB, ch *amqp.Channel, q string, msg amqp.Publishing) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, msg)
	if err != nil {
		t.Fatalf("publish %s to %s: %v", msg.MessageId, q, err)
	}
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		t.Fatalf("publish %s to %s: not confirmed (acked=%v, %v)", msg.MessageId, q, ok, err)
	}
}

// TakeMessage takes the next message off queue q (auto-acked), waiting
// up to timeout for one.
func TakeMessage(t testing.TB, ch *amqp.Channel, q string, timeout time.Duration) amqp.Delivery {
	t.Helper()
	var d amqp.Delivery
	Eventually(t, timeout, "a message on "+q, func() bool {
		var ok bool
		var err error
		d, ok, err = ch.Get(q, true)
		if err != nil {
			t.Fatalf("get %s: %v", q, err)
		}
		return ok
	})
	return d
}
