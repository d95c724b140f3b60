package bridge

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
)

// maxBatchBytes bounds a batch request's body (as eventBytes counts it),
// half of what the function reads of one (8 MiB): a request it refuses
// as too large (413) costs a second round, every job of the batch sent
// again alone. A single delivery still goes alone, whatever its size.
const maxBatchBytes = 4 << 20

// inbox holds the deliveries that have arrived and wait for a request slot.
// amqp091's deliveries channel is unbuffered (its queue lives in a goroutine
// of its own), so a receive that must not block sees at most the one
// delivery offered at that instant; the inbox is buffered for the whole
// prefetch, so that a slot that frees sees every delivery already there and
// takes them in one batch.
type inbox struct {
	c       chan amqp.Delivery // closed once the consumer's deliveries end or the inbox is closed
	stop    chan struct{}
	stopped chan struct{}
	waiting prometheus.Gauge
	// held is a delivery taken out of c that did not fit in the last batch
	// (maxBatchBytes): the next batch starts with it. Only the session's
	// goroutine uses it.
	held *amqp.Delivery
	// ended: collect found c closed (the consumer's deliveries ended). Only
	// the session's goroutine uses it.
	ended bool
}

// forward moves deliveries into a new inbox until they end or the inbox is
// closed.
func (b *Bridge) forward(deliveries <-chan amqp.Delivery) *inbox {
	in := &inbox{
		// At most Prefetch deliveries are unacked, so the forwarder never
		// waits for room.
		c:       make(chan amqp.Delivery, b.cfg.Prefetch),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		waiting: b.metrics.waiting,
	}
	go func() {
		defer close(in.stopped)
		defer close(in.c)
		for {
			select {
			case d, ok := <-deliveries:
				if !ok {
					return
				}
				in.waiting.Inc()
				select {
				case in.c <- d:
				case <-in.stop:
					in.waiting.Dec()
					return
				}
			case <-in.stop:
				return
			}
		}
	}()
	return in
}

// received counts a delivery taken out of the inbox.
func (in *inbox) received() { in.waiting.Dec() }

// close stops the forwarder and drops what is left: deliveries of a session
// that is over die with its channel, and the broker redelivers them.
func (in *inbox) close() {
	close(in.stop)
	<-in.stopped
	if in.held != nil {
		in.held = nil
		in.received()
	}
	for range in.c {
		in.received()
	}
}

// eventBytes is about what a delivery adds to a batch request: its body
// (as base64 at worst) and the event's attributes.
func eventBytes(d amqp.Delivery) int { return len(d.Body)*4/3 + 1024 }

// collect makes the next batch: it takes a request slot first, then waits
// for the first delivery, then adds, without waiting, whatever else has
// already arrived, up to BatchSize deliveries (1 once the function has
// refused a batch) and maxBatchBytes. A delivery that came back before it
// is due goes down the delay ladder instead (no slot: it only republishes).
// It returns nil, holding no slot, once ctx is cancelled (requeueing what it
// had taken), the session is lost, the consumer's deliveries end or the
// bridge is asked to pause (its function judged down; see pause.go).
func (b *Bridge) collect(ctx, workCtx context.Context, s *channels, in *inbox) []amqp.Delivery {
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return nil
	case <-s.lost:
		return nil
	case <-b.pause.request:
		return nil
	}
	var batch []amqp.Delivery
	if in.held != nil {
		d := *in.held
		in.held = nil
		batch = b.take(ctx, workCtx, s, in, batch, d)
	}
	for len(batch) == 0 {
		select {
		case d, ok := <-in.c:
			if !ok {
				in.ended = true
				<-b.sem
				return nil
			}
			batch = b.take(ctx, workCtx, s, in, batch, d)
		case <-ctx.Done():
			<-b.sem
			return nil
		case <-s.lost:
			<-b.sem
			return nil
		case <-b.pause.request:
			<-b.sem
			return nil
		}
	}
	size := 0
	for _, d := range batch {
		size += eventBytes(d)
	}
	limit := b.cfg.BatchSize
	if b.noBatches.Load() {
		limit = 1
	}
more:
	for len(batch) < limit {
		select {
		case d, ok := <-in.c:
			if !ok {
				break more // the next collect sees the end
			}
			if size+eventBytes(d) > maxBatchBytes {
				in.held = &d // first in line for the next request
				break more
			}
			n := len(batch)
			if batch = b.take(ctx, workCtx, s, in, batch, d); len(batch) > n {
				size += eventBytes(d)
			}
		default:
			break more
		}
	}
	if ctx.Err() != nil { // shutting down: start nothing new
		for _, d := range batch {
			b.settle(d, nil, notSent())
		}
		<-b.sem
		return nil
	}
	return batch
}

// take adds d, just out of the inbox, to batch, or hands it to a redelay
// when it came back before it is due.
func (b *Bridge) take(ctx, workCtx context.Context, s *channels, in *inbox, batch []amqp.Delivery, d amqp.Delivery) []amqp.Delivery {
	in.received()
	if ctx.Err() != nil { // shutting down: start nothing new
		b.settle(d, nil, notSent())
		return batch
	}
	if ack, parked := b.handOns.arrived(d, s, b.instance); ack || parked {
		if ack {
			b.settle(d, nil, handedOnCopy())
		}
		return batch // a copy of a job handed on (handon.go)
	}
	if dec, ok := foreignCopy(d.Headers, b.instance, b.foreignDelay); ok {
		b.wg.Add(1)
		go b.redelay(workCtx, s, d, dec)
		return batch
	}
	if dec, ok := early(d.Headers, time.Now()); ok {
		b.wg.Add(1)
		go b.redelay(workCtx, s, d, dec)
		return batch
	}
	return append(batch, d)
}
