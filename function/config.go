package function

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/stepflow/stepflow/schema"
)

// Config is the function's configuration, read from the map func-go hands
// to Start (the process environment plus the function's static config).
type Config struct {
	PostgresURL   string        // POSTGRES_URL
	RedisURL      string        // REDIS_URL
	Tables        schema.Tables // STEPFLOW_CONTEXTS_TABLE, STEPFLOW_STATUSES_TABLE, STEPFLOW_STEPS_TABLE, STEPFLOW_BLUEPRINTS_TABLE
	RedisPrefix   string        // REDIS_PREFIX: prefix of every Redis key
	StepTimeout   time.Duration // STEP_TIMEOUT: limit of a node without its own timeout
	PGMaxConns    int32         // POSTGRES_MAX_CONNS
	BlueprintsDir string        // BLUEPRINTS_DIR: register every blueprint file of this folder
	// MaxOutputBytes (STEPFLOW_MAX_OUTPUT_BYTES) bounds a node's output as
	// JSON: a larger one fails the attempt with an error naming the node,
	// instead of commits that slow the whole run (a join's input holds
	// its predecessors' outputs, so values can double rank after rank).
	MaxOutputBytes int
	// PublicURL (STEPFLOW_PUBLIC_URL) is the base of the webhook URLs the
	// webhook nodes output: where the API server (which serves them under
	// /webhooks/) is reached. The API's --public-url, the same variable.
	PublicURL string
}

// Defaults.
const (
	DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
	DefaultRedisPrefix = "stepflow:"
	DefaultStepTimeout = 20 * time.Second
	DefaultPGMaxConns  = 16
	// DefaultMaxOutputBytes is 4 MiB; PostgreSQL's own limit for one
	// value is 256 MiB.
	DefaultMaxOutputBytes = 4 << 20
	maxMaxOutputBytes     = 256 << 20
	// DefaultPublicURL is the API server's default address (api.DefaultAddress).
	DefaultPublicURL = "http://127.0.0.1:8088"
)

// ConfigFromMap reads a Config, applying defaults; errors name the key.
func ConfigFromMap(m map[string]string) (Config, error) {
	c := Config{
		PostgresURL:    or(m["POSTGRES_URL"], DefaultPostgresURL),
		RedisURL:       or(m["REDIS_URL"], DefaultRedisURL),
		RedisPrefix:    or(m["REDIS_PREFIX"], DefaultRedisPrefix),
		StepTimeout:    DefaultStepTimeout,
		PGMaxConns:     DefaultPGMaxConns,
		BlueprintsDir:  m["BLUEPRINTS_DIR"],
		MaxOutputBytes: DefaultMaxOutputBytes,
		PublicURL:      or(m["STEPFLOW_PUBLIC_URL"], DefaultPublicURL),
		Tables:         schema.DefaultTables(),
	}
	if v := m["STEPFLOW_CONTEXTS_TABLE"]; v != "" {
		c.Tables.Contexts = v
	}
	if v := m["STEPFLOW_STATUSES_TABLE"]; v != "" {
		c.Tables.Statuses = v
	}
	if v := m["STEPFLOW_STEPS_TABLE"]; v != "" {
		c.Tables.Steps = v
	}
	if v := m["STEPFLOW_BLUEPRINTS_TABLE"]; v != "" {
		c.Tables.Blueprints = v
	}
	if v := m["STEP_TIMEOUT"]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("STEP_TIMEOUT=%q: want a positive duration such as 20s", v)
		}
		c.StepTimeout = d
	}
	if v := m["POSTGRES_MAX_CONNS"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return c, fmt.Errorf("POSTGRES_MAX_CONNS=%q: want an integer between 1 and 1000", v)
		}
		c.PGMaxConns = int32(n)
	}
	if v := m["STEPFLOW_MAX_OUTPUT_BYTES"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1024 || n > maxMaxOutputBytes {
			return c, fmt.Errorf("STEPFLOW_MAX_OUTPUT_BYTES=%q: want a number of bytes between 1024 and %d", v, maxMaxOutputBytes)
		}
		c.MaxOutputBytes = n
	}
	if err := checkPublicURL(c.PublicURL); err != nil {
		return c, err
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	if err := c.Tables.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// checkPublicURL refuses a webhook base that is no absolute http(s) URL.
func checkPublicURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("STEPFLOW_PUBLIC_URL=%q: want an absolute http or https URL without query or fragment (the API server's base, for webhook URLs)", v)
	}
	return nil
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func (c *Config) applyDefaults() {
	c.PostgresURL = or(c.PostgresURL, DefaultPostgresURL)
	c.RedisURL = or(c.RedisURL, DefaultRedisURL)
	c.RedisPrefix = or(c.RedisPrefix, DefaultRedisPrefix)
	c.PublicURL = strings.TrimSuffix(or(c.PublicURL, DefaultPublicURL), "/")
	if c.StepTimeout <= 0 {
		c.StepTimeout = DefaultStepTimeout
	}
	if c.PGMaxConns <= 0 {
		c.PGMaxConns = DefaultPGMaxConns
	}
	if c.MaxOutputBytes <= 0 {
		c.MaxOutputBytes = DefaultMaxOutputBytes
	}
	d := schema.DefaultTables()
	c.Tables.Contexts = or(c.Tables.Contexts, d.Contexts)
	c.Tables.Statuses = or(c.Tables.Statuses, d.Statuses)
	c.Tables.Steps = or(c.Tables.Steps, d.Steps)
	c.Tables.Blueprints = or(c.Tables.Blueprints, d.Blueprints)
	c.Tables.DeadLetters = or(c.Tables.DeadLetters, d.DeadLetters)
}
