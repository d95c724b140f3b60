package bridge

// This file is the bridge's whole ack / retry / requeue / dead-letter policy:
// pure functions from what the step function answered (or how the call
// failed, or what happened to the delivery before or after it) to what the
// bridge does with each delivery. Policy.Decide decides a one-event reply,
// Policy.DecideBatch a batch reply, and the rows of the last table the
// deliveries that no reply decides. They do no I/O; settle.go carries the
// decisions out.
//
// One event per request (BatchSize 1), Decide:
//
//	reply                                         decision
//	--------------------------------------------  ---------------------------------------------
//	2xx + CloudEvent dev.stepflow.jobs.v1,         KindPublish: publish every job (delayMs > 0
//	  data {"jobs":[{job…, "delayMs":n}, …]}         through the delay queues), then ack
//	2xx, empty body, no event                      KindAck
//	2xx with anything else                         KindDeadLetter, code "bad-reply"
//	404 408 409 425 429, 5xx,                      KindRetry after capped exponential backoff
//	  timeout, connection error                      with full jitter, never sooner than
//	                                                 Retry-After; KindDeadLetter once
//	                                                 MaxAttempts attempts have been made
//	any other 4xx (400 413 415 422 …), 3xx         KindDeadLetter at once, code = the status
//	transport error caused by our own shutdown     KindRequeue (not a failure of the job)
//	transport error once the function is judged    KindRequeue, handedBack: not a failure of the
//	  down (the pause, below)                        job, no attempt counted; another bridge,
//	                                                 whose function answers, takes it
//
// A batch (application/cloudevents-batch+json, BatchSize > 1): batchRefusal,
// then (unless refused) DecideBatch, per delivery of the batch:
//
//	reply                                         decision for each delivery
//	--------------------------------------------  ---------------------------------------------
//	2xx batch whose result for this delivery      the table above for a one-event reply of
//	  (same position, same id, type                  status s: 2xx + jobs → KindPublish, 2xx
//	  dev.stepflow.result.v1) has data               without jobs → KindAck, 409 503 … →
//	  {"status":s, "error":"…", "jobs":[…]}          KindRetry (this delivery's attempt and
//	                                                 backoff; a result has no Retry-After),
//	                                                 other 4xx → KindDeadLetter, code s,
//	                                                 reason = error; bad jobs → "bad-reply"
//	2xx that is not a batch, or without a valid    KindDeadLetter, code "bad-reply", the reason
//	  result for this delivery (too few results,     naming the problem
//	  id or type mismatch, bad data)
//	400 or 415 to the batch as a whole, no         not decided: each job is sent again at once,
//	  transport error (a function that takes         alone in the one-event form with its own
//	  no batches: func-go, an older stepflow         attempt (one by one, in the batch's request
//	  during a rollout), batchRefusal                slot), decided by Decide on its own reply
//	                                                 and carried out; and the bridge sends no
//	                                                 batches from then on (warns once, gauge
//	                                                 stepflow_bridge_batches_refused = 1)
//	413 to the batch as a whole (too large)        the same resending, for this batch only;
//	                                                 later requests are batches again
//	any other status, timeout, connection error,   Decide of that reply, each delivery with its
//	  shutdown (a whole-request failure)             own attempt (so 503 retries every job, 422
//	                                                 dead-letters every job)
//
// Without a reply to decide on (the bridge's own rows):
//
//	what happened to the delivery                 decision
//	--------------------------------------------  ---------------------------------------------
//	came back from the delay queues more than      KindRedelay: down the delay ladder again,
//	  earlyTolerance before its x-stepflow-due,      without calling the function, then ack
//	  early
//	shutting down before it was sent (waiting      KindRequeue, for the next consumer
//	  in the prefetch or in a batch being made),
//	  notSent
//	the call cut short by the bridge's own         KindRequeue, not a failure of the job (not
//	  shutdown (ShuttingDown), shutdownInFlight      counted as an attempt)
//	the session closed under a refused batch's     KindRequeue, not sent again: a nack on the
//	  job before it went again alone,                dead channel fails, and the broker
//	  connectionLost                                 redelivers it
//	what its decision asked to publish was not     KindRequeue (at-least-once: the function
//	  confirmed (publish error, broker nack,         is idempotent per job id)
//	  channel closed, publishTimeout),
//	  publishFailed
//	the session closed while it waited to be       nothing: it dies with its channel, and the
//	  sent (the inbox's rest)                        broker redelivers it
//	the ack or nack itself fails (its channel is   nothing more to do: the broker redelivers
//	  gone)                                          it; counted as requeued
//	waiting in the prefetch when the bridge        KindRequeue, handedBack (no attempt)
//	  pauses (its function judged down)
//
// Handing on (handon.go): a KindPublish reply's jobs due now (mayHandOn),
// once published and before they are confirmed, go straight to the
// function in a free request slot when nothing waits in the prefetch; the
// published message is the durable copy, and the parent delivery is acked
// only once every publish it made is confirmed, as without handing on.
// The rows for the jobs handed on and their copies:
//
//	what happened                                 decision
//	--------------------------------------------  ---------------------------------------------
//	a job handed on is answered 2xx (jobs or       its jobs are published (and handed on in
//	  none) and what it published is confirmed,      turn); no delivery to settle; its copy is
//	  handedOnSucceeded                              acked when it arrives, or at once if it is
//	                                                 already here: KindAckCopy, handedOnCopy
//	any other decision for a job handed on, or     nothing published or settled for it; its
//	  its publishes not confirmed                    copy is decided as any delivery (a second
//	                                                 call, its transport attempt 1 again); a
//	                                                 KindRequeue (shutdown, pause, session lost)
//	                                                 requeues a copy already parked here instead
//	the copy arrives while the call still runs     parked, not sent, until the call is decided
//	the copy of a job another bridge handed on     KindRedelay by handOnForeignDelay, once
//	  (marked with another instance), not yet        (foreignCopy): by then that bridge has run
//	  delayed                                        it, and the function, sent the copy when it
//	                                                 comes back, finds the step done and
//	                                                 re-emits nothing still pending; sent at once
//	                                                 it would re-emit the next job, which that
//	                                                 bridge is running, and a trailing duplicate
//	                                                 of the run would follow it to the end
//	a delivery without this bridge's mark          not a copy of a job handed on: decided as
//	  (x-stepflow-handed-on: only the publish of     any delivery
//	  a job as it is handed on carries it; a
//	  sleeping node's wake-up, a loop's next
//	  round, a copy by someone else do not), one
//	  with x-attempts (a retry), or one whose job
//	  is forgotten (handOnKeep after it succeeded)
//
// The pause: what one call says about the function (functionSignOf). A
// transport failure (no HTTP answer at all: connection refused or reset,
// a DNS failure, a timeout) counts toward PauseAfter; any HTTP answer,
// even a 5xx, shows the function is reachable and starts the count again;
// a call cut short by the bridge's own shutdown says nothing. PauseAfter
// failures in a row and the bridge judges its function down: it cancels
// its consumer, hands back what it holds (the rows above), reports not
// ready and probes the function's readiness URL; when that answers 200 it
// consumes again. A bridge in front of a dead function so stops taking
// jobs from the queue that other bridges, in front of live functions,
// serve, instead of failing them round the retry delays until they are
// dead-lettered.
//
// Attempts are transport attempts: the AMQP header x-attempts counts those
// already made (absent on a fresh job), so a delivery is attempt x-attempts+1,
// sent to the function as X-Delivery-Attempt (in a batch, as the event's
// deliveryattempt extension). Node-level retries are the function's business
// (it replies with the job at attempt+1 and a delayMs).

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/internal/jobqueue"
	"github.com/stepflow/stepflow/internal/wire"
)

// CloudEvent types of the bridge ↔ function contract.
const (
	EventTypeJob  = wire.JobEventType  // bridge → function: one job
	EventTypeJobs = wire.JobsEventType // function → bridge: jobs to publish
)

// Error codes written to x-error-code besides HTTP statuses ("400", "503", …).
const (
	CodeTimeout    = "timeout"    // the attempt ran past RequestTimeout
	CodeConnection = "connection" // the function could not be reached or broke the connection
	CodeBadReply   = "bad-reply"  // a 2xx whose body is not a valid jobs event (to a batch: no valid result for the job)
)

// MaxReasonBytes bounds x-error-reason.
const MaxReasonBytes = 1024

// Kind is what the bridge does with a delivery.
type Kind int

const (
	// KindPublish: publish the decision's jobs with confirms, then ack the delivery.
	KindPublish Kind = iota + 1
	// KindAck: ack the delivery; the step is done and nothing follows from it here.
	KindAck
	// KindRetry: re-publish the same message after Delay with x-attempts
	// incremented (and x-first-failure set on the first failure), then ack the
	// original.
	KindRetry
	// KindDeadLetter: publish the message to <queue>.dlq with x-error-code
	// (Code), x-error-reason (Reason), x-dead-letter-id, x-attempts and
	// x-first-failure, then ack the original.
	KindDeadLetter
	// KindRequeue: nack with requeue, for a delivery that is not to be
	// decided now (shutdown, a lost session, publishes not confirmed); it
	// counts no attempt.
	KindRequeue
	// KindRedelay: publish the same message, headers unchanged, further down
	// the delay ladder (it came back before its due time, Delay from now),
	// then ack the original.
	KindRedelay
	// KindAckCopy: ack the delivery without calling the function: it is
	// the queue's copy of a job this bridge handed on (handon.go), whose
	// call succeeded and whose own jobs are confirmed.
	KindAckCopy
)

func (k Kind) String() string {
	switch k {
	case KindPublish:
		return "publish"
	case KindAck:
		return "ack"
	case KindRetry:
		return "retry"
	case KindDeadLetter:
		return "dead-letter"
	case KindRequeue:
		return "requeue"
	case KindRedelay:
		return "redelay"
	case KindAckCopy:
		return "ack-copy"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Decision is what the bridge does with one delivery: the outcome of
// Policy.Decide, Policy.DecideBatch or one of the bridge's own rows.
type Decision struct {
	Kind   Kind
	Delay  time.Duration // KindRetry: how long to wait before the next attempt; KindRedelay: until the message is due
	Code   string        // KindRetry, KindDeadLetter: HTTP status as a string, or a Code* constant
	Reason string        // KindRetry, KindDeadLetter, KindRequeue: response body or error text (at most MaxReasonBytes for a reply)
	Jobs   []ReplyJob    // KindPublish: the jobs to enqueue, in reply order
}

// ReplyJob is one entry of a jobs reply: a job plus how long to wait before it
// runs. DelayMs is stripped from the published body.
type ReplyJob = wire.NextJob

// Reply is what Decide needs to know about one transport attempt.
type Reply struct {
	Status        int         // HTTP status; 0 when Err is set
	Header        http.Header // response headers
	Body          []byte      // response body (possibly cut short, see BodyTruncated)
	BodyTruncated bool        // the body was larger than the bridge reads
	Err           error       // transport error: no (complete) response
	Attempt       int         // this transport attempt, 1-based
	ShuttingDown  bool        // the bridge cancelled the call because it is stopping
	FunctionDown  bool        // the bridge has judged its function down (the pause) and hands deliveries back
	Now           time.Time   // for Retry-After dates; zero means time.Now()
}

// Policy holds the knobs of the decision. The zero Jitter draws uniformly
// from [0, d] (full jitter).
type Policy struct {
	MaxAttempts int
	BackoffBase time.Duration
	BackoffMax  time.Duration
	Jitter      func(d time.Duration) time.Duration
}

// retryableStatus lists the 4xx statuses that mean "not now" rather than "never".
var retryableStatus = map[int]bool{
	http.StatusNotFound:        true, // function not routed yet (scale from zero, rollout)
	http.StatusRequestTimeout:  true,
	http.StatusConflict:        true, // step lease held by another delivery
	http.StatusTooEarly:        true,
	http.StatusTooManyRequests: true,
}

// Decide maps one attempt's outcome to what the bridge does with the delivery.
func (p Policy) Decide(r Reply) Decision {
	if r.Err != nil {
		if r.ShuttingDown {
			return shutdownInFlight(r.Err)
		}
		if r.FunctionDown {
			return handedBack(r.Err.Error())
		}
		code := CodeConnection
		if isTimeout(r.Err) {
			code = CodeTimeout
		}
		return p.retry(r, code, r.Err.Error())
	}

	if is2xx(r.Status) {
		jobs, err := parseJobsReply(r)
		if err != nil {
			return badReply(err)
		}
		if jobs == nil {
			return Decision{Kind: KindAck}
		}
		return Decision{Kind: KindPublish, Jobs: jobs}
	}
	return p.decideFailure(r)
}

// decideFailure is the table's rows for a status that is not 2xx.
func (p Policy) decideFailure(r Reply) Decision {
	switch s := r.Status; {
	case s >= 500 || retryableStatus[s]:
		return p.retry(r, strconv.Itoa(s), statusReason(r))
	default: // other 4xx, 3xx (redirects are never followed), anything else
		return Decision{Kind: KindDeadLetter, Code: strconv.Itoa(s), Reason: statusReason(r)}
	}
}

func is2xx(status int) bool { return status >= 200 && status < 300 }

func badReply(err error) Decision {
	return Decision{Kind: KindDeadLetter, Code: CodeBadReply, Reason: trimReason(err.Error())}
}

// BatchJob is one job of a batch request, in request order.
type BatchJob struct {
	ID      string // the event id: the job id
	Attempt int    // the delivery's transport attempt, 1-based
}

// BatchDecision is what DecideBatch decided for one job of a batch.
type BatchDecision struct {
	Decision
	// Status is the status the job was answered with: its result's, else
	// the whole reply's; 0 when there was none (transport error, bad reply).
	Status int
}

// batchRefusal tells whether r, the reply to a batch request, refuses the
// batch as a batch rather than failing its jobs, so that the bridge sends
// them again one per request instead of deciding on r (resend), and
// whether it should send no more batches (stop). A function that reads one
// event per request answers a batch 400 (sdk-go cannot read it as one
// event) or 415; 413 says this request was too large, not that batches
// are. A transport error, even one carrying no status, is never a refusal.
func batchRefusal(r Reply) (resend, stop bool) {
	if r.Err != nil {
		return false, false
	}
	switch r.Status {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType:
		return true, true
	case http.StatusRequestEntityTooLarge:
		return true, false
	}
	return false, false
}

// DecideBatch maps the outcome of one batch request, r (r.Attempt is not
// used), to a decision per job, in the order of jobs. The bridge does not
// call it for a refused batch (batchRefusal: 400, 413, 415), whose jobs it
// sends again one by one. A whole-request failure
// (any status but 2xx, a transport error) is decided by Decide for every job
// with the job's own attempt; a 2xx must be a batch of one result per job
// (same position, same id), and each result goes through the same table as
// a one-event reply of its status. A job without a valid result is
// dead-lettered as bad-reply.
func (p Policy) DecideBatch(r Reply, jobs []BatchJob) []BatchDecision {
	out := make([]BatchDecision, len(jobs))
	if r.Err != nil || !is2xx(r.Status) {
		for i, j := range jobs {
			rj := r
			rj.Attempt = j.Attempt
			out[i] = BatchDecision{Decision: p.Decide(rj), Status: r.Status}
		}
		return out
	}
	results, errs := parseBatchReply(r, jobs)
	for i, j := range jobs {
		if errs[i] != nil {
			out[i] = BatchDecision{Decision: badReply(errs[i])}
			continue
		}
		out[i] = BatchDecision{Decision: p.decideResult(results[i], j.Attempt, r.Now), Status: results[i].Status}
	}
	return out
}

// decideResult decides one result of a batch as Decide decides a one-event
// reply of the result's status: its error is the body, and a 2xx carries the
// jobs of a jobs event. A result has no headers, so no Retry-After.
func (p Policy) decideResult(res wire.Result, attempt int, now time.Time) Decision {
	if is2xx(res.Status) {
		jobs, err := checkJobs(res.Jobs)
		if err != nil {
			return badReply(err)
		}
		if len(jobs) == 0 {
			return Decision{Kind: KindAck}
		}
		return Decision{Kind: KindPublish, Jobs: jobs}
	}
	return p.decideFailure(Reply{Status: res.Status, Header: http.Header{}, Body: []byte(res.Error), Attempt: attempt, Now: now})
}

// retry decides between another attempt and the dead-letter queue.
func (p Policy) retry(r Reply, code, reason string) Decision {
	reason = trimReason(reason)
	if r.Attempt >= p.MaxAttempts {
		return Decision{Kind: KindDeadLetter, Code: code, Reason: reason}
	}
	delay := p.backoff(r.Attempt)
	if ra, ok := retryAfter(r.Header, r.Now); ok && ra > delay {
		delay = ra // never sooner than the function asked
	}
	return Decision{Kind: KindRetry, Delay: delay, Code: code, Reason: reason}
}

// backoff is capped exponential backoff with full jitter:
// uniform in [0, min(BackoffMax, BackoffBase·2^(attempt-1))].
func (p Policy) backoff(attempt int) time.Duration {
	ceiling := p.BackoffMax
	if attempt < 1 {
		attempt = 1
	}
	if shift := attempt - 1; shift < 62 && p.BackoffBase > 0 {
		if d := p.BackoffBase << shift; d > 0 && d>>shift == p.BackoffBase && d < ceiling {
			ceiling = d
		}
	}
	if ceiling <= 0 {
		return 0
	}
	if p.Jitter != nil {
		return p.Jitter(ceiling)
	}
	return rand.N(ceiling + 1)
}

// maxRetryAfter bounds Retry-After so that a bogus value cannot park a job
// for centuries (or overflow a time.Duration).
const maxRetryAfter = 365 * 24 * time.Hour

// retryAfter reads Retry-After as delay-seconds or an HTTP-date.
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		if now.IsZero() {
			now = time.Now()
		}
		return min(max(t.Sub(now), 0), maxRetryAfter), true
	}
	return 0, false
}

// The bridge's own rows (the last table above): deliveries that no reply
// decides.

// earlyTolerance: a delayed message that comes back at most this early runs now.
// Zero: a job never runs before its due time; with 10 ms buckets it runs at
// most about 10 ms late.
const earlyTolerance = 0

// early decides for a delivery just out of the inbox, before it is sent:
// one that came back from the delay queues more than earlyTolerance before
// its due time goes down the ladder again (KindRedelay, Delay = the time
// left). ok is false for a delivery that is due (or carries no due time),
// which is sent to the function.
func early(h amqp.Table, now time.Time) (dec Decision, ok bool) {
	remaining, ok := jobqueue.DueIn(h, now)
	if !ok || remaining <= earlyTolerance {
		return Decision{}, false
	}
	return Decision{Kind: KindRedelay, Delay: remaining}, true
}

// notSent decides for a delivery the bridge holds but has not sent when it
// shuts down: the next consumer gets it.
func notSent() Decision { return Decision{Kind: KindRequeue} }

// shutdownInFlight decides for a delivery whose call to the function the
// bridge's own shutdown cut short: not a failure of the job, so no attempt.
func shutdownInFlight(err error) Decision {
	return Decision{Kind: KindRequeue, Reason: trimReason(err.Error())}
}

// handedBack decides for a delivery the bridge gives up because it has
// judged its function down: a transport failure of a call made while (or
// by which) it paused, or a delivery waiting in its prefetch when it
// paused. Not a failure of the job, so no attempt: the queue gives it to
// another consumer.
func handedBack(reason string) Decision {
	return Decision{Kind: KindRequeue, Reason: trimReason("handed back, the step function is unreachable: " + reason)}
}

// functionSign is what one call says about the function's health.
type functionSign int

const (
	signNone functionSign = iota // nothing: the bridge's own shutdown cut the call short
	signUp                       // an HTTP answer, whatever its status: the function is reachable
	signDown                     // a transport failure: counts toward PauseAfter
)

// functionSignOf reads r for the pause ("The pause" at the top of this
// file).
func functionSignOf(r Reply) functionSign {
	switch {
	case r.Err == nil:
		return signUp
	case r.ShuttingDown:
		return signNone
	}
	return signDown
}

// connectionLost decides for a delivery whose session closed before it was
// sent (a refused batch's job waiting to go again alone): it cannot be
// settled any more, and the broker redelivers it.
func connectionLost() Decision {
	return Decision{Kind: KindRequeue, Reason: "rabbitmq connection lost"}
}

// mayHandOn tells whether a reply's job may be handed on: one due now (a
// delayed job waits in the delay queues).
func mayHandOn(j ReplyJob) bool { return j.DelayMs == 0 }

// handedOnSucceeded tells whether a job handed on was run there for good:
// answered 2xx, and what that answer asked to publish confirmed. Then any
// other delivery of it could only re-emit jobs already in the queue, and
// its copy is acked without a call (handedOnCopy).
func handedOnSucceeded(dec Decision, pubErr error) bool {
	return pubErr == nil && (dec.Kind == KindPublish || dec.Kind == KindAck)
}

// handOnForeignDelay: how long the copy of a job another bridge handed on
// waits before it is sent (foreignCopy). Only if that bridge failed to run
// it (it died) does the job wait this long.
const handOnForeignDelay = time.Second

// foreignCopy decides for a delivery just out of the inbox that is the
// copy of a job another bridge handed on (marked, but not with instance),
// not yet delayed: it goes down the delay ladder for delay (KindRedelay),
// and is sent as any delivery when it comes back. ok is false for any
// other delivery.
func foreignCopy(h amqp.Table, instance string, delay time.Duration) (dec Decision, ok bool) {
	mark, marked := jobqueue.HeaderString(h, headerHandedOn)
	if !marked || mark == instance {
		return Decision{}, false
	}
	if _, delayed := h[jobqueue.HeaderDue]; delayed {
		return Decision{}, false
	}
	return Decision{Kind: KindRedelay, Delay: delay}, true
}

// handedOnCopy decides for the queue's copy of a job handed on that
// succeeded (handedOnSucceeded).
func handedOnCopy() Decision { return Decision{Kind: KindAckCopy} }

// publishFailed replaces a delivery's decision when what it asked to
// publish (jobs, a retry, a dead letter, a redelay) was not confirmed: the
// delivery is decided again when it comes back, and the function is
// idempotent per job id.
func publishFailed(err error) Decision { return Decision{Kind: KindRequeue, Reason: err.Error()} }

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func statusReason(r Reply) string {
	if s := strings.TrimSpace(string(r.Body)); s != "" {
		return trimReason(s)
	}
	if t := http.StatusText(r.Status); t != "" {
		return t
	}
	return "HTTP " + strconv.Itoa(r.Status)
}

// trimReason cuts s to MaxReasonBytes without splitting a UTF-8 sequence.
func trimReason(s string) string {
	s = strings.TrimSpace(s)
	if len(s) <= MaxReasonBytes {
		return s
	}
	cut := MaxReasonBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
