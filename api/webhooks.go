package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
)

// Webhooks:
//
//	POST /webhooks/{run}/{node}/{token}?action=  resume the run at the wait node after webhook node {node}
//
// The URL is a webhook node's output ({url, event}, built on the
// function's STEPFLOW_PUBLIC_URL). Its token is the credential, not the
// API token: random, stored hashed, good for one request. The JSON body is
// the wait node's output; ?action= routes its edges.
func (s *Server) routeWebhooks() {
	s.handle("POST /webhooks/{run}/{node}/{token}", ownToken, s.callWebhook)
}

// callWebhook answers 200 with the run's status afterwards; 404 for a run,
// node or token that matches no webhook (not told apart); 410 for a URL
// used already; 409 while the wait node does not await (yet), or once the
// run is over; 400 for a body that is no JSON; 413 for one over the limit.
// A refused request changes nothing.
func (s *Server) callWebhook(w http.ResponseWriter, r *http.Request) error {
	runID := r.PathValue("run")
	noted(r).runID = runID
	q, err := query(r, "action")
	if err != nil {
		return err
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("empty request body: send JSON (it becomes the wait node's output)")
	}
	var output any
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&output); err != nil {
		return jsonError(body, err)
	}
	if dec.More() {
		return badRequest("malformed JSON: data after the top-level value")
	}
	res, err := s.client.ResumeWebhook(r.Context(), runID, r.PathValue("node"), r.PathValue("token"), output, q.Get("action"))
	return s.resumed(w, res, err)
}

// logPath is a request's path as logged: a webhook URL's token, its
// credential, left out.
func logPath(path string) string {
	rest, ok := strings.CutPrefix(path, "/webhooks/")
	if !ok {
		return path
	}
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		return "/webhooks/" + rest[:i+1] + "…"
	}
	return "/webhooks/…"
}
