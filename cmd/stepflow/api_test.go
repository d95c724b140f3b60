package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// execute runs the command line args and returns its exit error.
func execute(t *testing.T, args ...string) *exitError {
	t.Helper()
	r := newRoot()
	r.SetArgs(args)
	err := r.Execute()
	var ee *exitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%v: %v, not an exit error", args, err)
	}
	return ee
}

// The API refuses, before it connects to anything, to listen where others
// reach it without a token, and says why; so does dev.
func TestAPIRefusesAPublicAddressWithoutAToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		says []string
	}{
		{name: "flag", args: []string{"api", "--api-address", "0.0.0.0:8088"},
			says: []string{"--api-address 0.0.0.0:8088 is not a loopback address", "STEPFLOW_API_TOKEN is not set"}},
		{name: "environment", args: []string{"api"}, env: map[string]string{"API_ADDRESS": ":8088"}, says: []string{"--api-address :8088 is not a loopback address"}},
		{name: "dev", args: []string{"dev", "--api-address", "10.0.0.1:8088"}, says: []string{"not a loopback address"}},
		{name: "a short token", args: []string{"api"}, env: map[string]string{"STEPFLOW_API_TOKEN": "secret"}, says: []string{"STEPFLOW_API_TOKEN: want at least 16 characters"}},
		{name: "a bad public URL", args: []string{"api", "--public-url", "stepflow.example.com"}, says: []string{"--public-url"}},
		{name: "no body limit", args: []string{"api", "--api-max-body-bytes", "0"}, says: []string{"--api-max-body-bytes 0: must be positive"}},
		{name: "a bad body limit", args: []string{"api"}, env: map[string]string{"API_MAX_BODY_BYTES": "1MiB"}, says: []string{`API_MAX_BODY_BYTES="1MiB"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			ee := execute(t, tc.args...)
			if ee == nil || ee.code != 2 {
				t.Fatalf("%v: %v, want exit 2", tc.args, ee)
			}
			for _, s := range tc.says {
				if !strings.Contains(ee.Error(), s) {
					t.Errorf("%q does not say %q", ee, s)
				}
			}
		})
	}
}

// start refuses a node type the step function does not serve, naming it,
// before it records anything (exit 2, not the connection's exit 1).
func TestStartRefusesAnUnknownNodeType(t *testing.T) {
	path := filepath.Join(t.TempDir(), "odd.json")
	if err := os.WriteFile(path, []byte(`{"id": "odd", "nodes": [{"id": "a", "uses": "frobnicate"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	ee := execute(t, "start", path, "--postgres-url", "postgres://nobody@127.0.0.1:1/none")
	if ee == nil || ee.code != 2 || !strings.Contains(ee.Error(), `nodes[0].uses: unknown node type "frobnicate"`) || !strings.Contains(ee.Error(), path) {
		t.Fatalf("start of a blueprint with an unknown node type: %v, want exit 2 naming the file and frobnicate", ee)
	}
}
