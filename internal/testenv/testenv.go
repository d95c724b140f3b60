// Package testenv is the set-up that the test harnesses of several packages
// share: where the real services are (POSTGRES_URL, REDIS_URL, RABBITMQ_URL,
// with the local defaults), unique names, and a test's own table set, Redis
// keys and queues, removed when the test ends; and the checks they share:
// AssertJSON, Eventually and Poll (waiting for a condition without a bare
// sleep), PublishConfirmed, TakeMessage, QueueDepth and HTTPGet.
//
// It is imported by tests only. It imports no package of stepflow but schema
// and internal/redisconn (which import none), so that any package's tests,
// internal ones included, can use it; queue names come from the caller
// (jobqueue.TopologyQueues) for the same reason.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"os"
	"strconv"
)

// The local services, used when the environment names none.
const (
	defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
	defaultRabbitMQURL = "amqp://guest:guest@127.0.0.1:5672/"
)

// PostgresURL is $POSTGRES_URL, or the local test database.
func PostgresURL() string { return env("POSTGRES_URL", defaultPostgresURL) }

// RedisURL is $REDIS_URL, or database 0 of the local Redis.
func RedisURL() string { return env("REDIS_URL", defaultRedisURL) }

// RabbitMQURL is $RABBITMQ_URL, or the local broker.
func RabbitMQURL() string { return env("RABBITMQ_URL", defaultRabbitMQURL) }

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// RandomHex returns n random bytes as 2n hex digits, for names no other
// test (of this package or another running at the same time) uses.
func RandomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// SetDefaultParallel makes -test.parallel n unless the command line sets
// it. It parses the command line; call it first in TestMain.
func SetDefaultParallel(n int) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "test.parallel" {
			explicit = true
		}
	})
	if !explicit {
		_ = flag.Set("test.parallel", strconv.Itoa(n))
	}
}
