package bridge

// Handing on: the jobs of a reply, once published, go straight to the
// function in a free request slot, instead of waiting for the broker to
// deliver them back to this bridge. The published message stays the
// durable copy: the parent delivery is still acked only once it is
// confirmed, and when the copy arrives here it is acked without a call
// once the handed-on call has succeeded and its own jobs are confirmed
// (policy.go: handedOnCopy), or decided as any delivery when that call
// failed. A copy that another bridge consumes is run there as a
// duplicate is (the function's lease and step rows absorb it).

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
)

const (
	// handOnKeep: how long a handed-on job that succeeded is remembered,
	// so that its copy (and any later copy) is acked without a call. A
	// copy comes back within milliseconds unless the broker held it back
	// (a reconnect); one that comes later is simply run as a duplicate.
	handOnKeep = 5 * time.Second
	// maxHandOns bounds the jobs remembered (a few MB at most); past it
	// nothing is handed on. With handOnKeep, it allows handing on about
	// 3,000 jobs a second, sustained.
	maxHandOns = 16384
)

// handOn is one job handed on: its call, then what its copy from the
// queue gets.
type handOn struct {
	done bool // the handed-on call is decided and carried out
	ok   bool // and it succeeded: copies are acked (handedOnCopy)
	// parked are copies that arrived while the call ran, with the
	// session they came on.
	parked []parkedCopy
}

type parkedCopy struct {
	d amqp.Delivery
	s *channels
}

// handOns are the jobs handed on, by job id.
type handOns struct {
	mu   sync.Mutex
	m    map[string]*handOn
	kept []keptHandOn // succeeded ones, oldest first, to forget after handOnKeep
}

type keptHandOn struct {
	id string
	at time.Time
}

// register records ids as handed on, before their copies are published;
// it returns those it took (not already handed on, and room left).
func (h *handOns) register(ids []string, now time.Time) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]*handOn{}
	}
	n := 0
	for ; n < len(h.kept) && now.Sub(h.kept[n].at) > handOnKeep; n++ {
		if e := h.m[h.kept[n].id]; e != nil && e.done {
			delete(h.m, h.kept[n].id)
		}
	}
	h.kept = h.kept[n:]
	var out []string
	for _, id := range ids {
		if _, ok := h.m[id]; ok || len(h.m) >= maxHandOns {
			continue
		}
		h.m[id] = &handOn{}
		out = append(out, id)
	}
	return out
}

// headerHandedOn marks the published copy of a job handed on, with the
// instance of the bridge that handed it on. Only such a message is taken
// for the copy: another job with the same id (a sleeping node's wake-up, a
// loop's next round, a copy published by someone else) is sent as usual.
const headerHandedOn = "x-stepflow-handed-on"

// arrived is a delivery just out of the inbox. It tells what to do with
// it: the copy of a job this bridge (instance) handed on that succeeded is
// acked (ack), one whose call still runs is parked until it is decided
// (parked), anything else is sent to the function as usual (neither).
func (h *handOns) arrived(d amqp.Delivery, s *channels, instance string) (ack, parked bool) {
	if mark, _ := jobqueue.HeaderString(d.Headers, headerHandedOn); mark != instance {
		return false, false
	}
	if made, _ := jobqueue.HeaderInt(d.Headers, jobqueue.HeaderAttempts); made > 0 {
		return false, false // a retry: not the copy of a handed-on job
	}
	id := deliveryJobID(d.MessageId, d.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.m[id]
	switch {
	case e == nil:
		return false, false
	case !e.done:
		e.parked = append(e.parked, parkedCopy{d: d, s: s})
		return false, true
	}
	return e.ok, false
}

// decided records the outcome of a handed-on call and returns the copies
// parked meanwhile. A failed one is forgotten: its copies are decided as
// any delivery.
func (h *handOns) decided(id string, ok bool, now time.Time) []parkedCopy {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.m[id]
	if e == nil {
		return nil
	}
	parked := e.parked
	e.parked = nil
	if !ok {
		delete(h.m, id)
		return parked
	}
	e.done, e.ok = true, true
	h.kept = append(h.kept, keptHandOn{id: id, at: now})
	return parked
}

// handOnPlan is what a batch being carried out hands on: for each job, the
// delivery whose reply it came from.
type handOnPlan struct {
	ds     []*delivery
	parent []*delivery
}

// planHandOn picks the jobs of ds's replies to hand on, before they are
// published: when handing on is on, nothing waits in the inbox (under
// load, the queue serves the jobs in their order) and a request slot is
// free, which it takes. The jobs are registered, so that their copies are
// recognised. Nil when nothing is handed on.
func (b *Bridge) planHandOn(ctx context.Context, s *channels, ds []*delivery) *handOnPlan {
	// Not while the consumer goes (a SIGTERM drain or a pause: ready is
	// false from then on): the chains go on through the queue, on the
	// bridges still consuming, and the drain ends with the calls in flight.
	if b.cfg.NoHandOn || b.cfg.PublishCopies > 1 || s.in == nil || len(s.in.c) > 0 || b.paused() || !b.ready.Load() {
		return nil
	}
	var cand []*delivery
	var parents []*delivery
	var index []int // of the job in its parent's reply
	limit := b.cfg.BatchSize
	if b.noBatches.Load() {
		limit = 1
	}
	for _, d := range ds {
		if d.dec.Kind != KindPublish {
			continue
		}
		for i, j := range d.dec.Jobs {
			if len(cand) == limit {
				break
			}
			if !mayHandOn(j) {
				continue
			}
			hd, err := b.handedOnDelivery(d, j)
			if err != nil {
				continue // SendJob reports it when publishing
			}
			cand, parents, index = append(cand, hd), append(parents, d), append(index, i)
		}
	}
	if len(cand) == 0 {
		return nil
	}
	select {
	case b.sem <- struct{}{}:
	default:
		return nil // every slot busy: the copies go the usual way
	}
	ids := make([]string, len(cand))
	for i, hd := range cand {
		ids[i] = hd.jobID
	}
	took := b.handOns.register(ids, time.Now())
	p := &handOnPlan{}
	for i, hd := range cand {
		if len(took) > 0 && took[0] == hd.jobID {
			took = took[1:]
			p.ds, p.parent = append(p.ds, hd), append(p.parent, parents[i])
			if parents[i].handedOn == nil {
				parents[i].handedOn = map[int]bool{}
			}
			parents[i].handedOn[index[i]] = true // its publish carries headerHandedOn
		}
	}
	if len(p.ds) == 0 {
		<-b.sem
		return nil
	}
	return p
}

// handedOnDelivery is the delivery of j, from d's reply, as the broker
// would deliver its copy: same body, message id and trace context.
func (b *Bridge) handedOnDelivery(d *delivery, j ReplyJob) (*delivery, error) {
	body, err := json.Marshal(j.Job)
	if err != nil {
		return nil, err
	}
	headers := amqp.Table{headerHandedOn: b.instance}
	if tp := replyTraceparent(d); tp != "" {
		headers[jobqueue.HeaderTraceparent] = tp
	}
	hd := amqp.Delivery{Headers: headers, ContentType: "application/json", DeliveryMode: amqp.Persistent,
		MessageId: j.Job.ID(), Body: body}
	return &delivery{d: hd, jobID: hd.MessageId, direct: true}, nil
}

// startHandOn sends the plan's jobs whose parents' publishes went out in
// the slot planHandOn took; the others are forgotten again (their parents
// are requeued, and the function re-emits them).
func (b *Bridge) startHandOn(ctx context.Context, s *channels, p *handOnPlan) {
	var batch []*delivery
	now := time.Now()
	for i, hd := range p.ds {
		if p.parent[i].pubErr != nil {
			b.requeueParked(ctx, b.handOns.decided(hd.jobID, false, now))
			continue
		}
		batch = append(batch, hd)
	}
	if len(batch) == 0 {
		<-b.sem
		return
	}
	b.wg.Add(1)
	go b.handleDirect(ctx, s, batch)
}

// handleDirect runs a batch of handed-on jobs in the slot taken for it.
func (b *Bridge) handleDirect(ctx context.Context, s *channels, hds []*delivery) {
	for i, hd := range hds {
		hds[i] = b.begin(ctx, hd.d, len(hds))
		hds[i].direct = true
	}
	b.run(ctx, s, hds)
}

// handOnDecided carries out a handed-on job's decision: nothing is settled
// (it has no delivery); the copies of it parked meanwhile are acked
// (handedOnCopy) if the call succeeded and what it published is
// confirmed, requeued with it if it was requeued (the bridge stopping or
// pausing, the session lost), and decided as any delivery otherwise.
func (b *Bridge) handOnDecided(d *delivery) {
	ok := handedOnSucceeded(d.dec, d.pubErr)
	if !ok {
		d.log.Debug("a job handed on to the function did not succeed there; its copy from the queue is decided instead",
			"decision", d.dec.Kind.String(), "status", d.status, "publish_err", d.pubErr)
	}
	parked := b.handOns.decided(d.jobID, ok, time.Now())
	switch {
	case ok:
		for _, c := range parked {
			b.settle(c.d, nil, handedOnCopy())
		}
	case d.dec.Kind == KindRequeue && d.pubErr == nil:
		for _, c := range parked {
			b.settle(c.d, nil, d.dec)
		}
	default:
		b.requeueParked(d.ctx, parked)
	}
}

// requeueParked sends copies parked behind a handed-on call that failed to
// the function as any delivery, each in a request slot of its own.
func (b *Bridge) requeueParked(ctx context.Context, parked []parkedCopy) {
	for _, c := range parked {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			select {
			case b.sem <- struct{}{}:
			case <-c.s.lost:
				return // dies with its channel; the broker redelivers it
			case <-ctx.Done():
				b.settle(c.d, nil, notSent())
				return
			}
			b.wg.Add(1)
			b.handle(ctx, c.s, []amqp.Delivery{c.d})
		}()
	}
}
