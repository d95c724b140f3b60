package function_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	fce "knative.dev/func-go/cloudevents"

	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
)

type httpReply struct {
	status int
	header http.Header
	body   string
	event  *event.Event // the reply event, if the response carries one
}

// post sends e to url as the bridge does: a binary-mode CloudEvent.
func post(t *testing.T, ctx context.Context, url string, e event.Event) httpReply {
	t.Helper()
	req, err := cehttp.NewHTTPRequestFromEvent(ctx, url, e)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if req.Header.Get("Ce-Type") != e.Type() || req.Header.Get("Ce-Id") != e.ID() {
		t.Fatalf("request is not in binary mode: headers %v", req.Header)
	}
	req.Header.Set("X-Delivery-Attempt", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	r := httpReply{status: resp.StatusCode, header: resp.Header, body: string(body)}
	if resp.Header.Get("Ce-Type") != "" {
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		if r.event, err = cehttp.NewEventFromHTTPResponse(resp); err != nil {
			t.Fatalf("reply event: %v", err)
		}
	}
	return r
}

// Through func-go's real CloudEvents handler, the statuses and bodies the
// bridge decides on.
func TestHTTPHandler(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	srv := httptest.NewServer(fce.New(tb.f).Handler)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()

	if code, body := testenv.HTTPGet(t, srv.URL+"/health/readiness"); code != http.StatusOK || body != "READY" {
		t.Errorf("readiness: %d %q", code, body)
	}
	if code, body := testenv.HTTPGet(t, srv.URL+"/health/liveness"); code != http.StatusOK || body != "ALIVE" {
		t.Errorf("liveness: %d %q", code, body)
	}

	runID, starts := tb.createRun(decodeBlueprint(t, pairBlueprint), map[string]any{"k": "v"})

	t.Run("step runs: 200 with the next jobs", func(t *testing.T) {
		r := post(t, ctx, srv.URL, jobEvent(starts[0]))
		if r.status != http.StatusOK || r.event == nil {
			t.Fatalf("status %d, event %v, body %q: want 200 with a reply event", r.status, r.event, r.body)
		}
		if r.event.Type() != wire.JobsEventType || r.event.Subject() != runID || r.event.DataContentType() != event.ApplicationJSON {
			t.Errorf("reply event type %q subject %q content type %q", r.event.Type(), r.event.Subject(), r.event.DataContentType())
		}
		assertTargets(t, "reply", replyJobs(t, r.event), "second:1")
	})

	t.Run("duplicate: 200 re-emitting the stored routing", func(t *testing.T) {
		r := post(t, ctx, srv.URL, jobEvent(starts[0]))
		if r.status != http.StatusOK || r.event == nil {
			t.Fatalf("status %d body %q, want 200 with a reply event", r.status, r.body)
		}
		assertTargets(t, "re-emitted", replyJobs(t, r.event), "second:1")
		if n := tb.probes.count("first"); n != 1 {
			t.Errorf("first ran %d times", n)
		}
	})

	t.Run("nothing follows: 2xx without an event", func(t *testing.T) {
		r := post(t, ctx, srv.URL, jobEvent(job(runID, "pair", "second", 1)))
		if r.status < 200 || r.status > 204 || r.event != nil || r.body != "" {
			t.Errorf("last step: status %d event %v body %q, want 2xx without an event", r.status, r.event, r.body)
		}
		if run := tb.run(runID); run.Status != "completed" {
			t.Errorf("run is %s", run.Status)
		}
	})

	wrongType := jobEvent(starts[0])
	wrongType.SetType("dev.stepflow.other")
	malformed := jobEvent(starts[0])
	if err := malformed.SetData(event.ApplicationJSON, []byte(`{"runId": 7}`)); err != nil {
		t.Fatal(err)
	}
	otherRun, otherStarts := tb.createRun(decodeBlueprint(t, pairBlueprint), nil)
	if err := tb.rdb.Set(tb.ctx, wire.LeaseKey(tb.redisPrefix, otherRun, "first"), "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		e       event.Event
		code    int
		mention string
	}{
		{"wrong event type", wrongType, http.StatusBadRequest, `event type "dev.stepflow.other"`},
		{"malformed job", malformed, http.StatusBadRequest, "not a job JSON object"},
		{"unknown run", jobEvent(job("ghost-run", "pair", "first", 1)), http.StatusUnprocessableEntity, `run "ghost-run" does not exist`},
		{"unknown node", jobEvent(job(otherRun, "pair", "zzz", 1)), http.StatusUnprocessableEntity, `no node "zzz"`},
		{"lease held", jobEvent(otherStarts[0]), http.StatusConflict, "being run by another delivery"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, ctx, srv.URL, tc.e)
			if r.status != tc.code || !strings.Contains(r.body, tc.mention) || r.event != nil {
				t.Errorf("status %d body %q event %v, want %d naming %q", r.status, r.body, r.event, tc.code, tc.mention)
			}
		})
	}

	// An instance that is not started: not ready, and jobs are retried.
	idle := httptest.NewServer(fce.New(tb.newFunction()).Handler)
	t.Cleanup(idle.Close)
	if code, _ := testenv.HTTPGet(t, idle.URL+"/health/readiness"); code != http.StatusServiceUnavailable {
		t.Errorf("readiness of an unstarted function: %d, want 503", code)
	}
	if r := post(t, ctx, idle.URL, jobEvent(starts[0])); r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "not started") {
		t.Errorf("unstarted function: %d %q, want 503 naming it", r.status, r.body)
	}
}
