package api

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/stepflow/stepflow/client"
)

// Dead letters (the jobs the bridge dead-lettered, as the reconciler
// recorded them):
//
//	GET  /api/v1/dead-letters?run=&all=&limit=&continue=  a page, oldest first (stepflow dlq list)
//	POST /api/v1/dead-letters/replay                      re-drive them (stepflow dlq replay)
func (s *Server) routeDeadLetters() {
	s.handle("GET /api/v1/dead-letters", open, s.listDeadLetters)
	s.handle("POST /api/v1/dead-letters/replay", write, s.replayDeadLetters)
}

// Page sizes of GET /api/v1/dead-letters.
const (
	DefaultDeadLettersLimit = 100
	MaxDeadLettersLimit     = 1000
)

// DeadLetterList is the answer to GET /api/v1/dead-letters; its items are
// what `stepflow dlq list --json` prints.
type DeadLetterList struct {
	Items    []client.DeadLetter `json:"items"`
	Metadata ListMetadata        `json:"metadata"`
}

// deadLetterCursor is what a dead letters' continuation token holds: the
// last record of the page and the filter it was made for.
type deadLetterCursor struct {
	After int64  `json:"a"`
	Run   string `json:"r,omitempty"`
	All   bool   `json:"all,omitempty"`
}

func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "run", "all", "limit", "continue")
	if err != nil {
		return err
	}
	limit, err := intParam(q, "limit", DefaultDeadLettersLimit, MaxDeadLettersLimit)
	if err != nil {
		return err
	}
	f := client.DeadLetterFilter{RunID: q.Get("run"), Limit: limit + 1}
	if v := q.Get("all"); v != "" {
		if f.Replayed, err = strconv.ParseBool(v); err != nil {
			e := badRequest("all %q: want true or false", v)
			e.Causes = []Cause{{Field: "all", Message: "want true or false"}}
			return e
		}
	}
	if token := q.Get("continue"); token != "" {
		cur, err := decodeDeadLetterCursor(token)
		if err != nil {
			return err
		}
		if cur.Run != f.RunID || cur.All != f.Replayed {
			return badRequest("continue token: made for the filter run=%q all=%v, not run=%q all=%v", cur.Run, cur.All, f.RunID, f.Replayed)
		}
		f.AfterID = cur.After
	}
	dls, err := s.client.DeadLetters(r.Context(), f)
	if err != nil {
		return err
	}
	out := DeadLetterList{Items: dls}
	if len(dls) > limit {
		out.Items = dls[:limit]
		b, _ := json.Marshal(deadLetterCursor{After: dls[limit-1].ID, Run: f.RunID, All: f.Replayed})
		out.Metadata.Continue = base64.RawURLEncoding.EncodeToString(b)
	}
	if out.Items == nil {
		out.Items = []client.DeadLetter{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func decodeDeadLetterCursor(token string) (deadLetterCursor, error) {
	var c deadLetterCursor
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil || c.After <= 0 {
		e := badRequest("continue token %.40q: not one a listing of dead letters gave", token)
		e.Causes = []Cause{{Field: "continue", Message: "not a token of this listing"}}
		return c, e
	}
	return c, nil
}

// ReplayRequest is the body of POST /api/v1/dead-letters/replay: one run's
// dead letters, or, explicitly, all of them (as `stepflow dlq replay --run
// ID | --all`).
type ReplayRequest struct {
	RunID string `json:"runId,omitempty"`
	All   bool   `json:"all,omitempty"`
}

func (s *Server) replayDeadLetters(w http.ResponseWriter, r *http.Request) error {
	var req ReplayRequest
	if err := s.decodeBody(w, r, &req, false); err != nil {
		return err
	}
	if (req.RunID == "") == !req.All {
		return &Error{Code: http.StatusBadRequest, Msg: `give exactly one of "runId" (one run's dead letters) or "all": true (every dead letter)`,
			Causes: []Cause{{Field: "runId", Message: "exactly one of runId or all"}, {Field: "all", Message: "exactly one of runId or all"}}}
	}
	noted(r).runID = req.RunID
	res, err := s.client.ReplayDeadLetters(r.Context(), req.RunID)
	if err != nil {
		return fmt.Errorf("replay dead letters: %w", err)
	}
	if res.Runs == nil {
		res.Runs = []string{}
	}
	s.o.Logger.Info("dead letters replayed", "run_id", req.RunID, "runs", len(res.Runs), "jobs", res.Jobs, "unplayable", len(res.Unplayable))
	writeJSON(w, http.StatusOK, res)
	return nil
}
