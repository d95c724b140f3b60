package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/stepflow/stepflow/api"
	"github.com/stepflow/stepflow/client"
	"github.com/stepflow/stepflow/workflow"
)

type apiFlags struct {
	address, publicURL, blueprints string
	maxBody                        int
}

// addAPIFlags adds the API's flags; dev shares the function's --blueprints.
func addAPIFlags(fs *pflag.FlagSet, a *apiFlags, withBlueprints bool) {
	fs.StringVar(&a.address, "api-address", envOr("API_ADDRESS", api.DefaultAddress), "address the HTTP API serves /api/v1/, /health/* and /metrics on; one that is not loopback needs STEPFLOW_API_TOKEN (env API_ADDRESS)")
	fs.StringVar(&a.publicURL, "public-url", os.Getenv("STEPFLOW_PUBLIC_URL"), "base URL the API's clients reach it at, for the Location of started runs (default a path) and, in dev, the webhook URLs (the function's --public-url) (env STEPFLOW_PUBLIC_URL)")
	fs.IntVar(&a.maxBody, "api-max-body-bytes", api.DefaultMaxBodyBytes, "largest request body the API reads; larger ones get 413 (env API_MAX_BODY_BYTES)")
	if withBlueprints {
		fs.StringVar(&a.blueprints, "blueprints", os.Getenv("BLUEPRINTS_DIR"), "blueprints (*.json) that POST /api/v1/runs may name by blueprintId, before the snapshots stored by earlier runs (env BLUEPRINTS_DIR)")
	}
}

// options are the API's options from the flags and STEPFLOW_API_TOKEN,
// validated (exit 2 when wrong).
func (a apiFlags) options() (api.Options, error) {
	o := api.Options{
		Address: a.address, Token: os.Getenv("STEPFLOW_API_TOKEN"), PublicURL: a.publicURL,
		MaxBodyBytes: int64(a.maxBody), Routes: addPprof, Logger: slog.Default(),
	}
	if a.maxBody <= 0 {
		return o, exitCode(2, fmt.Errorf("--api-max-body-bytes %d: must be positive", a.maxBody))
	}
	if err := o.Validate(); err != nil {
		return o, exitCode(2, err)
	}
	if a.blueprints != "" {
		ws, err := loadBlueprintDir(a.blueprints)
		if err != nil {
			return o, exitCode(2, fmt.Errorf("BLUEPRINTS_DIR %s: %w", a.blueprints, err))
		}
		o.Blueprints = map[string]*workflow.Blueprint{}
		for id, w := range ws {
			o.Blueprints[id] = w.Blueprint
		}
	}
	return o, nil
}

func newAPICmd() *cobra.Command {
	var c conn
	var af apiFlags
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Serve the HTTP API: list, read, start, cancel and resume runs; webhooks; list and replay dead letters",
		Long: `Api serves stepflow's HTTP API (docs/api.md): JSON under /api/v1/ for runs
(list, read, start with an inline blueprint or a blueprint id, cancel, resume)
and dead letters (list, replay), the webhook URLs webhook nodes output
(POST /webhooks/<run>/<node>/<token>; docs/pausing.md), /health/liveness,
/health/readiness (PostgreSQL and RabbitMQ answer) and /metrics. It works through the same client as "stepflow
start", "status", "cancel" and "dlq", and checks a run's node types against the
ones the step function of this binary serves.

With STEPFLOW_API_TOKEN set, every write (POST) needs "Authorization: Bearer
<token>"; reads stay open. An --api-address that is not loopback is refused
without a token. On SIGTERM it stops taking requests and lets those in flight
finish.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.validate(); err != nil {
				return err
			}
			o, err := af.options()
			if err != nil {
				return err
			}
			return serveAPI(cmd.Context(), c, o)
		},
	}
	addConnFlags(cmd.Flags(), &c, "postgres", "amqp")
	addAPIFlags(cmd.Flags(), &af, true)
	return cmd
}

// serveAPI serves the API until ctx ends. It does not wait for PostgreSQL
// or RabbitMQ: /health/readiness says when they answer.
func serveAPI(ctx context.Context, c conn, o api.Options) error {
	cl, err := client.New(ctx, client.Config{PostgresURL: c.postgresURL, AMQPURL: c.amqpURL, Queue: c.queue, Tables: c.tables, Registry: registry()})
	if err != nil {
		return exitCode(2, err)
	}
	defer cl.Close()
	o.Registry = newRegistry()
	srv, err := api.New(cl, o)
	if err != nil {
		return exitCode(2, err)
	}
	ln, err := net.Listen("tcp", o.Address)
	if err != nil {
		return exitCode(2, fmt.Errorf("--api-address %s: %w", o.Address, err))
	}
	slog.Info("api starting", "postgres", redact(c.postgresURL), "rabbitmq", redact(c.amqpURL), "queue", c.queue,
		"blueprints", len(o.Blueprints), "max_body_bytes", o.MaxBodyBytes)
	if err := srv.Serve(ctx, ln); err != nil {
		return exitCode(1, err)
	}
	return nil
}
