// Package e2e holds stepflow's end-to-end tests: a real step function served
// over HTTP with func-go's CloudEvents handler, a real bridge consuming a
// real RabbitMQ queue, runs recorded in a real PostgreSQL and leases in a
// real Redis, driven through the client package and, for the Flowcraft
// compatibility tests, by hand-written rows and plain AMQP messages.
//
// Every test isolates itself (its own table names, queue topology and Redis
// key prefix) and runs in parallel with the others. The services are found
// through POSTGRES_URL, REDIS_URL and RABBITMQ_URL (local defaults); a test
// fails, naming the service, when one does not answer.
//
// The package has no non-test code: nothing may import it.
package e2e
