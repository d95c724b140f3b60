package e2e

// The step function's HTTP endpoint as the bridge uses it: binary-mode
// CloudEvents, many at once.

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/stepflow/stepflow/internal/wire"
)

// postJob POSTs a job for runID as the bridge does and returns the status.
func postJob(ctx context.Context, url, runID string) (int, error) {
	body := fmt.Sprintf(`{"runId":%q,"blueprintId":"chain10","nodeId":"s1"}`, runID)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-id", runID+":s1:1")
	req.Header.Set("ce-type", wire.JobEventType)
	req.Header.Set("ce-source", "e2e")
	req.Header.Set("ce-subject", runID)
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Concurrent requests must each get their answer, and a request sent after
// a burst must be answered at once. This is why `stepflow function` serves
// its own CloudEvents handler (function.ServeHTTP): func-go's (sdk-go's
// EventReceiver) hands each request to the function through one shared
// unbuffered channel; under concurrency a request's message is picked up by
// another request's goroutine, a goroutine whose request ended leaves
// without picking one up, and from then on a request waits for the next
// request to arrive (cloudevents/sdk-go#1224, #1332).
func TestFunctionHTTPDoesNotWedge(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	url := tb.srv.URL + "/"

	const workers, each = 32, 20
	var mu sync.Mutex
	unanswered, wrong := 0, map[int]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				code, err := postJob(ctx, url, uuid.NewString())
				cancel()
				mu.Lock()
				switch {
				case err != nil:
					unanswered++
				case code != http.StatusUnprocessableEntity:
					wrong[code]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(wrong) > 0 {
		t.Errorf("jobs for unknown runs answered %v, want 422 each", wrong)
	}
	if unanswered > 0 {
		t.Errorf("%d of %d concurrent requests got no answer within 1 s (the handler answers an unknown run in milliseconds)", unanswered, workers*each)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	began := time.Now()
	code, err := postJob(ctx, url, uuid.NewString())
	if err != nil {
		t.Errorf("a request sent after the burst got no answer within %s (%v): the endpoint is wedged until another request arrives; %d request(s) stuck in the handler",
			time.Since(began).Round(time.Millisecond), err, tb.http.inflight.Load())
	} else if code != http.StatusUnprocessableEntity {
		t.Errorf("a request after the burst answered %d, want 422", code)
	}
}
