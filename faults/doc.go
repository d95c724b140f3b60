// Package faults is stepflow's fault-injection suite. It runs the real
// stepflow binary — function, bridge and reconciler as separate processes,
// built once by TestMain — against the real PostgreSQL, Redis and RabbitMQ,
// starts 200 runs of testdata/faults.json per case (fan-out, a conditional
// branch, an all join, an any join, a final all join), injects one fault
// mid-run, and proves DESIGN.md's guarantees:
//
//   - every run completes, within 120 s, with exactly the context the local
//     runner (workflow.Run, the oracle) computes for its input;
//   - no (run, node) ran two attempts at the same time (from the function's
//     "node attempt" debug lines of every incarnation);
//   - every succeeded step, joins and the node after them included, was
//     committed by exactly one attempt, and joins started only after their
//     predecessors finished (all of them, or the first for an any join);
//   - once the processes are stopped with SIGTERM, the main queue and its
//     delay queues are empty and the dead letters (DLQ and recorded) are
//     exactly the injected poison; every status row is final.
//
// The faults: kill -9 of the function and of the bridge (restarted after
// 1 s), every RabbitMQ or PostgreSQL connection of the processes cut for
// 5 s (a TCP proxy per service and case, proxy_test.go), Redis FLUSHDB,
// every job published twice (bridge --publish-copies 2), poison messages
// mixed into the load, and callers abandoning requests to the function
// (wedge_test.go). Pausing: pause_test.go resumes runs of testdata/pause.json
// through a `stepflow api` process while the API is killed with resumes
// in flight, RabbitMQ is cut so that committed resumes cannot publish
// (and the API is killed before it could), and the function is killed as
// the resumed steps reach it: each resume commits once, the nodes after
// it run once, and the reconciler republishes the lost jobs.
// Scale-out (scale_test.go): two bridges, each in front
// of its own function, one function killed for good (its bridge pauses and
// hands its work back; every run completes through the other pair, no
// job dead-lettered); and three bridges, three functions and two
// reconcilers running 1,000 runs, one bridge and another pair's function
// killed mid-way.
//
// Flowcraft's built-ins (builtins_test.go, subflow_test.go): a batch of
// 500 items whose function is killed with a fifth of the workers done
// (every item gathered exactly once, in order); a batch whose scatter job
// is delivered again before and after its commit and after the run ended
// (one set of workers, one gather, the finished run unchanged); loops
// whose next iteration's job is purged from the queue, repaired by a
// reconcile pass; and a crash between a child run's end and its parent's
// continuation (the bridge frozen, then killed, with the answer carrying
// it): the parent continues once.
//
// Isolation: each case has its own tables (t_<8hex>_*), queue topology
// (faults-<uuid>), Redis key prefix, proxies and processes, so cases and
// other packages can run at the same time. The Redis-loss case FLUSHDBs
// Redis database 9, which nothing else uses; the other cases share
// database 8.
//
// Running: `go test ./faults/` (one to three minutes, depending on what
// else the machine runs; -short skips it).
// FAULTS_LOG_DIR=dir keeps every process's logs under dir/<test>;
// FAULTS_STEPFLOW_BIN=path uses a prebuilt binary instead of building one;
// POSTGRES_URL, RABBITMQ_URL and FAULTS_REDIS_ADDR point at other
// services. When a case gets stuck it logs its PostgreSQL sessions and
// saves the processes' goroutine dumps (they run with STEPFLOW_PPROF).
//
// The package has no non-test code: everything is in *_test.go files.
package faults
