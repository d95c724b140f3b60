package jobqueue

import (
	"context"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Publisher enqueues jobs on one queue over a connection it dials on first
// use and dials again after the broker closed it. The client and the
// reconciler publish through one; the bridge publishes on its own session's
// channel. It is safe for concurrent use.
type Publisher struct {
	url      string
	topology Topology

	mu   sync.Mutex
	conn *amqp.Connection
	ch   *amqp.Channel
}

// NewPublisher returns a publisher to queue, a classic topology, on the
// broker at url; it connects lazily.
func NewPublisher(url, queue string) *Publisher {
	return NewTopologyPublisher(url, Topology{Queue: queue})
}

// NewTopologyPublisher returns a publisher to t's queue (DefaultQueue when
// t names none) on the broker at url, which declares t on connecting; it
// connects lazily.
func NewTopologyPublisher(url string, t Topology) *Publisher {
	if t.Queue == "" {
		t.Queue = DefaultQueue
	}
	return &Publisher{url: url, topology: t}
}

// Queue is the queue the publisher enqueues on.
func (p *Publisher) Queue() string { return p.topology.Queue }

// Publish sends job, due after delay, and waits for the broker's confirm. A
// failed publish drops the channel, so the next call opens a fresh one.
func (p *Publisher) Publish(ctx context.Context, job Job, delay time.Duration) error {
	ch, err := p.Channel()
	if err != nil {
		return err
	}
	if err := Publish(ctx, ch, p.topology.Queue, job, delay); err != nil {
		p.reset(ch)
		return err
	}
	return nil
}

// Channel returns the publisher's confirm-mode channel, with the queue's
// topology declared, dialling first if there is no open one. The
// reconciler reads the dead-letter queue through it.
func (p *Publisher) Channel() (*amqp.Channel, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch != nil && !p.ch.IsClosed() {
		return p.ch, nil
	}
	if p.conn == nil || p.conn.IsClosed() {
		conn, err := amqp.Dial(p.url)
		if err != nil {
			return nil, fmt.Errorf("connect to RabbitMQ: %w", err)
		}
		p.conn = conn
	}
	ch, err := p.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open RabbitMQ channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	if err := p.topology.Declare(ch); err != nil {
		_ = ch.Close()
		return nil, err
	}
	p.ch = ch
	return ch, nil
}

func (p *Publisher) reset(ch *amqp.Channel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch == ch {
		_ = ch.Close()
		p.ch = nil
	}
}

// Close closes the connection, if any; a later Publish dials again.
func (p *Publisher) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn, p.ch = nil, nil
	}
}
