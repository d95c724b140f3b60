package inprocess

import (
	"net/http"
	"sync"
)

// Refusal is the reason a Refuser gives the jobs it refuses.
const Refusal = "refused once by the test"

// Refuser is fault injection between the bridge and the function
// (Options.Handler: Refuser.Wrap): the first request of each marked run is
// answered 400, which the bridge dead-letters at once; later requests
// reach the function. It reads the run from ce-subject, so it needs one job
// per request (Options.Bridge with BatchSize 1).
type Refuser struct{ runs sync.Map } // run id → struct{}

// RefuseOnce marks runID: its next request is refused.
func (r *Refuser) RefuseOnce(runID string) { r.runs.Store(runID, struct{}{}) }

// Wrap puts the refuser in front of next.
func (r *Refuser) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if _, ok := r.runs.LoadAndDelete(req.Header.Get("ce-subject")); ok {
			http.Error(w, Refusal, http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, req)
	})
}

// ApprovalBlueprint is a run that awaits: start → review (wait) → approve
// or reject, by the resume's action.
const ApprovalBlueprint = `{"id": "approval", "nodes": [
  {"id": "start", "uses": "noop"},
  {"id": "review", "uses": "wait"},
  {"id": "approve", "uses": "transform", "params": {"expression": "'approved by ' + input.by"}},
  {"id": "reject", "uses": "transform", "params": {"expression": "'rejected by ' + input.by"}}
], "edges": [
  {"source": "start", "target": "review"},
  {"source": "review", "target": "approve", "action": "approve"},
  {"source": "review", "target": "reject", "action": "reject"}
]}`
