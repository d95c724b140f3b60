package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
)

const (
	dialTimeout = 10 * time.Second
	heartbeat   = 10 * time.Second
)

// session is one connection's life: connect, declare, consume until ctx is
// cancelled (then drain) or the connection breaks. While the bridge is
// paused (its function judged down, pause.go) it cancels its consumer and
// probes the function, and consumes again once it answers, on the same
// connection. consumed reports that the session got as far as consuming.
func (b *Bridge) session(ctx, workCtx context.Context, stopWork func()) (consumed bool, err error) {
	conn, err := amqp.DialConfig(b.cfg.AMQPURL, amqp.Config{
		Heartbeat:  heartbeat,
		Properties: amqp.Table{"connection_name": "stepflow-bridge " + b.cfg.Queue},
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bounds the AMQP handshake; amqp091 clears it once the connection is open.
			if err := c.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		},
	})
	if err != nil {
		return false, fmt.Errorf("dial rabbitmq: %w", err)
	}
	defer conn.Close()

	setup, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open channel: %w", err)
	}
	topology := jobqueue.Topology{Queue: b.cfg.Queue, Type: jobqueue.QueueType(b.cfg.QueueType)}
	if err := topology.Declare(setup); err != nil {
		return false, classifySetup(err)
	}
	_ = setup.Close()

	pub, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open publish channel: %w", err)
	}
	if err := pub.Confirm(false); err != nil {
		return false, classifySetup(fmt.Errorf("confirm mode: %w", err))
	}
	cons, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open consume channel: %w", err)
	}
	if err := cons.Qos(b.cfg.Prefetch, 0, false); err != nil {
		return false, classifySetup(fmt.Errorf("qos: %w", err))
	}

	// Watch the connection and both channels; any of them closing ends the session.
	lost := make(chan struct{})
	var lostErr error
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))
	pubClosed := pub.NotifyClose(make(chan *amqp.Error, 1))
	consClosed := cons.NotifyClose(make(chan *amqp.Error, 1))
	consCancelled := cons.NotifyCancel(make(chan string, 1))
	go func() {
		defer close(lost)
		select {
		case e := <-connClosed:
			lostErr = fmt.Errorf("connection closed: %w", amqpErr(e))
		case e := <-pubClosed:
			lostErr = fmt.Errorf("publish channel closed: %w", amqpErr(e))
		case e := <-consClosed:
			lostErr = fmt.Errorf("consume channel closed: %w", amqpErr(e))
		case tag := <-consCancelled:
			lostErr = fmt.Errorf("broker cancelled consumer %s (queue deleted?)", tag)
		}
	}()

	s := &channels{pub: pub, lost: lost}
	defer b.ready.Store(false)
	for {
		if b.paused() && !b.awaitFunction(ctx, lost) {
			// Not consuming: nothing prefetched to requeue.
			if ctx.Err() != nil {
				b.drain(stopWork)
				return consumed, nil
			}
			<-lost
			return consumed, lostErr
		}
		tag := "stepflow-bridge-" + uuid.NewString()
		deliveries, err := cons.Consume(b.cfg.Queue, tag, false, false, false, false, nil)
		if err != nil {
			return consumed, classifySetup(fmt.Errorf("consume %s: %w", b.cfg.Queue, err))
		}
		consumed = true
		b.ready.Store(true)
		b.log.Info("consuming", "prefetch", b.cfg.Prefetch, "concurrency", b.cfg.Concurrency, "batch_size", b.cfg.BatchSize)

		in := b.forward(deliveries)
		s = &channels{pub: pub, lost: lost, in: in}
		switch b.consume(ctx, workCtx, s, in) {
		case endShutdown:
			b.ready.Store(false)
			b.log.Info("shutting down: consumer cancelled, draining in-flight deliveries", "grace", b.cfg.ShutdownGrace)
			b.stopConsuming(cons, tag, in, notSent())
			in.close()
			b.drain(stopWork)
			return true, nil
		case endPause:
			// In-flight calls finish (or fail, and are handed back) on
			// their own; the consumer goes, so the broker gives this
			// bridge nothing more, and what waits here goes back.
			b.ready.Store(false)
			b.stopConsuming(cons, tag, in, handedBack("the bridge paused"))
			in.close()
		default: // endLost
			in.close()
			<-lost // the channel or connection closed; the watcher says why
			return true, lostErr
		}
	}
}

// Why consume stopped.
type consumeEnd int

const (
	endLost     consumeEnd = iota // the session's connection or a channel closed, or the deliveries ended
	endShutdown                   // ctx was cancelled
	endPause                      // the function is judged down
)

// consume hands batches of deliveries from in to request slots until ctx
// is cancelled, the session is lost or the bridge pauses.
func (b *Bridge) consume(ctx, workCtx context.Context, s *channels, in *inbox) consumeEnd {
	for {
		if batch := b.collect(ctx, workCtx, s, in); batch != nil {
			b.wg.Add(1)
			go b.handle(workCtx, s, batch)
			continue
		}
		switch {
		case ctx.Err() != nil:
			return endShutdown
		case b.paused():
			return endPause
		}
		if in.ended {
			return endLost // the session is being lost
		}
		select {
		case <-s.lost:
			return endLost
		default:
		}
		// A pause request left from a pause that is over: go on.
	}
}

func amqpErr(e *amqp.Error) error {
	if e == nil {
		return errors.New("closed")
	}
	return e
}

// channels is what a delivery handler needs from its session.
type channels struct {
	pub  *amqp.Channel
	lost <-chan struct{} // closed when the session's connection or a channel closes
	in   *inbox          // the deliveries waiting for a slot (nil while not consuming)
}

// stopConsuming cancels the consumer and settles the deliveries that were
// prefetched but never sent with dec (a requeue).
func (b *Bridge) stopConsuming(cons *amqp.Channel, tag string, in *inbox, dec Decision) {
	if err := cons.Cancel(tag, false); err != nil {
		b.log.Warn("cancel consumer", "err", err)
	}
	if in.held != nil {
		d := *in.held
		in.held = nil
		in.received()
		b.settle(d, nil, dec)
	}
	for d := range in.c { // closed once the cancel is done (or the channel closes)
		in.received()
		b.settle(d, nil, dec)
	}
}
