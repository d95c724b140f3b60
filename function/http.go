package function

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stepflow/stepflow/internal/wire"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// ServeHTTP serves one CloudEvent per request (binary or structured mode),
// or a CloudEvents batch (wire.BatchContentType), with sdk-go's HTTP
// bindings, calling the step algorithm in the request's own goroutine and
// context.
//
// `stepflow function` serves this rather than func-go's CloudEvents
// handler: that handler (sdk-go v2.16 EventReceiver) hands each request's
// message to whichever request goroutine is waiting on a shared channel, so
// one request whose client went away before its message was taken leaves
// every later request waiting for the next one to arrive; and it takes no
// batches. Under Knative the func-go scaffolding still uses it; see
// docs/knative.md.
func (f *Function) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST a CloudEvent", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == wire.BatchContentType {
		f.serveBatch(w, r)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxEventBytes)
	e, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		f.badRequest(w, err, "not a CloudEvent")
		return
	}
	resp, release, err := f.handleOne(r.Context(), *e)
	defer f.releaseLater(release)
	if err != nil {
		status, msg := http.StatusInternalServerError, err.Error()
		var res *cehttp.Result
		if protocol.ResultAs(err, &res) && res.StatusCode > 100 && res.StatusCode < 600 {
			status, msg = res.StatusCode, fmt.Errorf(res.Format, res.Args...).Error()
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = fmt.Fprint(w, msg)
		return
	}
	if resp == nil {
		w.WriteHeader(http.StatusOK)
		return
	}
	if err := cehttp.WriteResponseWriter(r.Context(), binding.ToMessage(resp), http.StatusOK, w); err != nil {
		f.log.Error("write reply", "err", err)
	}
}

// serveBatch answers a batch of job events with a batch of result events:
// one per job, in order, each with its job's id (see docs/contract.md).
func (f *Function) serveBatch(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBatchBytes)
	events, err := cehttp.NewEventsFromHTTPRequest(r)
	if err != nil {
		f.badRequest(w, err, "not a CloudEvents batch")
		return
	}
	if len(events) == 0 || len(events) > wire.MaxBatch {
		f.metrics.replies.WithLabelValues("400", "bad_batch").Inc()
		http.Error(w, fmt.Sprintf("a batch holds 1 to %d events, got %d", wire.MaxBatch, len(events)), http.StatusBadRequest)
		return
	}
	// An event that is not a valid CloudEvent is answered alone, with 400;
	// the others run.
	results := make([]wire.Result, len(events))
	var valid []event.Event
	var at []int
	for i, e := range events {
		if err := e.Validate(); err != nil {
			results[i] = f.reject(http.StatusBadRequest, "bad_event", "event %d of the batch: %v", i, err)
			continue
		}
		valid, at = append(valid, e), append(at, i)
	}
	if len(valid) > 0 {
		rs, release := f.handleBatch(r.Context(), valid)
		defer f.releaseLater(release)
		for j, res := range rs {
			results[at[j]] = res
		}
	}
	out := make([]event.Event, len(events))
	for i, e := range events {
		re := event.New()
		id := e.ID()
		if id == "" {
			id = fmt.Sprintf("batch-event-%d", i)
		}
		re.SetID(id)
		re.SetType(wire.ResultEventType)
		re.SetSource(wire.FunctionSource)
		if s := e.Subject(); s != "" {
			re.SetSubject(s)
		}
		if err := re.SetData(event.ApplicationJSON, results[i]); err != nil {
			http.Error(w, "encode result: "+err.Error(), http.StatusInternalServerError)
			return
		}
		out[i] = re
	}
	w.Header().Set("Content-Type", wire.BatchContentType)
	if err := json.NewEncoder(w).Encode(out); err != nil {
		f.log.Error("write batch reply", "err", err)
	}
}

// releaseLater releases a request's leases once its answer is out, off
// the answer's path (see handleBatch); Stop waits for it.
func (f *Function) releaseLater(release func()) {
	f.relMu.Lock()
	defer f.relMu.Unlock()
	if f.stopping {
		// A request that outlived the server's drain: Stop is waiting
		// for the releases already started, not for this one.
		release()
		return
	}
	f.releasing.Go(release)
}

func (f *Function) badRequest(w http.ResponseWriter, err error, what string) {
	status := http.StatusBadRequest
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		status = http.StatusRequestEntityTooLarge
	}
	f.metrics.replies.WithLabelValues(fmt.Sprint(status), "bad_event").Inc()
	http.Error(w, what+": "+err.Error(), status)
}

// maxEventBytes bounds a request body; a job is far smaller.
const maxEventBytes = 1 << 20

// maxBatchBytes bounds a batch request body.
const maxBatchBytes = 8 << 20

// Health serves /health/readiness and /health/liveness as func-go does.
func (f *Function) Health() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health/readiness", func(w http.ResponseWriter, r *http.Request) {
		ok, err := f.Ready(r.Context())
		switch {
		case err != nil:
			http.Error(w, "error checking readiness: "+err.Error(), http.StatusInternalServerError)
		case !ok:
			http.Error(w, "function not yet ready", http.StatusServiceUnavailable)
		default:
			fmt.Fprint(w, "READY")
		}
	})
	mux.HandleFunc("/health/liveness", func(w http.ResponseWriter, r *http.Request) {
		ok, err := f.Alive(r.Context())
		switch {
		case err != nil:
			http.Error(w, "error checking liveness: "+err.Error(), http.StatusInternalServerError)
		case !ok:
			http.Error(w, "function not alive", http.StatusServiceUnavailable)
		default:
			fmt.Fprint(w, "ALIVE")
		}
	})
	return mux
}
