package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/function"
	"github.com/stepflow/stepflow/internal/testenv"
)

// TestFunctionAnswersAfterAbandonedRequests: the fault is on the caller's
// side. Callers of the step function give up on a third of their requests
// after a millisecond or two — as the bridge does when a request times
// out, when it shuts down or dies — while other requests keep coming. Every
// request that is not given up on must be answered promptly, and so must
// requests sent one at a time afterwards. Each job names a run that does
// not exist, so a healthy function answers 422 within milliseconds.
//
// This is the failure func-go's CloudEvents handler (cloudevents/sdk-go's
// NewHTTPReceiveHandler, v2.16.2) has: it hands each request to a helper
// goroutine through one shared unbuffered channel, and a helper whose
// request was abandoned can leave without taking a message; from then on
// every request is taken by the next request's helper, and the last one is
// never answered (cloudevents/sdk-go#1224, #1332). The step function served
// through func-go failed this test every time; "stepflow function" now
// serves function.ServeHTTP, which handles each request in its own
// goroutine.
func TestFunctionAnswersAfterAbandonedRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{noProcesses: true})
	// The step function served in this process as "stepflow function"
	// serves it (cmd/stepflow/serve.go: the *function.Function is the
	// handler of "/"). In-process, callers and server share one scheduler,
	// which makes races between them show within seconds (the func-go
	// handler failed here every time).
	f := function.New(function.Options{Registry: nodes.Registry(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := f.StartWith(b.ctx, function.Config{
		PostgresURL: testenv.PostgresURL(), RedisURL: fmt.Sprintf("redis://%s/%d", redisAddr, b.redisDB), RedisPrefix: b.redisPrefix,
		Tables: b.tables, StepTimeout: function.DefaultStepTimeout, PGMaxConns: 4,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Stop(context.Background()) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	// Close, not Shutdown: requests the server never answers would make a
	// graceful shutdown wait forever.
	t.Cleanup(func() { _ = srv.Close() })
	url := "http://" + ln.Addr().String() + "/"
	const (
		workers   = 64
		perWorker = 150
		patience  = 2 * time.Second // a healthy answer takes milliseconds
		probes    = 3
	)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	post := func(ctx context.Context) (int, string, error) {
		body := fmt.Sprintf(`{"runId":"no-such-run-%s","blueprintId":"faults","nodeId":"start"}`, uuid.NewString())
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte(body)))
		if err != nil {
			return 0, "", err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("ce-specversion", "1.0")
		req.Header.Set("ce-id", uuid.NewString())
		req.Header.Set("ce-type", "dev.stepflow.job.v1")
		req.Header.Set("ce-source", "faults")
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		reply, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return resp.StatusCode, string(reply), nil
	}
	// ask sends one request that is not given up on before patience; it
	// returns "" when the answer is the 422 a healthy function gives, or a
	// 503 (PostgreSQL or Redis too busy: the services are shared, and an
	// answer is what this case is about).
	var unavailable atomic.Int64
	ask := func() string {
		ctx, cancel := context.WithTimeout(b.ctx, patience)
		defer cancel()
		start := time.Now()
		status, reply, err := post(ctx)
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return fmt.Sprintf("no answer within %s", patience)
		case err != nil:
			return err.Error()
		case status == http.StatusServiceUnavailable:
			unavailable.Add(1)
		case status != http.StatusUnprocessableEntity:
			return fmt.Sprintf("HTTP %d after %s (%q), want 422 (unknown run)", status, time.Since(start).Round(time.Millisecond), reply)
		}
		return ""
	}

	var answered, abandoned atomic.Int64
	var stalled atomic.Bool
	var mu sync.Mutex
	var problems []string
	var wg sync.WaitGroup
	burstStart := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker && !stalled.Load(); i++ {
				if (w+i)%3 == 0 {
					ctx, cancel := context.WithTimeout(b.ctx, time.Duration(100+(w*31+i*17)%2000)*time.Microsecond)
					_, _, _ = post(ctx)
					cancel()
					abandoned.Add(1)
					continue
				}
				if p := ask(); p != "" {
					stalled.Store(true) // shown: stop the burst
					mu.Lock()
					problems = append(problems, p)
					mu.Unlock()
					continue
				}
				answered.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("burst over after %s", time.Since(burstStart).Round(time.Millisecond))
	t.Logf("burst: %d requests answered (%d of them 503: services busy), %d given up on by the caller, %d not answered properly",
		answered.Load(), unavailable.Load(), abandoned.Load(), len(problems))
	for i, p := range problems {
		if i == 5 {
			t.Errorf("… %d requests in all not answered properly during the burst", len(problems))
			break
		}
		t.Errorf("during the burst, a request that was not given up on: %s", p)
	}
	// Then one request at a time, nothing else in flight.
	for i := range probes {
		if p := ask(); p != "" {
			t.Errorf("request %d of %d, sent alone after the burst: %s", i+1, probes, p)
		}
	}
}
