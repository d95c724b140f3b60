package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

func newClient(ctx context.Context, c conn) (*client.Client, error) {
	// Registry: a run is refused at start for a node type the step
	// function of this binary does not serve, not dead-lettered later.
	cl, err := client.New(ctx, client.Config{PostgresURL: c.postgresURL, AMQPURL: c.amqpURL, Queue: c.queue, QueueType: c.queueType, Tables: c.tables, Registry: registry()})
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("PostgreSQL at %s does not answer: %w", redact(c.postgresURL), err)
	}
	return cl, nil
}

func newStartCmd() *cobra.Command {
	var c conn
	var input, runID, blueprintsDir string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "start FILE [--input JSON] [--blueprints DIR] [--wait [--timeout D]]",
		Short: "Start a run on the real stack; print its id, or with --wait its result",
		Long: `Start records a run of the blueprint in PostgreSQL (pinning the blueprint's
version to the run) and publishes its start jobs to RabbitMQ. It prints the run
id. A blueprint with a node type the step function of this binary does not
serve (stepflow validate lists them) is refused before anything is recorded.
With --blueprints, the folder the step function finds child blueprints in
(its BLUEPRINTS_DIR), a subflow naming a blueprint found neither there nor
among the stored ones is refused too. With --wait it waits until the run completes, fails, is cancelled or awaits (a
wait node with nothing else left to run: "stepflow resume" goes on) and prints
the same JSON object as "stepflow run --local". Exit 0: started / completed /
awaiting; 1: failed or cancelled; 2: bad usage or timed out waiting.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.validate(); err != nil {
				return err
			}
			bp, err := readBlueprint(args[0])
			if err != nil {
				return exitCode(2, err)
			}
			// The node types are those this binary's step function serves.
			if _, err := workflow.Compile(bp, registry()); err != nil {
				return exitCode(2, fmt.Errorf("%s: %w", args[0], err))
			}
			var children map[string]*workflow.Blueprint
			if blueprintsDir != "" {
				if children, err = readBlueprintDir(blueprintsDir); err != nil {
					return exitCode(2, fmt.Errorf("--blueprints: %w", err))
				}
			}
			in, err := parseInput(input)
			if err != nil {
				return exitCode(2, err)
			}
			ctx := cmd.Context()
			cl, err := newClient(ctx, c)
			if err != nil {
				return exitCode(1, err)
			}
			defer cl.Close()
			if children != nil {
				// Where the step function finds children: its folder and
				// the stored blueprints.
				if err := cl.CheckSubflows(ctx, bp, children); err != nil {
					if errors.Is(err, client.ErrInvalid) {
						return exitCode(2, fmt.Errorf("%s: %w", args[0], err))
					}
					return exitCode(1, err)
				}
			}
			id, err := cl.Start(ctx, bp, in, client.StartOptions{RunID: runID})
			if err != nil {
				return exitCode(1, err)
			}
			if !wait {
				fmt.Println(id)
				return nil
			}
			fmt.Fprintln(os.Stderr, "run", id, "started; waiting")
			return waitAndPrint(ctx, cl, id, timeout)
		},
	}
	cmd.Flags().StringVar(&input, "input", "", "initial context: a JSON object, or @FILE")
	cmd.Flags().StringVar(&runID, "run-id", "", "run id (default: a new UUID)")
	cmd.Flags().StringVar(&blueprintsDir, "blueprints", "", "folder of the blueprints its subflows run (*.json; the step function's BLUEPRINTS_DIR): refuse a subflow naming one found neither there nor stored")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the run completes, fails, is cancelled or awaits, and print its result")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait, give up after this long (exit 2); 0 waits forever")
	addConnFlags(cmd.Flags(), &c, "postgres", "amqp")
	return cmd
}

func newStatusCmd() *cobra.Command {
	var c conn
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status RUN",
		Short: "Show a run's status and its steps",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.validate(); err != nil {
				return err
			}
			cl, err := newClient(cmd.Context(), c)
			if err != nil {
				return exitCode(1, err)
			}
			defer cl.Close()
			res, err := cl.Result(cmd.Context(), args[0])
			if errors.Is(err, client.ErrRunNotFound) {
				return exitCode(1, fmt.Errorf("run %s: not found", args[0]))
			}
			if err != nil {
				return exitCode(1, err)
			}
			if asJSON {
				return printJSON(res)
			}
			printStatus(cmd.OutOrStdout(), res)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the run as JSON")
	addConnFlags(cmd.Flags(), &c, "postgres")
	return cmd
}

func printStatus(w io.Writer, res *workflow.RunResult) {
	fmt.Fprintf(w, "run %s  blueprint %s  status %s  %.1f ms\n", res.RunID, res.BlueprintID, res.Status, res.DurationMs)
	if p := res.Parent; p != nil {
		fmt.Fprintf(w, "parent: run %s  blueprint %s  step %s  status %s\n", p.RunID, p.BlueprintID, p.Step, p.Status)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tTYPE\tSTATE\tATTEMPTS\tDURATION\tERROR")
	for _, s := range res.Steps {
		d := "-"
		if s.DurationMs > 0 || s.FinishedAt != nil {
			d = fmt.Sprintf("%.1f ms", s.DurationMs)
		}
		step := s.NodeID // a loop's iteration shows as its step key, <node>#<n>
		if s.StepKey != "" {
			step = s.StepKey
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", step, s.Uses, s.State, s.Attempts, d, s.Error)
	}
	tw.Flush()
	if len(res.Children) > 0 {
		fmt.Fprintln(w, "child runs:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  RUN\tBLUEPRINT\tSTEP\tSTATUS")
		for _, c := range res.Children {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.RunID, c.BlueprintID, c.Step, c.Status)
		}
		tw.Flush()
	}
	for _, e := range res.Errors {
		fmt.Fprintf(w, "error: %s: %s\n", e.NodeID, e.Message)
	}
	for _, s := range res.Steps {
		if s.State == workflow.StepAwaiting || (res.Status == workflow.RunAwaiting && s.State == workflow.StepAwaitingChild) {
			fmt.Fprintf(w, "awaiting: %s (stepflow resume %s --node %s --output JSON)\n", s.NodeID, res.RunID, s.NodeID)
		}
	}
	if res.Output != nil {
		b, _ := json.MarshalIndent(res.Output, "", "  ")
		fmt.Fprintf(w, "output: %s\n", b)
	}
}

func newCancelCmd() *cobra.Command {
	var c conn
	cmd := &cobra.Command{
		Use:   "cancel RUN",
		Short: "Cancel a run and the child runs of its subflows: no further step of them starts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.validate(); err != nil {
				return err
			}
			cl, err := newClient(cmd.Context(), c)
			if err != nil {
				return exitCode(1, err)
			}
			defer cl.Close()
			st, err := cl.Cancel(cmd.Context(), args[0])
			if err != nil {
				return exitCode(1, err)
			}
			if st != workflow.RunCancelled {
				return exitCode(1, fmt.Errorf("run %s is already %s", args[0], st))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "run %s cancelled\n", args[0])
			return nil
		},
	}
	addConnFlags(cmd.Flags(), &c, "postgres")
	return cmd
}
