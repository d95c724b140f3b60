package workflow

import (
	"errors"
	"math/rand/v2"
	"time"
)

// AttemptOutcome is what the end of one node attempt means for its step:
// the state the step moves to and what runs next. The step function and
// the local runner both act on it, so the two runtimes cannot disagree on
// retries, fallbacks and sleeps.
type AttemptOutcome struct {
	// State is one of
	//
	//	StepSucceeded         the attempt returned a result: route it
	//	StepSleeping          the node suspended itself: call it again at Wake
	//	StepAwaitingChild     the node started a child run (Child): call it
	//	                      again, as the same Attempt, once it finished
	//	StepAwaiting          the node called Await: the step waits for a
	//	                      resume, which gives its result
	//	StepRetrying          the attempt failed and was not the last: run
	//	                      Attempt after Delay
	//	StepAwaitingFallback  the last attempt failed: run Fallback in the
	//	                      node's place
	//	StepFailed            the last attempt failed and there is no
	//	                      fallback: the run fails with the error
	State StepState
	// Attempt is the attempt to run next: the following one after a retry,
	// the same one (resumed, not counted again) after a sleep.
	Attempt int
	// Delay is the backoff before a retry: retryDelay doubled for each
	// attempt after the first, with jitter, capped at an hour.
	Delay time.Duration
	// Wake is the time a sleeping node asked to be called again.
	Wake time.Time
	// Fallback is the node that runs in place of one awaiting its fallback.
	Fallback string
	// Child is the run a node awaiting a child asked for.
	Child *ChildRun
}

// Outcome decides what the end of attempt (1-based) of n means, err being
// what the attempt returned (nil: it succeeded). An error from Suspend puts
// the step to sleep, one from StartChild makes it await a child run; any
// other error retries while attempts remain
// (MaxAttempts counts them all, the first included), then hands over to the
// fallback, if any, or fails.
func (n *CompiledNode) Outcome(attempt int, err error) AttemptOutcome {
	var suspend *suspendError
	var child *childError
	if out, ok := awaitOutcome(attempt, err); ok {
		return out // Await: the step awaits a resume
	}
	switch {
	case err == nil:
		return AttemptOutcome{State: StepSucceeded}
	case errors.As(err, &suspend):
		return AttemptOutcome{State: StepSleeping, Attempt: attempt, Wake: suspend.Until}
	case errors.As(err, &child):
		return AttemptOutcome{State: StepAwaitingChild, Attempt: attempt, Child: &child.Run}
	case attempt < n.MaxAttempts:
		return AttemptOutcome{State: StepRetrying, Attempt: attempt + 1, Delay: n.retryDelayFor(attempt + 1)}
	case n.Fallback != "":
		return AttemptOutcome{State: StepAwaitingFallback, Fallback: n.Fallback}
	}
	return AttemptOutcome{State: StepFailed}
}

// retryDelayFor is the wait before attempt next (2, 3, …): the node's
// retryDelay doubled for each attempt after the first, with "equal jitter"
// (between half and all of it), capped at maxRetryDelay.
func (n *CompiledNode) retryDelayFor(next int) time.Duration {
	if n.RetryDelay <= 0 || next < 2 {
		return 0
	}
	d := n.RetryDelay
	for i := 2; i < next && d < maxRetryDelay; i++ {
		d *= 2
	}
	if d > maxRetryDelay {
		d = maxRetryDelay
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// maxRetryDelay caps node retry backoff.
const maxRetryDelay = time.Hour
