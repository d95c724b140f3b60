package main

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/stepflow/stepflow/client"
)

func newDLQCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List and replay dead-lettered jobs",
		Long: `The bridge dead-letters a job it must not retry (a 4xx answer, or too many
failed attempts) to <queue>.dlq. The reconciler records each dead letter in
PostgreSQL and fails its run with the reason. "dlq list" shows them; "dlq replay"
re-drives them: the run is set running again and resumes from the failed step.`,
	}
	cmd.AddCommand(newDLQListCmd(), newDLQReplayCmd())
	return cmd
}

func newDLQListCmd() *cobra.Command {
	var c conn
	var run string
	var all, asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--run ID] [--all] [--json]",
		Short: "Show recorded dead letters: run, node, code, reason",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.validate(); err != nil {
				return err
			}
			cl, err := newClient(cmd.Context(), c)
			if err != nil {
				return exitCode(1, err)
			}
			defer cl.Close()
			dls, err := cl.DeadLetters(cmd.Context(), client.DeadLetterFilter{RunID: run, Replayed: all})
			if err != nil {
				return exitCode(1, err)
			}
			if asJSON {
				if dls == nil {
					dls = []client.DeadLetter{}
				}
				return printJSON(dls)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tRUN\tNODE\tCODE\tATTEMPTS\tDEAD-LETTERED\tREPLAYED\tREASON")
			for _, dl := range dls {
				replayed := "-"
				if dl.ReplayedAt != nil {
					replayed = dl.ReplayedAt.Format("2006-01-02 15:04:05")
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", dl.ID, orDash(dl.RunID), orDash(dl.NodeID), dl.Code, dl.Attempts,
					dl.At.Format("2006-01-02 15:04:05"), replayed, oneLine(dl.Reason, 100))
			}
			tw.Flush()
			if len(dls) == 0 {
				fmt.Println("(no dead letters)")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&run, "run", "", "only this run's dead letters")
	cmd.Flags().BoolVar(&all, "all", false, "include replayed dead letters")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	addConnFlags(cmd.Flags(), &c, "postgres")
	return cmd
}

func newDLQReplayCmd() *cobra.Command {
	var c conn
	var run string
	var all bool
	cmd := &cobra.Command{
		Use:   "replay (--run ID | --all)",
		Short: "Re-drive dead letters: the run resumes from the failed step",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (run == "") == !all {
				return exitCode(2, errors.New("replay needs exactly one of --run ID or --all"))
			}
			if err := c.validate(); err != nil {
				return err
			}
			cl, err := newClient(cmd.Context(), c)
			if err != nil {
				return exitCode(1, err)
			}
			defer cl.Close()
			res, err := cl.ReplayDeadLetters(cmd.Context(), run)
			if err != nil {
				return exitCode(1, err)
			}
			fmt.Printf("re-drove %d run(s), published %d job(s)\n", len(res.Runs), res.Jobs)
			for _, r := range res.Runs {
				fmt.Println("  run", r)
			}
			if len(res.Unplayable) > 0 {
				fmt.Printf("%d dead letter(s) are not jobs and cannot be replayed (see: stepflow dlq list)\n", len(res.Unplayable))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&run, "run", "", "replay this run's dead letters")
	cmd.Flags().BoolVar(&all, "all", false, "replay every dead letter")
	addConnFlags(cmd.Flags(), &c, "postgres", "amqp")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string, n int) string {
	out := []rune{}
	for _, r := range s {
		if r == '\n' || r == '\r' {
			r = ' '
		}
		out = append(out, r)
		if len(out) >= n {
			out = append(out, '…')
			break
		}
	}
	return string(out)
}
