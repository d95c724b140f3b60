package workflow

import (
	"strings"
	"testing"
	"time"
)

func TestSleepDurations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		duration any
		want     time.Duration
		wantErr  string
	}{
		{duration: 0.0, want: 0},
		{duration: 20.0, want: 20 * time.Millisecond},
		{duration: 1.5, want: 1500 * time.Microsecond},
		{duration: "5s", want: 5 * time.Second},
		{duration: "10m", want: 10 * time.Minute},
		{duration: "2h", want: 2 * time.Hour},
		{duration: "1d", want: 24 * time.Hour},
		{duration: "365d", want: 365 * 24 * time.Hour},
		{duration: "500ms", want: 500 * time.Millisecond}, // a Go duration
		{duration: "1.5s", want: 1500 * time.Millisecond},
		{duration: "0s", want: 0},
		{duration: "366d", wantErr: "at most a year"},
		{duration: "8760h1m", wantErr: "between 0 and a year"},
		{duration: 31536000001.0, wantErr: "between 0 and 31536000000 ms"},
		{duration: -1.0, wantErr: "between 0 and"},
		{duration: "-1s", wantErr: "between 0 and a year"},
		{duration: "soon", wantErr: `duration "soon" is not a duration: use milliseconds as a number, "<n>s"`},
		{duration: "1w", wantErr: "is not a duration"},
		{duration: true, wantErr: "got a boolean"},
		{duration: nil, wantErr: "duration: required"},
	}
	for _, tt := range tests {
		got, err := sleepDuration(map[string]any{"duration": tt.duration})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%v: %v, %v; want an error with %q", tt.duration, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%v: %v, %v; want %v", tt.duration, got, err, tt.want)
		}
	}
}

// A sleep of 0 passes its input on at once.
func TestRunSleepZero(t *testing.T) {
	t.Parallel()
	res := runDoc(t, newTestNodes().Registry, `{"id":"z","nodes":[{"id":"s","uses":"const","params":{"value":"x"}},{"id":"nap","uses":"sleep","params":{"duration":0}},{"id":"after","uses":"echo"}],
		"edges":[{"source":"s","target":"nap"},{"source":"nap","target":"after"}]}`, nil)
	if res.Status != RunCompleted || res.Output != "x" {
		t.Errorf("status %s output %v, errors %v; want completed with x", res.Status, res.Output, res.Errors)
	}
}
