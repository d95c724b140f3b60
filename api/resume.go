package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

// ResumeRequest is the body of POST /api/v1/runs/{id}/resume: the awaiting
// wait node, the output it gets (any JSON value; absent: null) and the
// action that routes its edges.
type ResumeRequest struct {
	Node   string          `json:"node"`
	Output json.RawMessage `json:"output,omitempty"`
	Action string          `json:"action,omitempty"`
}

// resumeRun resumes a run at its awaiting step (client.Resume): 200 with
// the run's status afterwards; 409 when the step does not await (resumed
// already, not reached, not a wait node) or the run is over; 404 for an
// unknown run; 400 for a request that names no node of the run or whose
// output its edges cannot route.
func (s *Server) resumeRun(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var req ResumeRequest
	if err := s.decodeBody(w, r, &req, false); err != nil {
		return err
	}
	if req.Node == "" {
		return &Error{Code: http.StatusBadRequest, Msg: "node: required (the awaiting wait node)", Causes: []Cause{{Field: "node", Message: "required"}}}
	}
	var output any
	if raw := bytes.TrimSpace(req.Output); len(raw) > 0 {
		if err := json.Unmarshal(raw, &output); err != nil {
			return badRequest("output: %v", err) // the body decoded, so this does not happen
		}
	}
	res, err := s.client.Resume(r.Context(), id, workflow.Resume{Node: req.Node, Output: output, Action: req.Action})
	return s.resumed(w, res, err)
}

// resumed answers a resume: the result, with a Warning when a job of it
// was not published (the reconciler republishes it).
func (s *Server) resumed(w http.ResponseWriter, res *client.Resumed, err error) error {
	if err != nil && res == nil {
		return err
	}
	if err != nil {
		s.o.Logger.Warn("run resumed without all its jobs published", "run_id", res.RunID, "node_id", res.Node, "err", err)
		w.Header().Set("Warning", "299 - "+strconv.Quote(err.Error()))
	} else {
		s.o.Logger.Info("run resumed", "run_id", res.RunID, "node_id", res.Node, "status", res.Status)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
