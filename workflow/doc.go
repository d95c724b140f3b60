// Package workflow is the pure core of stepflow: Flowcraft blueprints, their
// validation, and the rules every runtime applies to them.
//
// A user of the package writes nodes and runs blueprints:
//
//   - Decode parses a blueprint document strictly (a *DecodeError names the
//     offending JSON path); Blueprint, Node, NodeConfig, Edge and Inputs are
//     its Go form.
//   - NewRegistry holds the node implementations (NodeFunc, given a
//     NodeInput, returning a NodeResult or an error; Suspend puts a node to
//     sleep, StartChild has it wait for a child run, Await has it wait for
//     a resume, NodeResult.DynamicNodes creates nodes at run time); the
//     built-ins noop, transform, sleep, batch-scatter, batch-gather,
//     loop-controller, subflow, wait and webhook are always there.
//   - Validate and Compile check a blueprint against a registry and report
//     every problem at once (*ValidationError); Compile returns the
//     immutable Workflow the runtimes share.
//   - Run executes a blueprint in-process, with the semantics of the
//     distributed runtime, and returns a RunResult (RunStatus, StepRecord,
//     StepError), the shape in which the client reports runs of the real
//     stack too; RunOptions.Blueprints holds the children of subflows, and
//     ValidateSubflows checks a blueprint against them; RunOptions.OnAwait
//     resumes a run that awaits (RunAwaiting).
//   - Mermaid draws a blueprint as a flowchart.
//
// The engine packages (the step function, the store, the reconciler) ask a
// Workflow the questions every step raises, so that the answers live here
// once. Steps are named by step key (Step: a node id, "<node>#<iteration>"
// in a loop, a dynamic node's id), and the answers are: what a finished
// attempt means (CompiledNode.Outcome), which edges a result takes and
// which dynamic nodes it creates (Route, RouteStep), which steps become
// ready or skipped and which loops end (Advance over the States of a run,
// which find dynamic nodes through DynamicStates and may count them
// through DynamicCounts; DecideRun for a commit; AwaitStatus when what is
// left only awaits; ResumeStep for a resume; WebhookWait for a webhook's
// request), what input a step gets (ResolveInput), and what a finished run
// outputs (FinalOutput). StepState names the states a step is
// stored in. Invoke and MapContext call a node as the local runner does;
// OutputKey, InputKey and Normalize are the run context's conventions.
//
// The package does no I/O and must not import infrastructure packages
// (AMQP, Postgres, Redis, HTTP).
package workflow
