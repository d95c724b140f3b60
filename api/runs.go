package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

// Runs:
//
//	GET  /api/v1/runs?status=&blueprint=&limit=&continue=  a page of runs, newest first
//	POST /api/v1/runs                                       start a run
//	GET  /api/v1/runs/{id}                                  a run with its steps (stepflow status --json)
//	POST /api/v1/runs/{id}/cancel                           cancel a run
//	POST /api/v1/runs/{id}/resume                           resume a run at its awaiting step (resume.go)
func (s *Server) routeRuns() {
	s.handle("GET /api/v1/runs", open, s.listRuns)
	s.handle("POST /api/v1/runs", write, s.startRun)
	s.handle("GET /api/v1/runs/{id}", open, s.getRun)
	s.handle("POST /api/v1/runs/{id}/cancel", write, s.cancelRun)
	s.handle("POST /api/v1/runs/{id}/resume", write, s.resumeRun)
}

// RunList is the answer to GET /api/v1/runs: Kubernetes' list shape.
type RunList struct {
	Items    []client.RunSummary `json:"items"`
	Metadata ListMetadata        `json:"metadata"`
}

// ListMetadata carries a list's continuation token: pass it as ?continue=
// (with the same filters) for the next page; absent on the last page.
type ListMetadata struct {
	Continue string `json:"continue,omitempty"`
}

func (s *Server) listRuns(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "status", "blueprint", "limit", "continue")
	if err != nil {
		return err
	}
	limit, err := intParam(q, "limit", client.DefaultRunsLimit, client.MaxRunsLimit)
	if err != nil {
		return err
	}
	list, err := s.client.Runs(r.Context(), client.RunFilter{
		Status: workflow.RunStatus(q.Get("status")), BlueprintID: q.Get("blueprint"),
		Limit: limit, Continue: q.Get("continue"),
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, RunList{Items: list.Runs, Metadata: ListMetadata{Continue: list.Continue}})
	return nil
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request) error {
	res, err := s.client.Result(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// StartRequest is the body of POST /api/v1/runs: a blueprint, inline or by
// id, its input and optionally the run's id.
type StartRequest struct {
	Blueprint   json.RawMessage `json:"blueprint,omitempty"`
	BlueprintID string          `json:"blueprintId,omitempty"`
	Input       json.RawMessage `json:"input,omitempty"`
	RunID       string          `json:"runId,omitempty"`
}

// Started is the answer to POST /api/v1/runs (201, with the run's URL as
// Location).
type Started struct {
	RunID       string             `json:"runId"`
	BlueprintID string             `json:"blueprintId"`
	Status      workflow.RunStatus `json:"status"`
}

func (s *Server) startRun(w http.ResponseWriter, r *http.Request) error {
	var req StartRequest
	if err := s.decodeBody(w, r, &req, false); err != nil {
		return err
	}
	bp, where, err := s.blueprintOf(r, req)
	if err != nil {
		return err
	}
	input, err := inputOf(req.Input)
	if err != nil {
		return err
	}
	if len(s.o.Blueprints) > 0 {
		// Subflows: the server knows the folder the function finds
		// children in, so a child found neither there nor stored is
		// refused now, not failed when the step runs.
		if err := s.client.CheckSubflows(r.Context(), bp, s.o.Blueprints); err != nil {
			if e := invalidBlueprint(where, err); e != nil {
				return e
			}
			return err
		}
	}
	runID, err := s.client.Start(r.Context(), bp, input, client.StartOptions{RunID: req.RunID})
	noted(r).runID = runID
	if err != nil && runID == "" {
		if e := invalidBlueprint(where, err); e != nil {
			return e
		}
		if errors.Is(err, client.ErrRunExists) {
			return &Error{Code: http.StatusConflict, Msg: fmt.Sprintf("run %s already exists", req.RunID)}
		}
		return err
	}
	if err != nil {
		// Recorded, but a start job was not published: the reconciler
		// republishes it once the run counts as stalled.
		s.o.Logger.Warn("run started without all its start jobs published", "run_id", runID, "err", err)
		w.Header().Set("Warning", "299 - "+strconv.Quote(err.Error()))
	} else {
		s.o.Logger.Info("run started", "run_id", runID, "blueprint_id", bp.ID)
	}
	w.Header().Set("Location", s.o.PublicURL+"/api/v1/runs/"+url.PathEscape(runID))
	writeJSON(w, http.StatusCreated, Started{RunID: runID, BlueprintID: bp.ID, Status: workflow.RunRunning})
	return nil
}

// blueprintOf finds the request's blueprint, and says where it came from
// (the JSON path its problems are reported under).
func (s *Server) blueprintOf(r *http.Request, req StartRequest) (*workflow.Blueprint, string, error) {
	inline := len(req.Blueprint) > 0 && !bytes.Equal(bytes.TrimSpace(req.Blueprint), []byte("null"))
	switch {
	case inline && req.BlueprintID != "":
		return nil, "", badRequest("give blueprint or blueprintId, not both")
	case inline:
		bp, err := workflow.Decode(req.Blueprint)
		var derr *workflow.DecodeError
		if errors.As(err, &derr) {
			field := "blueprint"
			if derr.Path != "" {
				field += "." + derr.Path
			}
			return nil, "", &Error{Code: http.StatusBadRequest, Msg: field + ": " + derr.Msg, Causes: []Cause{{Field: field, Message: derr.Msg}}}
		}
		return bp, "blueprint", err
	case req.BlueprintID != "":
		if bp, ok := s.o.Blueprints[req.BlueprintID]; ok {
			return bp, "blueprintId", nil
		}
		bp, err := s.client.Blueprint(r.Context(), req.BlueprintID)
		if errors.Is(err, client.ErrBlueprintNotFound) {
			e := badRequest("blueprintId %q: no such blueprint (none in the server's --blueprints, and no run has used one)", req.BlueprintID)
			e.Causes = []Cause{{Field: "blueprintId", Message: "no such blueprint"}}
			return nil, "", e
		}
		return bp, "blueprintId", err
	}
	return nil, "", &Error{Code: http.StatusBadRequest, Msg: "blueprint or blueprintId: one is required",
		Causes: []Cause{{Field: "blueprint", Message: "required, or blueprintId"}}}
}

// inputOf reads the run's input: a JSON object, or nothing.
func inputOf(raw json.RawMessage) (map[string]any, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return map[string]any{}, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, badRequest("input: %v", err) // the body decoded, so this does not happen
	}
	m, ok := v.(map[string]any)
	if !ok {
		e := badRequest("input: expected an object (the run's initial context), got %s", jsonType(v))
		e.Causes = []Cause{{Field: "input", Message: "expected an object"}}
		return nil, e
	}
	return m, nil
}

func jsonType(v any) string {
	switch v.(type) {
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

// Cancelled is the answer to POST /api/v1/runs/{id}/cancel.
type Cancelled struct {
	RunID  string             `json:"runId"`
	Status workflow.RunStatus `json:"status"`
}

func (s *Server) cancelRun(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	st, err := s.client.Cancel(r.Context(), id)
	if err != nil {
		return err
	}
	if st != workflow.RunCancelled {
		return &Error{Code: http.StatusConflict, Msg: fmt.Sprintf("run %s is already %s", id, st)}
	}
	s.o.Logger.Info("run cancelled", "run_id", id)
	writeJSON(w, http.StatusOK, Cancelled{RunID: id, Status: st})
	return nil
}

// query returns r's query parameters, refusing any not in known (a typo
// would otherwise list everything).
func query(r *http.Request, known ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("query: %v", err)
	}
	var causes []Cause
	for _, name := range slices.Sorted(maps.Keys(q)) {
		if !slices.Contains(known, name) {
			causes = append(causes, Cause{Field: name, Message: "unknown query parameter"})
		}
		if len(q[name]) > 1 {
			causes = append(causes, Cause{Field: name, Message: "given more than once"})
		}
	}
	if len(causes) > 0 {
		return nil, &Error{Code: http.StatusBadRequest, Msg: fmt.Sprintf("query parameter %s: %s (this endpoint takes %v)", causes[0].Field, causes[0].Message, known), Causes: causes}
	}
	return q, nil
}

// intParam reads an integer query parameter between 1 and most (def when
// absent).
func intParam(q url.Values, name string, def, most int) (int, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		e := badRequest("%s %q: want an integer from 1 to %d", name, v, most)
		e.Causes = []Cause{{Field: name, Message: fmt.Sprintf("want an integer from 1 to %d", most)}}
		return 0, e
	}
	return n, nil
}
