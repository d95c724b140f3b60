package bridge

import (
	"context"
	"sync/atomic"
	"time"
)

// pause is the state of the pause (policy.go, "The pause"): a bridge
// whose function stops answering stops consuming until it answers again.
type pause struct {
	failures atomic.Int64 // calls in a row without an HTTP answer
	down     atomic.Bool  // the function is judged down: do not consume
	since    atomic.Int64 // unix ns when down was set
	// request asks the session to stop consuming (buffered: the session
	// may be busy making a batch when the failure that decides it comes).
	request chan struct{}
}

// noteCall counts what a finished call says about the function
// (functionSignOf), pauses the bridge on the PauseAfter-th transport
// failure in a row, and marks r as a reply to be handed back when it is a
// transport failure while the bridge is paused.
func (b *Bridge) noteCall(r *Reply) {
	switch functionSignOf(*r) {
	case signUp:
		b.pause.failures.Store(0)
	case signDown:
		n := b.pause.failures.Add(1)
		if n >= int64(b.cfg.PauseAfter) && b.pause.down.CompareAndSwap(false, true) {
			b.pause.since.Store(time.Now().UnixNano())
			b.metrics.paused.Set(1)
			b.metrics.pauses.Inc()
			b.log.Warn("the step function does not answer: not consuming until its readiness does, handing back the deliveries held",
				"failures_in_a_row", n, "err", r.Err, "readiness_url", b.cfg.ReadinessURL)
			select {
			case b.pause.request <- struct{}{}:
			default: // already asked
			}
		}
	}
	r.FunctionDown = r.Err != nil && b.pause.down.Load()
}

// paused reports whether the bridge has judged its function down.
func (b *Bridge) paused() bool { return b.pause.down.Load() }

// resume ends a pause: the function's readiness answered.
func (b *Bridge) resume() {
	b.pause.failures.Store(0)
	if !b.pause.down.CompareAndSwap(true, false) {
		return
	}
	b.metrics.paused.Set(0)
	since := time.Since(time.Unix(0, b.pause.since.Load()))
	b.log.Info("the step function answers again; consuming", "paused_for", since.Round(time.Millisecond))
	select {
	case <-b.pause.request: // a request left from the pause that is over
	default:
	}
}

// awaitFunction probes the function's readiness until it answers, then
// resumes. It returns false when ctx ends or the session is lost first.
func (b *Bridge) awaitFunction(ctx context.Context, lost <-chan struct{}) bool {
	if err := b.waitFunctionReady(ctx, lost); err != nil {
		return false
	}
	b.resume()
	return true
}
