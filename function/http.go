package function

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// ServeHTTP serves one CloudEvent per request (binary or structured mode)
// with sdk-go's HTTP bindings, calling Handle in the request's own
// goroutine and context.
//
// `stepflow function` serves this rather than func-go's CloudEvents
// handler: that handler (sdk-go v2.16 EventReceiver) hands each request's
// message to whichever request goroutine is waiting on a shared channel, so
// one request whose client went away before its message was taken leaves
// every later request waiting for the next one to arrive. Under Knative the
// func-go scaffolding still uses it; see docs/knative.md.
func (f *Function) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST a CloudEvent", http.StatusMethodNotAllowed)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxEventBytes)
	e, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		status := http.StatusBadRequest
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			status = http.StatusRequestEntityTooLarge
		}
		f.metrics.replies.WithLabelValues(fmt.Sprint(status), "bad_event").Inc()
		http.Error(w, "not a CloudEvent: "+err.Error(), status)
		return
	}
	resp, err := f.Handle(r.Context(), *e)
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

// maxEventBytes bounds a request body; a job is far smaller.
const maxEventBytes = 1 << 20

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
