package workflow

import "testing"

func TestDecideRun(t *testing.T) {
	t.Parallel()
	// A step that succeeded, with the targets of its taken edges.
	succeeded := func(id string, taken ...string) AppliedStep {
		return AppliedStep{NodeID: id, State: StepSucceeded, Taken: taken}
	}
	tests := []struct {
		name    string
		spec    string
		status  RunStatus
		pending int
		states  func(f *fakeStates) // the steps as the commit left them
		applied []AppliedStep
		want    RunDecision
	}{
		{name: "a run that is not running decides nothing", spec: "a->b",
			status: RunCancelled, pending: 1,
			states:  func(f *fakeStates) { f.took("a", map[string]any{"b": 1.0}) },
			applied: []AppliedStep{succeeded("a", "b")},
			want:    RunDecision{Status: RunCancelled, Pending: 1, Finisher: -1}},
		{name: "no applied step decides nothing", spec: "a->b",
			status: RunRunning, pending: 1,
			states: func(*fakeStates) {},
			want:   RunDecision{Status: RunRunning, Pending: 1, Finisher: -1}},
		{name: "a chain's step makes the next ready", spec: "a->b b->c",
			status: RunRunning, pending: 1,
			states:  func(f *fakeStates) { f.took("a", map[string]any{"b": 1.0}) },
			applied: []AppliedStep{succeeded("a", "b")},
			want: RunDecision{Status: RunRunning, Pending: 1, Finisher: -1,
				Ready: []OwnedReady{{ReadyNode: ReadyNode{ID: "b", Input: 1.0}, Owner: 0}}}},
		{name: "a failed step fails the run whatever the others did", spec: "a->b x",
			status: RunRunning, pending: 2,
			states: func(f *fakeStates) {
				f.took("a", map[string]any{"b": 1.0})
				f.status["x"] = StepStatus{State: StepFailed}
			},
			applied: []AppliedStep{succeeded("a", "b"), {NodeID: "x", State: StepFailed, Error: "boom"}},
			want:    RunDecision{Status: RunFailed, Finisher: 1, FailedNode: "x", Error: "boom"}},
		{name: "a retrying step stays pending", spec: "a->b",
			status: RunRunning, pending: 1,
			states:  func(f *fakeStates) { f.status["a"] = StepStatus{State: StepRetrying} },
			applied: []AppliedStep{{NodeID: "a", State: StepRetrying}},
			want:    RunDecision{Status: RunRunning, Pending: 1, Finisher: -1}},
		{name: "a sleeping step stays pending", spec: "a->b",
			status: RunRunning, pending: 1,
			states:  func(f *fakeStates) { f.status["a"] = StepStatus{State: StepSleeping} },
			applied: []AppliedStep{{NodeID: "a", State: StepSleeping}},
			want:    RunDecision{Status: RunRunning, Pending: 1, Finisher: -1}},
		{name: "a step awaiting its fallback makes the fallback ready with its input", spec: "a~>f a->b",
			status: RunRunning, pending: 1,
			states:  func(f *fakeStates) { f.status["a"] = StepStatus{State: StepAwaitingFallback} },
			applied: []AppliedStep{{NodeID: "a", State: StepAwaitingFallback, Fallback: "f", FallbackInput: "in"}},
			want: RunDecision{Status: RunRunning, Pending: 1, Finisher: -1,
				Ready: []OwnedReady{{ReadyNode: ReadyNode{ID: "f", Input: "in"}, Owner: 0}}}},
		{name: "a fallback's result routes the node it recovered", spec: "a~>f a->b",
			status: RunRunning, pending: 1,
			states: func(f *fakeStates) {
				f.resolve("a", StepRecovered, Routing{Taken: []string{"b"}, Deliveries: map[string]any{"b": "F"}})
				f.took("f", nil)
			},
			applied: []AppliedStep{{NodeID: "f", State: StepSucceeded, Recovered: []RecoveredStep{{NodeID: "a", Taken: []string{"b"}}}}},
			want: RunDecision{Status: RunRunning, Pending: 1, Finisher: -1,
				Ready: []OwnedReady{{ReadyNode: ReadyNode{ID: "b", Input: "F"}, Owner: 0}}}},
		{name: "the last step completes the run", spec: "a->b",
			status: RunRunning, pending: 1,
			states: func(f *fakeStates) {
				f.took("a", map[string]any{"b": 1.0})
				f.took("b", nil)
			},
			applied: []AppliedStep{succeeded("b")},
			want:    RunDecision{Status: RunCompleted, Finisher: 0}},
		{name: "of several last steps the last completes the run", spec: "a->b a->c",
			status: RunRunning, pending: 2,
			states: func(f *fakeStates) {
				f.took("a", map[string]any{"b": 1.0, "c": 2.0})
				f.took("b", nil)
				f.took("c", nil)
			},
			applied: []AppliedStep{succeeded("b"), succeeded("c")},
			want:    RunDecision{Status: RunCompleted, Finisher: 1}},
		{name: "an all join is made ready once by predecessors committed together", spec: "a->j b->j",
			status: RunRunning, pending: 2,
			states: func(f *fakeStates) {
				f.took("a", map[string]any{"j": 1.0})
				f.took("b", map[string]any{"j": 2.0})
			},
			applied: []AppliedStep{succeeded("a", "j"), succeeded("b", "j")},
			want: RunDecision{Status: RunRunning, Pending: 1, Finisher: -1,
				Ready: []OwnedReady{{ReadyNode: ReadyNode{ID: "j", Input: map[string]any{"a": 1.0, "b": 2.0}}, Owner: 0}}}},
		{name: "a ready node is owned by the step that routed to it", spec: "a->j b->j",
			status: RunRunning, pending: 2,
			states: func(f *fakeStates) {
				f.took("a", nil)
				f.took("b", map[string]any{"j": 2.0})
			},
			applied: []AppliedStep{succeeded("a"), succeeded("b", "j")},
			want: RunDecision{Status: RunRunning, Pending: 1, Finisher: -1,
				Ready: []OwnedReady{{ReadyNode: ReadyNode{ID: "j", Input: map[string]any{"b": 2.0}}, Owner: 1}}}},
		{name: "a join freed by a skip is owned by the first step", spec: "x a->c b->j c->j",
			status: RunRunning, pending: 2,
			states: func(f *fakeStates) {
				f.took("b", map[string]any{"j": "B"})
				f.took("x", nil)
				f.took("a", nil)
			},
			applied: []AppliedStep{succeeded("x"), succeeded("a")},
			want: RunDecision{Status: RunRunning, Pending: 1, Finisher: -1, Skipped: []string{"c"},
				Ready: []OwnedReady{{ReadyNode: ReadyNode{ID: "j", Input: map[string]any{"b": "B"}}, Owner: 0}}}},
		{name: "an untaken chain is skipped to its end and the run completes", spec: "a->b b->c",
			status: RunRunning, pending: 1,
			states:  func(f *fakeStates) { f.took("a", nil) },
			applied: []AppliedStep{succeeded("a")},
			want:    RunDecision{Status: RunCompleted, Finisher: 0, Skipped: []string{"b", "c"}}},
		{name: "a node that succeeded skips its unused fallback", spec: "a~>f a->b",
			status: RunRunning, pending: 1,
			states:  func(f *fakeStates) { f.took("a", map[string]any{"b": 1.0}) },
			applied: []AppliedStep{succeeded("a", "b")},
			want: RunDecision{Status: RunRunning, Pending: 1, Finisher: -1, Skipped: []string{"f"},
				Ready: []OwnedReady{{ReadyNode: ReadyNode{ID: "b", Input: 1.0}, Owner: 0}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := graph(t, tt.spec)
			f := newFakeStates()
			tt.states(f)
			got := w.DecideRun(tt.status, tt.pending, tt.applied, f)
			if !equal(got, tt.want) {
				t.Errorf("DecideRun =\n  %+v\nwant\n  %+v", got, tt.want)
			}
		})
	}
}

func TestDecideResync(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		spec   string
		states func(f *fakeStates) // every step the run has
		want   Resync
	}{
		{name: "a lost row is made ready again from the routing stored", spec: "a->b b->c",
			states: func(f *fakeStates) {
				f.took("a", map[string]any{"b": 1.0})
				f.took("b", map[string]any{"c": 2.0})
			},
			want: Resync{Transition: Transition{Ready: []ReadyNode{{ID: "c", Input: 2.0}}}, Status: RunRunning, Pending: 1}},
		{name: "a run with every step finished is completed", spec: "a->b",
			states: func(f *fakeStates) {
				f.took("a", map[string]any{"b": 1.0})
				f.took("b", nil)
			},
			want: Resync{Status: RunCompleted}},
		{name: "a missing skip is written and the run completes", spec: "a->b b->c",
			states: func(f *fakeStates) { f.took("a", nil) },
			want:   Resync{Transition: Transition{Skipped: []string{"b", "c"}}, Status: RunCompleted}},
		{name: "a failed step fails the run", spec: "a->b",
			states: func(f *fakeStates) {
				f.took("a", map[string]any{"b": 1.0})
				f.status["b"] = StepStatus{State: StepFailed}
			},
			want: Resync{Status: RunFailed, FailedNode: "b", Error: "node b failed: boom"}},
		{name: "a step in flight keeps a run with a failed step running", spec: "a->b a->c",
			states: func(f *fakeStates) {
				f.took("a", map[string]any{"b": 1.0, "c": 2.0})
				f.status["b"] = StepStatus{State: StepFailed}
				f.status["c"] = StepStatus{State: StepRetrying}
			},
			want: Resync{Status: RunRunning, Pending: 1}},
		{name: "a step awaiting a fallback in flight keeps the run running", spec: "a~>f",
			states: func(f *fakeStates) {
				f.status["a"] = StepStatus{State: StepAwaitingFallback}
				f.status["f"] = StepStatus{State: StepReady}
			},
			want: Resync{Status: RunRunning, Pending: 1}},
		{name: "a step awaiting a fallback that has no step fails the run", spec: "a~>f",
			states: func(f *fakeStates) { f.status["a"] = StepStatus{State: StepAwaitingFallback} },
			want:   Resync{Status: RunFailed, FailedNode: "a", Error: "node a failed: its fallback has no step"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := graph(t, tt.spec)
			f := newFakeStates()
			tt.states(f)
			var steps []StoredStep
			for _, id := range w.NodeIDs() {
				if st, ok := f.status[id]; ok {
					s := StoredStep{NodeID: id, State: st.State}
					if st.State == StepFailed {
						s.Error = "boom"
					}
					steps = append(steps, s)
				}
			}
			if got := w.DecideResync(steps, f); !equal(got, tt.want) {
				t.Errorf("DecideResync =\n  %+v\nwant\n  %+v", got, tt.want)
			}
		})
	}
}
