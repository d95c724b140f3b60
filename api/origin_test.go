package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stepflow/stepflow/api"
	"github.com/stepflow/stepflow/workflow"
)

// Without a token, a write must carry Content-Type: application/json (a
// page of another origin cannot send that without a CORS preflight, which
// the server does not grant) or come from a page of the server itself;
// anything a cross-site page could send as a "simple" request is refused
// and changes nothing.
func TestWritesWithoutTokenRefuseCrossSiteRequests(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{})
	tb.start(nap, nil, "napping")
	tb.start(nap, nil, "same-site")
	tb.start(nap, nil, "same-origin")
	tb.start(nap, nil, "curl")
	start := startBody(t, greet, `, "runId": "forged", "input": {"name": "Ada"}`)
	host := strings.TrimPrefix(tb.url, "http://")
	stillRunning := func(id string) func(*testing.T, reply) {
		return func(t *testing.T, _ reply) {
			t.Helper()
			if res, err := tb.client.Result(tb.ctx, id); err != nil || res.Status != workflow.RunRunning {
				t.Errorf("run %s after the refused write: %v %v, want running", id, res.Status, err)
			}
		}
	}
	noForgedRun := func(t *testing.T, _ reply) {
		t.Helper()
		if r := tb.do("GET", "/api/v1/runs/forged", ""); r.code != http.StatusNotFound {
			t.Errorf("GET the run of a refused start: %d %s, want 404", r.code, r.body)
		}
	}
	noCT := []string{"Content-Type", ""}
	tb.run([]request{
		// What <form method=post>, fetch(..., {mode: "no-cors"}) and
		// navigator.sendBeacon can send from any page, without asking.
		{name: "a bodyless cancel", method: "POST", path: "/api/v1/runs/napping/cancel", headers: noCT, code: 415,
			says: []string{"Content-Type none", "needs Content-Type: application/json"}, check: stillRunning("napping")},
		{name: "a form cancel", method: "POST", path: "/api/v1/runs/napping/cancel", body: "x=1", headers: []string{"Content-Type", "application/x-www-form-urlencoded"}, code: 415,
			says: []string{"application/x-www-form-urlencoded", "needs Content-Type: application/json"}, check: stillRunning("napping")},
		{name: "a text/plain cancel", method: "POST", path: "/api/v1/runs/napping/cancel", body: "{}", headers: []string{"Content-Type", "text/plain;charset=UTF-8"}, code: 415, check: stillRunning("napping")},
		{name: "a start with a JSON body of no type (a Blob)", method: "POST", path: "/api/v1/runs", body: start, headers: noCT, code: 415, check: noForgedRun},
		{name: "a text/plain start", method: "POST", path: "/api/v1/runs", body: start, headers: []string{"Content-Type", "text/plain"}, code: 415, check: noForgedRun},
		{name: "a form resume", method: "POST", path: "/api/v1/runs/napping/resume", body: "node=nap", headers: []string{"Content-Type", "multipart/form-data; boundary=x"}, code: 415, check: stillRunning("napping")},
		{name: "a bodyless replay", method: "POST", path: "/api/v1/dead-letters/replay", headers: noCT, code: 415},

		// A browser marks a request of another page: refused whatever its type.
		{name: "a cross-site cancel", method: "POST", path: "/api/v1/runs/napping/cancel", headers: []string{"Sec-Fetch-Site", "cross-site", "Origin", "http://evil.example"}, code: 403,
			says: []string{"cross-origin write refused", "cross-site", "evil.example"}, check: stillRunning("napping")},
		{name: "a same-site cancel from another port", method: "POST", path: "/api/v1/runs/same-site/cancel", headers: []string{"Sec-Fetch-Site", "same-site", "Content-Type", ""}, code: 403, check: stillRunning("same-site")},
		{name: "a cross-site start from an old browser (Origin only)", method: "POST", path: "/api/v1/runs", body: start, headers: []string{"Origin", "http://evil.example", "Content-Type", "text/plain"}, code: 403, check: noForgedRun},
		{name: "a sandboxed page (Origin null)", method: "POST", path: "/api/v1/runs/napping/cancel", headers: []string{"Origin", "null"}, code: 403, check: stillRunning("napping")},

		// The preflight a cross-origin JSON write needs gets no CORS grant.
		{name: "a preflight", method: "OPTIONS", path: "/api/v1/runs/napping/cancel", headers: []string{"Origin", "http://evil.example", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type"}, code: 405,
			check: func(t *testing.T, r reply) {
				for name := range r.header {
					if strings.HasPrefix(name, "Access-Control-") {
						t.Errorf("the preflight's answer has %s: %v", name, r.header[name])
					}
				}
			}},

		// The server's own pages (the console), and clients that send JSON.
		{name: "the console's cancel (same-origin fetch with JSON)", method: "POST", path: "/api/v1/runs/same-origin/cancel", headers: []string{"Sec-Fetch-Site", "same-origin", "Origin", tb.url}, code: 200},
		{name: "a same-origin cancel of no type", method: "POST", path: "/api/v1/runs/napping/cancel", headers: []string{"Sec-Fetch-Site", "same-origin", "Content-Type", ""}, code: 200},
		{name: "an old browser's same-origin start (Origin is the server)", method: "POST", path: "/api/v1/runs", body: startBody(t, greet, `, "runId": "mine", "input": {"name": "Ada"}`), headers: []string{"Origin", "http://" + host, "Content-Type", ""}, code: 201},
		{name: "curl -X POST -H 'Content-Type: application/json'", method: "POST", path: "/api/v1/runs/curl/cancel", code: 200, says: []string{`"status":"cancelled"`}},
		{name: "a JSON start", method: "POST", path: "/api/v1/runs", body: startBody(t, greet, `, "runId": "json", "input": {"name": "Ada"}`), headers: []string{"Content-Type", "application/json; charset=utf-8"}, code: 201},
	})
}

// With a token the type does not matter: a browser adds no Authorization
// header to another page's request.
func TestWritesWithTokenNeedNoJSONType(t *testing.T) {
	t.Parallel()
	tb := setup(t, setupOptions{api: func(o *api.Options) { o.Token = token }})
	tb.start(nap, nil, "napping")
	tb.run([]request{
		{name: "a bodyless cancel without the token", method: "POST", path: "/api/v1/runs/napping/cancel", headers: []string{"Content-Type", "", "Sec-Fetch-Site", "cross-site"}, code: 401},
		{name: "a bodyless cancel with the token", method: "POST", path: "/api/v1/runs/napping/cancel", headers: []string{"Content-Type", "", "Authorization", "Bearer " + token}, code: 200},
	})
}
