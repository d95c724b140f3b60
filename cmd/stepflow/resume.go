package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

func newResumeCmd() *cobra.Command {
	var c conn
	var node, output, action string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "resume RUN --node NODE [--output JSON|@FILE] [--action A] [--wait [--timeout D]]",
		Short: "Resume a run at its awaiting wait node, with an output and an action",
		Long: `Resume gives the awaiting wait node NODE of run RUN its output (--output: any
JSON value, or @FILE holding one; null without) and an action (--action), which
routes the node's edges like any node's action. In one transaction it records
that result, makes ready what follows and sets the run running; then it
publishes the jobs. A step is resumed once: a second resume, or one racing it,
is refused. It prints the run's status afterwards, or with --wait waits until
the run completes, fails, is cancelled or awaits again and prints the same JSON
object as "stepflow run --local" (docs/pausing.md).

NODE may be a subflow node whose child run awaits (the run then awaits at
it): the resume goes to the child's awaiting step, and the child's end
continues the run. A child awaiting at several steps is refused, naming them:
resume the child run by id.

Exit 0: resumed (with --wait: completed or awaiting); 1: refused (unknown run,
a node that does not await, a run that is over), or with --wait failed or
cancelled; 2: bad usage (an --output that is not JSON) or timed out waiting.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.validate(); err != nil {
				return err
			}
			if node == "" {
				return exitCode(2, errors.New("--node is required: the awaiting wait node (stepflow status RUN shows it)"))
			}
			out, err := parseJSONValue("--output", output)
			if err != nil {
				return exitCode(2, err)
			}
			ctx := cmd.Context()
			cl, err := newClient(ctx, c)
			if err != nil {
				return exitCode(1, err)
			}
			defer cl.Close()
			id := args[0]
			res, err := cl.Resume(ctx, id, workflow.Resume{Node: node, Output: out, Action: action})
			switch {
			case err != nil && res == nil:
				return exitCode(1, err)
			case err != nil:
				fmt.Fprintln(os.Stderr, "stepflow: warning:", err)
			}
			if !wait {
				fmt.Printf("run %s resumed at %s: %s\n", id, res.Node, res.Status)
				return nil
			}
			return waitAndPrint(ctx, cl, id, timeout)
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the awaiting wait node (required)")
	cmd.Flags().StringVar(&output, "output", "", "the wait node's output: a JSON value, or @FILE")
	cmd.Flags().StringVar(&action, "action", "", "the wait node's action, which routes its edges")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the run completes, fails, is cancelled or awaits again, and print its result")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait, give up after this long (exit 2); 0 waits forever")
	addConnFlags(cmd.Flags(), &c, "postgres", "amqp")
	return cmd
}

// waitAndPrint waits for run id to finish or await, prints its result
// and gives the exit code of start --wait and resume --wait.
func waitAndPrint(ctx context.Context, cl *client.Client, id string, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	res, err := cl.Wait(ctx, id)
	if errors.Is(err, client.ErrTimeout) {
		return exitCode(2, fmt.Errorf("run %s still running after %s (see: stepflow status %s)", id, timeout, id))
	}
	if err != nil {
		return exitCode(1, err)
	}
	if err := printJSON(res); err != nil {
		return err
	}
	if res.Status == workflow.RunAwaiting {
		for _, s := range res.Steps {
			// A subflow's step awaits a child that awaits: its resume is
			// forwarded to the child.
			if s.State == workflow.StepAwaiting || s.State == workflow.StepAwaitingChild {
				fmt.Fprintf(os.Stderr, "run %s awaits at %s: stepflow resume %s --node %s --output JSON\n", id, s.NodeID, id, s.NodeID)
			}
		}
		return nil
	}
	if res.Status != workflow.RunCompleted {
		return exitCode(1, nil)
	}
	return nil
}

// parseJSONValue reads a flag holding one JSON value, or @FILE holding
// one; "" is null.
func parseJSONValue(flag, s string) (any, error) {
	if s == "" {
		return nil, nil
	}
	data := []byte(s)
	if s[0] == '@' {
		var err error
		if data, err = os.ReadFile(s[1:]); err != nil {
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
	}
	v, err := decodeOneJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return v, nil
}
