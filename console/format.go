package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/stepflow/stepflow/workflow"
)

// live reports whether a run of this status may still change by itself or
// by a resume: its page keeps polling.
func live(s workflow.RunStatus) bool { return !s.Final() }

// maxJSONBytes bounds a value shown on a page (an input, an output, the
// context): beyond it the page says how large it is.
const maxJSONBytes = 32 << 10

func (c *Console) funcs() template.FuncMap {
	return template.FuncMap{
		"asset":    c.assetPath,
		"runPath":  runPath,
		"pathPart": url.PathEscape,
		"query":    url.QueryEscape,
		"duration": formatDuration,
		"when":     formatTime,
		"iso":      func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"json":     prettyJSON,
		"short":    short,
		"statusOf": func(s workflow.RunStatus) string { return statusClass(s) },
		"live":     live,
	}
}

// statusClass is the CSS class of a run status: itself when known, so an
// unknown one (a newer server's) is drawn plain rather than guessed at.
func statusClass(s workflow.RunStatus) string {
	switch s {
	case workflow.RunRunning, workflow.RunAwaiting, workflow.RunCompleted, workflow.RunFailed, workflow.RunCancelled:
		return string(s)
	}
	return "unknown"
}

// formatDuration writes milliseconds as a person reads them: 12.3 ms,
// 4.56 s, 3m07s, 2h05m.
func formatDuration(ms float64) string {
	switch d := time.Duration(ms * float64(time.Millisecond)); {
	case ms <= 0:
		return "—"
	case ms < 10:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.0f ms", ms)
	case d < time.Minute:
		return fmt.Sprintf("%.2f s", ms/1000)
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// formatTime is a time in UTC, its date left out when it is today.
func formatTime(t any) string {
	var tt time.Time
	switch v := t.(type) {
	case time.Time:
		tt = v
	case *time.Time:
		if v == nil {
			return "—"
		}
		tt = *v
	default:
		return ""
	}
	if tt.IsZero() {
		return "—"
	}
	tt = tt.UTC()
	if y, m, d := tt.Date(); y == time.Now().UTC().Year() && m == time.Now().UTC().Month() && d == time.Now().UTC().Day() {
		return tt.Format("15:04:05.000")
	}
	return tt.Format("2006-01-02 15:04:05")
}

// prettyJSON is v indented, cut at maxJSONBytes.
func prettyJSON(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // the template escapes
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Sprintf("(not JSON: %v)", err)
	}
	b := bytes.TrimRight(buf.Bytes(), "\n")
	if len(b) <= maxJSONBytes {
		return string(b)
	}
	cut := maxJSONBytes
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return fmt.Sprintf("%s\n… (%d bytes in all; the first %d shown)", b[:cut], len(b), cut)
}

// short cuts s to n runes, with an ellipsis.
func short(n int, s string) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
