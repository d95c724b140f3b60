package faults

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// logLine is the part of a stepflow JSON log line the checks read.
type logLine struct {
	Msg      string `json:"msg"`
	Message  string `json:"message"` // func-go's own lines (zerolog)
	Level    string `json:"level"`
	RunID    string `json:"run_id"`
	NodeID   string `json:"node_id"`
	StepKey  string `json:"step_key"` // a loop iteration's or a dynamic node's step; "" when the node id
	Attempt  int    `json:"attempt"`
	Uses     string `json:"uses"`
	Outcome  string `json:"outcome"`
	Started  int64  `json:"started"`  // unix µs
	Finished int64  `json:"finished"` // unix µs
	Reason   string `json:"reason"`
	Stage    string `json:"stage"`
	Code     string `json:"code"`
}

// attempt is one "node attempt" debug line of the function.
type attempt struct {
	logLine
	file string
	line int
}

type stepKey struct{ run, node string }

func (k stepKey) String() string { return k.run + "/" + k.node }

// logs is what the processes' logs say, across all incarnations.
type logs struct {
	attempts map[stepKey][]attempt
	count    map[string]int // "<process> <msg> <detail>" → lines
}

// readLogs reads the JSON logs of every incarnation of the given
// processes. A line that does not parse is tolerated only as the last
// line of a file (a process killed mid-write).
func readLogs(procs ...*proc) (*logs, error) {
	l := &logs{attempts: map[stepKey][]attempt{}, count: map[string]int{}}
	for _, p := range procs {
		for _, file := range p.Logs() {
			if err := l.readFile(p.name, file); err != nil {
				return nil, err
			}
		}
	}
	for _, as := range l.attempts {
		sort.Slice(as, func(i, j int) bool { return as[i].Started < as[j].Started })
	}
	return l, nil
}

func (l *logs) readFile(procName, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 256<<10), 16<<20)
	n := 0
	var bad []string
	for sc.Scan() {
		n++
		text := sc.Text()
		if !strings.HasPrefix(text, "{") {
			continue // not a log line (a panic trace would show up in the tail on failure)
		}
		var ll logLine
		if err := json.Unmarshal([]byte(text), &ll); err != nil {
			bad = append(bad, fmt.Sprintf("%s:%d: %v", file, n, err))
			continue
		}
		if len(bad) > 0 {
			return fmt.Errorf("log line does not parse: %s", bad[0])
		}
		if ll.Msg == "" {
			ll.Msg = ll.Message
		}
		switch {
		case procName == "function" && ll.Msg == "node attempt":
			k := stepKey{ll.RunID, cmp.Or(ll.StepKey, ll.NodeID)}
			l.attempts[k] = append(l.attempts[k], attempt{logLine: ll, file: file, line: n})
			l.count[procName+" node attempt "+ll.Outcome]++
		case ll.Msg == "job rejected":
			l.count[procName+" rejected "+ll.Reason]++
		case ll.Msg == "step could not complete; the job will be retried":
			l.count[procName+" unavailable "+ll.Stage]++
		case ll.Msg == "delivery settled":
			l.count[procName+" settled "+ll.Outcome]++
			if ll.Code != "" {
				l.count[procName+" settled "+ll.Outcome+" code="+ll.Code]++
			}
		default:
			l.count[procName+" "+ll.Msg]++
		}
	}
	return sc.Err()
}

// overlaps lists every pair of attempts of one (run, node) that ran at the
// same time.
func (l *logs) overlaps() []string {
	var out []string
	for k, as := range l.attempts {
		// Sorted by start: an attempt overlaps a later one when it
		// finished after that one started.
		latest := as[0]
		for _, a := range as[1:] {
			if a.Started < latest.Finished {
				out = append(out, fmt.Sprintf("%s: attempt %d [%d, %d] µs (%s:%d) overlaps attempt %d [%d, %d] µs (%s:%d)",
					k, latest.Attempt, latest.Started, latest.Finished, latest.file, latest.line,
					a.Attempt, a.Started, a.Finished, a.file, a.line))
			}
			if a.Finished > latest.Finished {
				latest = a
			}
		}
	}
	sort.Strings(out)
	return out
}

// summary renders the counters, for the test log.
func (l *logs) summary() string {
	keys := make([]string, 0, len(l.count))
	for k := range l.count {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "  %6d  %s\n", l.count[k], k)
	}
	return sb.String()
}
