package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every command builds, documents its flags with their environment
// variables, and answers --help.
func TestEveryCommandHasHelp(t *testing.T) {
	root := newRoot()
	var walk func(path []string, names []string)
	seen := 0
	walk = func(path []string, _ []string) {
		cmd, _, err := root.Find(path)
		if err != nil {
			t.Fatalf("find %v: %v", path, err)
		}
		for _, sub := range cmd.Commands() {
			if sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			walk(append(append([]string{}, path...), sub.Name()), nil)
		}
		if len(path) == 0 {
			return
		}
		seen++
		var out bytes.Buffer
		r := newRoot()
		r.SetOut(&out)
		r.SetErr(&out)
		r.SetArgs(append(append([]string{}, path...), "--help"))
		if err := r.Execute(); err != nil {
			t.Errorf("%v --help: %v", path, err)
		}
		help := out.String()
		if !strings.Contains(help, "Usage:") {
			t.Errorf("%v --help printed no usage:\n%s", path, help)
		}
		for _, line := range strings.Split(help, "\n") {
			l := strings.TrimSpace(line)
			if strings.HasPrefix(l, "--") && strings.Contains(l, "-url") && !strings.Contains(l, "(env ") {
				t.Errorf("%v: flag without its environment variable: %s", path, l)
			}
		}
	}
	walk(nil, nil)
	if seen < 12 {
		t.Errorf("only %d commands found", seen)
	}
}

func TestValidateExamples(t *testing.T) {
	paths, _ := filepath.Glob("../../examples/*.json")
	var bps []string
	for _, p := range paths {
		if !strings.HasSuffix(p, ".input.json") {
			bps = append(bps, p)
		}
	}
	r := newRoot()
	var out bytes.Buffer
	r.SetOut(&out)
	r.SetArgs(append([]string{"validate"}, bps...))
	if err := r.Execute(); err != nil {
		t.Fatalf("validate examples: %v", err)
	}
}

func TestBadEnvironmentValueFailsFast(t *testing.T) {
	t.Setenv("STEP_TIMEOUT", "soon")
	r := newRoot()
	r.SetArgs([]string{"function"})
	err := r.Execute()
	if err == nil || !strings.Contains(err.Error(), `STEP_TIMEOUT="soon"`) {
		t.Fatalf("err = %v, want one naming STEP_TIMEOUT", err)
	}
	_ = os.Unsetenv("STEP_TIMEOUT")
}

// A schedule that does not parse stops the reconciler service before it
// connects, with usage's exit code, whether given as a flag or in the
// environment.
func TestReconcilerRefusesABadSchedule(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  string
	}{
		{name: "flag", args: []string{"reconciler", "--schedule", "soon"}},
		{name: "environment", args: []string{"reconciler"}, env: "soon"},
		{name: "dev", args: []string{"dev", "--schedule", "soon"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("RECONCILE_SCHEDULE", tc.env)
			}
			r := newRoot()
			r.SetArgs(tc.args)
			err := r.Execute()
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), `--schedule "soon"`) {
				t.Fatalf("err = %v, want exit 2 naming --schedule", err)
			}
		})
	}
}

// run --local runs the built-ins in process; a subflow finds its child in
// --blueprints, and validate names a child that is missing there.
func TestLocalBuiltins(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int    // 0: success
		wantOut  string // in stdout
		wantErr  string // in stderr or the error
	}{
		{name: "batch", args: []string{"run", "--local", "../../examples/batch.json", "--input", "@../../examples/batch.input.json"},
			wantOut: `"total": 153.87`},
		{name: "loop", args: []string{"run", "--local", "../../examples/loop.json"}, wantOut: `"stepKey": "tick#3"`},
		{name: "subflow with its children", args: []string{"run", "--local", "../../examples/subflow.json", "--input", "@../../examples/subflow.input.json", "--blueprints", "../../examples/subflows"},
			wantOut: `"due": 153.87`},
		{name: "subflow without its children", args: []string{"run", "--local", "../../examples/subflow.json"},
			wantCode: 2, wantErr: `no blueprint "pricing" among those given (none) (give the folder of its children with --blueprints DIR)`},
		{name: "validate finds the child", args: []string{"validate", "../../examples/subflow.json", "--blueprints", "../../examples/subflows"},
			wantOut: "examples/subflow.json: ok"},
		{name: "validate names a missing child", args: []string{"validate", "../../examples/subflow.json", "--blueprints", "../../examples"},
			wantCode: 1, wantErr: `nodes[0].params.blueprintId: no blueprint "pricing" among those given`},
		{name: "a --blueprints that is no folder", args: []string{"validate", "../../examples/subflow.json", "--blueprints", "../../examples/loop.json"},
			wantCode: 2, wantErr: "is not a folder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRoot()
			var out, errOut bytes.Buffer
			r.SetOut(&out)
			r.SetErr(&errOut)
			r.SetArgs(tt.args)
			err := r.Execute()
			code := 0
			var ee *exitError
			if errors.As(err, &ee) {
				code = ee.code
			} else if err != nil {
				t.Fatalf("Execute: %v", err)
			}
			if code != tt.wantCode {
				t.Fatalf("exit code %d (err %v), want %d; stderr %s", code, err, tt.wantCode, errOut.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout lacks %q:\n%s", tt.wantOut, out.String())
			}
			if msg := errOut.String() + fmt.Sprint(err); !strings.Contains(msg, tt.wantErr) {
				t.Errorf("stderr/error lacks %q: %s", tt.wantErr, msg)
			}
		})
	}
}
