package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/stepflow/stepflow/examples/nodes"
	"github.com/stepflow/stepflow/schema"
	"github.com/stepflow/stepflow/workflow"
)

// registry is the node registry of this binary: built-ins and examples.
func registry() *workflow.Registry { return nodes.Registry() }

func readBlueprint(path string) (*workflow.Blueprint, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, workflow.MaxBlueprintBytes+1))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	bp, err := workflow.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return bp, nil
}

// parseInput reads --input: a JSON object, or @FILE holding one.
func parseInput(s string) (map[string]any, error) {
	if s == "" {
		return map[string]any{}, nil
	}
	data := []byte(s)
	if s[0] == '@' {
		var err error
		if data, err = os.ReadFile(s[1:]); err != nil {
			return nil, fmt.Errorf("--input: %w", err)
		}
	}
	v, err := decodeOneJSON(data)
	if err != nil {
		return nil, fmt.Errorf("--input: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("--input: want a JSON object (the run's initial context), got %s", jsonKind(v))
	}
	return m, nil
}

// decodeOneJSON decodes data holding exactly one JSON value.
func decodeOneJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", v)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newValidateCmd() *cobra.Command {
	var blueprintsDir string
	cmd := &cobra.Command{
		Use:   "validate FILE... [--blueprints DIR]",
		Short: "Check blueprints: shape, graph, expressions and node types",
		Long: `Validate decodes each blueprint strictly and reports every problem at once:
unknown fields, duplicate ids, edges or fallbacks naming missing nodes, cycles
that do not pass through a loop-controller, node types this binary does not
know, expressions that do not compile, bad join strategies, negative retries or
timeouts, params of built-in nodes. With --blueprints, each subflow's
params.blueprintId must name a blueprint of DIR or one of the FILEs. Exit 0
when all are valid, 1 otherwise.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var set map[string]*workflow.Blueprint
			if blueprintsDir != "" {
				var err error
				if set, err = readBlueprintDir(blueprintsDir); err != nil {
					return exitCode(2, fmt.Errorf("--blueprints: %w", err))
				}
			}
			bps := make([]*workflow.Blueprint, len(args))
			errs := make([]error, len(args))
			for i, path := range args {
				if bps[i], errs[i] = readBlueprint(path); errs[i] == nil && set != nil {
					set[bps[i].ID] = bps[i]
				}
			}
			bad := 0
			for i, path := range args {
				bp, err := bps[i], errs[i] // read errors name the path
				if err == nil {
					var w *workflow.Workflow
					if w, err = workflow.Compile(bp, registry()); err == nil && set != nil {
						err = workflow.ValidateSubflows(bp, set)
					}
					if err == nil {
						fmt.Fprintf(cmd.OutOrStdout(), "%s: ok — blueprint %q, %d nodes, %d edges, start %v, digest %s\n",
							path, bp.ID, len(bp.Nodes), len(bp.Edges), w.StartNodes(), w.Digest)
						continue
					}
					err = fmt.Errorf("%s: %w", path, err)
				}
				bad++
				fmt.Fprintln(cmd.ErrOrStderr(), err)
			}
			if bad > 0 {
				return exitCode(1, nil)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&blueprintsDir, "blueprints", "", "folder of the blueprints subflows may run (*.json)")
	return cmd
}

// readBlueprintDir reads every *.json blueprint of dir (example inputs,
// *.input.json, excepted), by id.
func readBlueprintDir(dir string) (map[string]*workflow.Blueprint, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(dir); err != nil {
		return nil, err
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a folder", dir)
	}
	out := map[string]*workflow.Blueprint{}
	from := map[string]string{}
	for _, p := range paths {
		if strings.HasSuffix(p, ".input.json") {
			continue
		}
		bp, err := readBlueprint(p)
		if err != nil {
			return nil, err
		}
		if other, dup := from[bp.ID]; dup {
			return nil, fmt.Errorf("%s and %s both hold blueprint %q", other, p, bp.ID)
		}
		out[bp.ID], from[bp.ID] = bp, p
	}
	return out, nil
}

func newRunCmd() *cobra.Command {
	var local bool
	var input, blueprintsDir string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "run --local FILE [--input JSON] [--blueprints DIR]",
		Short: "Run a blueprint in-process and print the result as JSON",
		Long: `Run executes a whole run in this process with the same semantics as the
distributed runtime (parallel branches, retries, timeouts, fallbacks, joins,
skips, sleeps, loops, batches, subflows) and prints one JSON object: status,
output, context (with _outputs.<id>), steps and errors. --input is the run's
initial context: a JSON object, or @FILE. --blueprints is the folder of the
blueprints its subflows run (by id), in this process too. A run that reaches
a wait node with nothing else left to run ends with status awaiting (this
process keeps nothing to resume; "stepflow start" does, and "stepflow resume"
resumes it); a webhook node fails here (the stack's API server serves
webhooks). Exit 0 when the run completed or awaits, 1 when it failed, 2 on bad
usage.

To run on the real stack, use "stepflow start".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !local {
				return exitCode(2, errors.New(`run needs --local (to run on RabbitMQ/PostgreSQL/Redis use "stepflow start FILE --wait")`))
			}
			bp, err := readBlueprint(args[0])
			if err != nil {
				return exitCode(2, err)
			}
			in, err := parseInput(input)
			if err != nil {
				return exitCode(2, err)
			}
			children := map[string]*workflow.Blueprint{}
			if blueprintsDir != "" {
				if children, err = readBlueprintDir(blueprintsDir); err != nil {
					return exitCode(2, fmt.Errorf("--blueprints: %w", err))
				}
			}
			if err := workflow.ValidateSubflows(bp, children); err != nil {
				return exitCode(2, fmt.Errorf("%s: %w (give the folder of its children with --blueprints DIR)", args[0], err))
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			res, err := workflow.Run(ctx, bp, registry(), in, workflow.RunOptions{Blueprints: children})
			if err != nil {
				return exitCode(2, err)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if err := enc.Encode(res); err != nil {
				return err
			}
			if res.Status != workflow.RunCompleted && res.Status != workflow.RunAwaiting {
				return exitCode(1, nil)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&local, "local", false, "run in this process (required)")
	cmd.Flags().StringVar(&input, "input", "", "initial context: a JSON object, or @FILE")
	cmd.Flags().StringVar(&blueprintsDir, "blueprints", "", "folder of the blueprints its subflows run (*.json)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "cancel the run after this long (0: no limit)")
	return cmd
}

func newGraphCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "graph FILE",
		Short: "Print a blueprint as a Mermaid flowchart",
		Long:  "Graph prints the blueprint as a Mermaid flowchart: nodes with their types, edges with actions and conditions, fallbacks dotted, a batch's run-time workers as one box, subflows as subroutines.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bp, err := readBlueprint(args[0])
			if err != nil {
				return exitCode(1, err)
			}
			if _, err := workflow.Compile(bp, nil); err != nil {
				return exitCode(1, err)
			}
			fmt.Print(workflow.Mermaid(bp))
			return nil
		},
	}
}

func newMigrateCmd() *cobra.Command {
	var c conn
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade stepflow's tables (idempotent, safe to run concurrently)",
		Long: `Migrate applies the SQL migrations embedded in this binary under an advisory
lock: running it twice, or from two processes at once, is safe. Tables created
by the Flowcraft adapter are upgraded in place.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.validate(); err != nil {
				return err
			}
			start := time.Now()
			applied, err := migrate(cmd.Context(), c)
			if err != nil {
				return exitCode(1, err)
			}
			if len(applied) == 0 {
				fmt.Printf("schema up to date (%s, %s)\n", redact(c.postgresURL), time.Since(start).Round(time.Millisecond))
			} else {
				fmt.Printf("applied %v (%s, %s)\n", applied, redact(c.postgresURL), time.Since(start).Round(time.Millisecond))
			}
			return nil
		},
	}
	addConnFlags(cmd.Flags(), &c, "postgres")
	return cmd
}

func migrate(ctx context.Context, c conn) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, c.postgresURL)
	if err != nil {
		return nil, fmt.Errorf("POSTGRES_URL: %w", err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s does not answer: %w", redact(c.postgresURL), err)
	}
	return schema.Migrate(ctx, pool, c.tables)
}
