package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that keeps what Errorf reports instead of
// failing the test.
type recorder struct {
	testing.TB
	errors []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func TestAssertJSON(t *testing.T) {
	t.Parallel()
	type pair struct {
		N int    `json:"n"`
		S string `json:"s"`
	}
	for _, tc := range []struct {
		name      string
		got, want any
		equal     bool
	}{
		{"a struct and a map of the same document", pair{1, "x"}, map[string]any{"n": 1, "s": "x"}, true},
		{"an int and a float64", 3, 3.0, true},
		{"JSON text as json.RawMessage", map[string]any{"n": 1}, json.RawMessage(`{ "n": 1 }`), true},
		{"a string is a JSON string, not JSON text", "ann", "ann", true},
		{"a string does not equal the JSON text it holds", map[string]any{"n": 1}, `{"n":1}`, false},
		{"different values", map[string]any{"n": 1}, json.RawMessage(`{"n":2}`), false},
		{"null and an empty object", nil, json.RawMessage(`{}`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &recorder{TB: t}
			AssertJSON(r, "doc", tc.got, tc.want)
			if tc.equal && len(r.errors) > 0 {
				t.Errorf("AssertJSON reported %q, want equal", r.errors)
			}
			if !tc.equal && (len(r.errors) != 1 || !strings.HasPrefix(r.errors[0], "doc:")) {
				t.Errorf("AssertJSON reported %q, want one difference naming doc", r.errors)
			}
		})
	}
}

func TestPoll(t *testing.T) {
	t.Parallel()
	t.Run("returns once cond holds", func(t *testing.T) {
		t.Parallel()
		calls := 0
		err := Poll(t.Context(), 10*time.Second, time.Millisecond, func() (bool, error) {
			calls++
			return calls == 3, nil
		})
		if err != nil || calls != 3 {
			t.Errorf("Poll: %v after %d calls, want nil after 3", err, calls)
		}
	})
	t.Run("names cond's last error when time is up", func(t *testing.T) {
		t.Parallel()
		refused := errors.New("connection refused")
		err := Poll(t.Context(), 20*time.Millisecond, time.Millisecond, func() (bool, error) { return false, refused })
		if !errors.Is(err, refused) || !strings.Contains(err.Error(), "not within 20ms") {
			t.Errorf("Poll: %v, want not within 20ms wrapping %v", err, refused)
		}
	})
	t.Run("stops with its context", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancelCause(t.Context())
		stop := errors.New("the test is over")
		err := Poll(ctx, time.Minute, time.Millisecond, func() (bool, error) {
			cancel(stop)
			return false, nil
		})
		if !errors.Is(err, stop) {
			t.Errorf("Poll: %v, want the context's cause", err)
		}
	})
}

func TestEventually(t *testing.T) {
	t.Parallel()
	start := time.Now()
	Eventually(t, 10*time.Second, "20ms to pass", func() bool { return time.Since(start) >= 20*time.Millisecond })
}
