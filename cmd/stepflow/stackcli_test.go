package main

import (
	"bytes"
	"testing"

	"github.com/stepflow/stepflow/internal/testenv/inprocess"
)

// stackCLI returns a runner of stepflow commands against s: its tables,
// and its queue for the commands that take one. The runner answers the
// exit code and what the command printed, its error after.
func stackCLI(t *testing.T, s *inprocess.Stack) func(args ...string) (int, string) {
	pg := []string{"--postgres-url", s.PostgresURL,
		"--contexts-table", s.Tables.Contexts, "--statuses-table", s.Tables.Statuses, "--steps-table", s.Tables.Steps,
		"--blueprints-table", s.Tables.Blueprints, "--dead-letters-table", s.Tables.DeadLetters}
	return func(args ...string) (int, string) {
		t.Helper()
		r := newRoot()
		full := append(append([]string{}, args...), pg...)
		if cmd, _, err := r.Find(args); err == nil && cmd.Flags().Lookup("rabbitmq-url") != nil {
			full = append(full, "--rabbitmq-url", s.AMQPURL, "--queue", s.Queue)
		}
		r.SetArgs(full)
		var out bytes.Buffer
		r.SetOut(&out)
		r.SetErr(&out)
		err := r.Execute()
		code := 0
		if ee, ok := err.(*exitError); ok {
			code = ee.code
		} else if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return code, out.String() + " " + errText(err)
	}
}
