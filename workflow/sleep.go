package workflow

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"time"
)

// maxSleep bounds a sleep's duration.
const maxSleep = 365 * 24 * time.Hour

// flowcraftDuration is Flowcraft's duration string: a whole number and a
// unit, s, m, h or d.
var flowcraftDuration = regexp.MustCompile(`^(\d+)([smhd])$`)

var durationUnits = map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}

// sleepDuration reads params.duration as Flowcraft writes it —
// milliseconds as a number (0 allowed), or "<n>s", "<n>m", "<n>h", "<n>d"
// — or as a Go duration ("1.5s", "500ms"), from 0 to a year.
func sleepDuration(p map[string]any) (time.Duration, error) {
	const want = `milliseconds as a number, "<n>s", "<n>m", "<n>h", "<n>d" or a Go duration such as "1.5s"`
	var d time.Duration
	switch v := p["duration"].(type) {
	case nil:
		return 0, errors.New("duration: required, " + want)
	case float64:
		if math.IsNaN(v) || v < 0 || v > float64(maxSleep/time.Millisecond) {
			return 0, fmt.Errorf("duration %v: must be between 0 and %d ms (a year)", v, maxSleep/time.Millisecond)
		}
		d = time.Duration(v * float64(time.Millisecond))
	case string:
		if m := flowcraftDuration.FindStringSubmatch(v); m != nil {
			n, err := strconv.ParseInt(m[1], 10, 64)
			unit := durationUnits[m[2]]
			if err != nil || n > int64(maxSleep/unit) {
				return 0, fmt.Errorf("duration %q: must be at most a year", v)
			}
			d = time.Duration(n) * unit
			break
		}
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return 0, fmt.Errorf("duration %q is not a duration: use %s", v, want)
		}
	default:
		return 0, fmt.Errorf("duration: got %s, want %s", jsonType(v), want)
	}
	if d < 0 || d > maxSleep {
		return 0, fmt.Errorf("duration %v: must be between 0 and a year", p["duration"])
	}
	return d, nil
}

func checkSleepParams(p map[string]any) error {
	_, err := sleepDuration(p)
	return err
}

// sleepNode suspends the run for params.duration, then passes its input
// through. It holds no worker while the run sleeps: the runtime stores the
// wake time and calls the node again when it is due.
func sleepNode(_ context.Context, in NodeInput) (NodeResult, error) {
	if in.Resumed != nil {
		return NodeResult{Output: in.Input}, nil
	}
	d, err := sleepDuration(in.Params)
	if err != nil {
		return NodeResult{}, err
	}
	return NodeResult{}, Suspend(time.Now().Add(d))
}
