package faults

// The cases. Each starts runsPerCase runs of testdata/faults.json (fan-out,
// a conditional branch taken by about half the runs, an all join, an any
// join, a final all join), injects one fault once faultAfter runs have
// started, and then proves with verify: every run completes with exactly
// the outputs the local runner computes; no step ran two attempts at once;
// every step, joins included, was committed by exactly one attempt, joins
// only after their predecessors; nothing is left in the queues once the
// processes stop; the DLQ holds only injected poison; statuses are final.

import (
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stepflow/stepflow/client"
)

// DESIGN guarantee 1: no message is lost when the function is killed
// mid-run. The in-flight requests die with it; the bridge retries them
// (connection errors, then 409 while the dead process's leases last).
func TestKill9Function(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{})
	l := b.newLoad(runsPerCase)
	l.start()
	l.waitStarted(faultAfter)
	l.midRun("kill -9 function")
	b.fn.Kill9()
	hold(time.Second)
	b.fn.Restart()
	b.verify(l, verifyOptions{})
}

// DESIGN guarantee 1: no message is lost when the bridge is killed mid-run:
// its unacked deliveries go back to the queue, its in-flight calls are cut.
func TestKill9Bridge(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{})
	l := b.newLoad(runsPerCase)
	l.start()
	l.waitStarted(faultAfter)
	l.midRun("kill -9 bridge")
	b.br.Kill9()
	hold(time.Second)
	b.br.Restart()
	b.verify(l, verifyOptions{})
}

// DESIGN guarantee 1: every RabbitMQ connection of the processes (bridge,
// reconciler) is cut and refused for 5 s.
func TestRabbitMQCut(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{})
	l := b.newLoad(runsPerCase)
	l.start()
	l.waitStarted(faultAfter)
	l.midRun("RabbitMQ cut")
	b.rabbit.Cut(5 * time.Second)
	b.verify(l, verifyOptions{})
	if cuts, refused := b.rabbit.Stats(); cuts != 1 || refused == 0 {
		t.Errorf("RabbitMQ proxy: %d cuts, %d connections refused; want 1 cut that refused reconnects", cuts, refused)
	}
}

// Every PostgreSQL connection of the processes (function, reconciler) is
// cut and refused for 5 s: steps answer 503 and are retried; a commit cut
// short either happened (its redelivery re-emits) or did not (it runs
// again).
func TestPostgresCut(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{})
	l := b.newLoad(runsPerCase)
	l.start()
	l.waitStarted(faultAfter)
	l.midRun("PostgreSQL cut")
	b.pg.Cut(5 * time.Second)
	b.verify(l, verifyOptions{})
	if cuts, _ := b.pg.Stats(); cuts != 1 {
		t.Errorf("PostgreSQL proxy: %d cuts; want 1", cuts)
	}
}

// DESIGN guarantee 5: Redis flushed mid-run (FLUSHDB of the case's own
// database, standing in for FLUSHALL: every lease is gone). Every run
// still completes, correctly — through the reconciler if need be.
func TestRedisFlush(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{redisDB: flushRedisDB})
	l := b.newLoad(runsPerCase)
	l.start()
	l.waitStarted(faultAfter)
	l.midRun("Redis FLUSHDB")
	b.flushRedis()
	b.verify(l, verifyOptions{})
}

// DESIGN guarantee 2: every job the bridge publishes is published twice.
// No node runs twice at once, no join counts an arrival twice, and no
// result changes.
func TestDuplicateJobs(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{bridgeArgs: []string{"--publish-copies", "2"}})
	l := b.newLoad(runsPerCase)
	l.start()
	l.waitStarted(faultAfter)
	l.midRun("duplicated jobs (all along)")
	lg := b.verify(l, verifyOptions{})
	// Proof that the fault was there: far more deliveries than steps.
	steps := lg.count["function node attempt succeeded"]
	deliveries := 0
	for _, o := range []string{"ack", "reply_published", "retried", "redelayed", "dead_lettered", "requeued"} {
		deliveries += lg.count["bridge settled "+o]
	}
	if deliveries < steps*3/2 {
		t.Errorf("%d deliveries for %d steps: the jobs were not duplicated", deliveries, steps)
	}
}

// DESIGN guarantee 6: poison messages mixed into the load — garbage
// bodies, a job for a run that does not exist, a job for a run whose
// blueprint is unknown, a job naming a node its run's blueprint does not
// have — are dead-lettered at once with a reason, and block nothing: the
// real runs, the one the forged job names included, all complete.
func TestPoisonMessages(t *testing.T) {
	t.Parallel()
	b := setup(t, caseOptions{})
	l := b.newLoad(runsPerCase)

	// A real run that is still running when a forged job naming a node it
	// does not have arrives: it sleeps 3 s first.
	victim := &run{id: "victim-" + uuid.NewString(), bp: loadBlueprint(t, "victim.json"), input: map[string]any{"tag": t.Name()}}
	expect(t, []*run{victim})
	// A run started the Flowcraft adapter's way (status and context rows,
	// no pinned blueprint) whose job names a blueprint nobody registered.
	flowcraftRun := "flowcraft-" + uuid.NewString()
	q := b.tables.Quoted()
	if _, err := b.pool.Exec(b.ctx, `INSERT INTO `+q.Statuses+` (run_id, status) VALUES ($1, 'running')`, flowcraftRun); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(b.ctx, `INSERT INTO `+q.Contexts+` (run_id, context_data) VALUES ($1, '{}')`, flowcraftRun); err != nil {
		t.Fatal(err)
	}

	msg := func(id, contentType, body string) amqp.Publishing {
		return amqp.Publishing{MessageId: id, ContentType: contentType, DeliveryMode: amqp.Persistent, Body: []byte(body)}
	}
	poisons := []poison{
		{msg("poison-text", "text/plain", "this is not a job"), "400", "job body is not a job JSON object"},
		{msg("poison-binary", "application/octet-stream", "\x00\xff\xfe\x01garbage\x7f"), "400", "job body is not a job JSON object"},
		{msg("poison-empty-object", "application/json", `{}`), "400", "runId is required"},
		{msg("poison-wrong-types", "application/json", `{"runId": 42, "blueprintId": ["x"], "nodeId": null}`), "400", "job body is not a job JSON object"},
		{msg("poison-unknown-run", "application/json", `{"runId":"no-such-run-`+uuid.NewString()+`","blueprintId":"faults","nodeId":"start","attempt":1}`), "422", "does not exist"},
		{msg("poison-unknown-blueprint", "application/json", `{"runId":"`+flowcraftRun+`","blueprintId":"no-such-blueprint","nodeId":"start"}`), "422", "unknown blueprint"},
		{msg("poison-unknown-node", "application/json", `{"runId":"`+victim.id+`","blueprintId":"victim","nodeId":"no-such-node","attempt":1}`), "422", `has no node "no-such-node"`},
	}

	if _, err := b.client.Start(b.ctx, victim.bp, victim.input, client.StartOptions{RunID: victim.id}); err != nil {
		t.Fatal(err)
	}
	l.start()
	l.waitStarted(faultAfter / 2)
	l.midRun("poison messages, first half")
	for _, p := range poisons[:4] {
		b.publishRaw(p.msg)
	}
	l.waitStarted(faultAfter)
	for _, p := range poisons[4:] {
		b.publishRaw(p.msg)
	}
	b.verify(l, verifyOptions{
		extra:  []*run{victim},
		failed: map[string]string{flowcraftRun: "unknown blueprint"},
		poison: poisons,
	})
}
