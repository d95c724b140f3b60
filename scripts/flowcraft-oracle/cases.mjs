// The cases of the conformance corpus.
//
// A case builds its blueprint as a Flowcraft user does (createFlow, or a
// JSON blueprint with a registry where the builder cannot express it),
// names the initial context, and says how to resume it when it pauses.
// generate.mjs runs each one in its own process and records what
// FlowRuntime did. Nothing here decides the expected results.
//
// Fields:
//   name, description   file name and what the case shows
//   evaluator           'unsafe' (UnsafeEvaluator, the default here) or
//                       'property' (Flowcraft's default PropertyEvaluator)
//   build()             → {flow} or {blueprint, registry}, plus children:
//                       [{flow} | {blueprint, registry}] for subflows
//   input               the initial context given to runtime.run
//   runOptions          extra options of runtime.run (strict, …)
//   fixtures            extra FlowRuntime options by name (see generate.mjs)
//   resume              [{nodeId, output, action}] or [{via: 'scheduler'}]
//   flowcraftBug        why Flowcraft's result looks wrong, when it does
//   timeoutMs           the bound on the whole case (default 10 s)

import { createFlow, SubflowNode, WebhookNode } from 'flowcraft'
import { testNodes as T } from './nodes.mjs'

export const cases = [
	// ── graph basics ─────────────────────────────────────────────────────
	{
		name: 'chain',
		description: 'A chain start → twice → plus-one. Every node output is stored at _outputs.<id> and at the bare key <id>; each edge writes the value it carries to _inputs.<target>.',
		build: () => ({
			flow: createFlow('chain')
				.node('start', T.const, { params: { value: 3 } })
				.node('twice', T.double)
				.node('plus-one', T['add-one'])
				.edge('start', 'twice')
				.edge('twice', 'plus-one'),
		}),
		input: {},
	},
	{
		name: 'start-node-input',
		description: 'What start nodes receive: nothing (undefined) without inputs, the context key with inputs, and _inputs.<id> when the initial context holds it. The initial context is not a start node\'s input.',
		build: () => ({
			flow: createFlow('start-node-input')
				.node('plain', T.inspect)
				.node('keyed', T.inspect, { inputs: 'n' })
				.node('seeded', T.inspect),
		}),
		input: { n: 7, '_inputs.seeded': 'seed' },
	},
	{
		name: 'fan-in-all',
		description: 'Fan-out start → a, b and fan-in into join (joinStrategy all, the default). join runs once, after both; without inputs its input is _inputs.join, which each incoming edge overwrites: the value of the edge processed last, not a map of the sources.',
		build: () => ({
			flow: createFlow('fan-in-all')
				.node('start', T.const, { params: { value: 5 } })
				.node('a', T.double)
				.node('b', T['add-one'])
				.node('join', T.inspect)
				.edge('start', 'a')
				.edge('start', 'b')
				.edge('a', 'join')
				.edge('b', 'join'),
		}),
		input: {},
	},
	{
		name: 'fan-in-any',
		description: 'Fan-in with joinStrategy any where both branches finish in the same step: join runs once.',
		build: () => ({
			flow: createFlow('fan-in-any')
				.node('start', T.const, { params: { value: 5 } })
				.node('a', T.double)
				.node('b', T['add-one'])
				.node('join', T.increment, { params: { key: 'joinRuns' }, config: { joinStrategy: 'any' } })
				.edge('start', 'a')
				.edge('start', 'b')
				.edge('a', 'join')
				.edge('b', 'join'),
		}),
		input: {},
	},
	{
		name: 'fan-in-uneven',
		description: 'Branches of different length (start → a → joins, start → b → c → joins) into an any join (counts its runs in anyRuns) and an all join (allRuns). The all join runs once, after both; the any join runs once per arriving branch.',
		build: () => ({
			flow: createFlow('fan-in-uneven')
				.node('start', T.const, { params: { value: 1 } })
				.node('a', T.double)
				.node('b', T['add-one'])
				.node('c', T.double)
				.node('any-join', T.increment, { params: { key: 'anyRuns' }, config: { joinStrategy: 'any' } })
				.node('all-join', T.increment, { params: { key: 'allRuns' } })
				.edge('start', 'a')
				.edge('start', 'b')
				.edge('b', 'c')
				.edge('a', 'any-join')
				.edge('c', 'any-join')
				.edge('a', 'all-join')
				.edge('c', 'all-join'),
		}),
		input: {},
		flowcraftBug: 'An any join runs again for every later arrival (anyRuns is 2): FlowRuntime re-adds an any-node to the frontier each time a predecessor completes. A node should start once.',
	},
	{
		name: 'cycle-without-controller',
		description: 'A cycle a → b → a that does not pass through a loop-controller, entered from start. a waits for all its predecessors (start and b); b never runs before a, so neither runs.',
		build: () => ({
			flow: createFlow('cycle-without-controller')
				.node('start', T.const, { params: { value: 1 } })
				.node('a', T['add-one'])
				.node('b', T.echo)
				.edge('start', 'a')
				.edge('a', 'b')
				.edge('b', 'a'),
		}),
		input: {},
		flowcraftBug: 'The run is "completed" although a and b never ran: a cycle without a loop-controller is not rejected, and nothing reports the nodes that could not start.',
	},
	{
		name: 'metadata-and-source-location',
		description: 'A blueprint carrying _sourceLocation on a node and an edge (as the compiler emits them) and metadata.cycleEntryPoints (setCycleEntryPoint). The run ignores them.',
		build: () => ({
			flow: createFlow('metadata-and-source-location')
				.node('start', T.const, { params: { value: 'hi' }, _sourceLocation: { file: 'flows/greet.ts', line: 4, column: 3 } })
				.node('shout', T['to-upper'])
				.edge('start', 'shout', { _sourceLocation: { file: 'flows/greet.ts', line: 6, column: 3 } })
				.setCycleEntryPoint('start'),
		}),
		input: {},
	},

	// ── conditions, actions, transforms ──────────────────────────────────
	{
		name: 'condition-bare-key',
		description: 'Edge conditions see the context\'s keys bare: `age >= 18` reads the initial key age, `member` a boolean key.',
		build: () => ({
			flow: createFlow('condition-bare-key')
				.node('check', T.const, { params: { value: 'checked' } })
				.node('adult', T.const, { params: { value: 'adult' } })
				.node('minor', T.const, { params: { value: 'minor' } })
				.node('member-perk', T.const, { params: { value: 'perk' } })
				.edge('check', 'adult', { condition: 'age >= 18' })
				.edge('check', 'minor', { condition: 'age < 18' })
				.edge('check', 'member-perk', { condition: 'member && age >= 18' }),
		}),
		input: { age: 20, member: true },
	},
	{
		name: 'condition-result',
		description: 'Edge conditions see the source\'s result as `result` ({output, action}) next to the bare context keys.',
		build: () => ({
			flow: createFlow('condition-result')
				.node('start', T.const, { params: { value: 12 } })
				.node('big', T.echo)
				.node('small', T.echo)
				.node('big-and-limit', T.echo)
				.edge('start', 'big', { condition: 'result.output > 10' })
				.edge('start', 'small', { condition: 'result.output <= 10' })
				.edge('start', 'big-and-limit', { condition: 'result.output > limit' }),
		}),
		input: { limit: 11 },
	},
	{
		name: 'condition-errors',
		description: 'Conditions that throw or read what is not there. An unknown name throws a ReferenceError, which the evaluator swallows: the edge is not taken and the run goes on. In a condition `context` is the bare keys that are identifiers (no _outputs.*), so context["_outputs.start"] is undefined, while context.start and start are the output of start.',
		build: () => ({
			flow: createFlow('condition-errors')
				.node('start', T.const, { params: { value: 1 } })
				.node('unknown-name', T.echo)
				.node('outputs-key', T.echo)
				.node('context-bare', T.echo)
				.node('bare', T.echo)
				.edge('start', 'unknown-name', { condition: 'missing > 0' })
				.edge('start', 'outputs-key', { condition: 'context["_outputs.start"] === 1' })
				.edge('start', 'context-bare', { condition: 'context.start === 1' })
				.edge('start', 'bare', { condition: 'start === 1' }),
		}),
		input: {},
	},
	{
		name: 'property-evaluator',
		description: 'Flowcraft\'s default evaluator (PropertyEvaluator) only reads dotted property paths: `isAdult` and `result.output.ok` work; `age >= 18` has characters it refuses (it logs and returns undefined, so the edge is not taken); transform `input.name` works, `input.n * 2` gives undefined.',
		evaluator: 'property',
		build: () => ({
			flow: createFlow('property-evaluator')
				.node('start', T.const, { params: { value: { ok: true, name: 'ada', n: 4 } } })
				.node('by-operator', T.echo)
				.node('by-bare-key', T.echo)
				.node('by-result', T.echo)
				.node('by-missing', T.echo)
				.node('name-transform', T.inspect)
				.node('math-transform', T.inspect)
				.edge('start', 'by-operator', { condition: 'age >= 18' })
				.edge('start', 'by-bare-key', { condition: 'isAdult' })
				.edge('start', 'by-result', { condition: 'result.output.ok' })
				.edge('start', 'by-missing', { condition: 'result.output.missing' })
				.edge('start', 'name-transform', { transform: 'input.name' })
				.edge('start', 'math-transform', { transform: 'input.n * 2' }),
		}),
		input: { age: 20, isAdult: true },
	},
	{
		name: 'action-routing',
		description: 'Routing by action. approver returns action "approve": only the edge with that action is taken, not the action-less one. other returns action "other", which no edge carries: the action-less edges are taken.',
		build: () => ({
			flow: createFlow('action-routing')
				.node('approver', T['emit-action'], { params: { action: 'approve' }, inputs: 'ticket' })
				.node('approved', T.const, { params: { value: 'approved' } })
				.node('rejected', T.const, { params: { value: 'rejected' } })
				.node('approver-default', T.const, { params: { value: 'default' } })
				.node('other', T['emit-action'], { params: { action: 'other' }, inputs: 'ticket' })
				.node('other-approved', T.const, { params: { value: 'approved' } })
				.node('other-default', T.const, { params: { value: 'default' } })
				.edge('approver', 'approved', { action: 'approve' })
				.edge('approver', 'rejected', { action: 'reject' })
				.edge('approver', 'approver-default')
				.edge('other', 'other-approved', { action: 'approve' })
				.edge('other', 'other-default'),
		}),
		input: { ticket: 'T-1' },
	},
	{
		name: 'transforms',
		description: 'Edge transforms see {input, context}: input is the source\'s output, context the whole context (including _outputs.* and bare node keys).',
		build: () => ({
			flow: createFlow('transforms')
				.node('start', T.const, { params: { value: { name: 'ada', n: 4 } } })
				.node('upper', T['to-upper'])
				.node('scaled', T.echo)
				.node('from-context', T.echo)
				.node('whole', T.echo)
				.edge('start', 'upper', { transform: 'input.name' })
				.edge('start', 'scaled', { transform: 'input.n * context.factor' })
				.edge('start', 'from-context', { transform: 'context["_outputs.start"].n + context.start.n' })
				.edge('start', 'whole'),
		}),
		input: { factor: 3 },
	},
	{
		name: 'transform-with-string-inputs',
		description: 'A node with string inputs: without an edge transform it gets the inputs value (mid → plain, inputs "start"); with a transform on the incoming edge (mid → transformed, inputs "start"), the transform\'s `input` is the inputs value rather than the edge source\'s output, and the node gets the transform\'s result.',
		build: () => ({
			flow: createFlow('transform-with-string-inputs')
				.node('start', T.const, { params: { value: 'from-start' } })
				.node('mid', T.const, { params: { value: 'from-mid' } })
				.node('plain', T.echo, { inputs: 'start' })
				.node('transformed', T.echo, { inputs: 'start' })
				.edge('start', 'mid')
				.edge('mid', 'plain')
				.edge('mid', 'transformed', { transform: 'input + "!"' }),
		}),
		input: {},
	},

	// ── inputs ───────────────────────────────────────────────────────────
	{
		name: 'inputs-dotted',
		description: 'Dotted inputs strings are not paths: "start.user.name" looks up _outputs.start.user.name and then the context key "start.user.name" literally (both absent: no input); "cfg.mode" finds the literal initial key "cfg.mode".',
		build: () => ({
			flow: createFlow('inputs-dotted')
				.node('start', T.const, { params: { value: { user: { name: 'bob' } } } })
				.node('by-node-path', T.inspect, { inputs: 'start.user.name' })
				.node('by-context-path', T.inspect, { inputs: 'user.name' })
				.node('by-literal-key', T.inspect, { inputs: 'cfg.mode' })
				.edge('start', 'by-node-path')
				.edge('start', 'by-context-path')
				.edge('start', 'by-literal-key'),
		}),
		input: { user: { name: 'ada' }, 'cfg.mode': 'literal' },
	},
	{
		name: 'inputs-object-and-underscore',
		description: 'An inputs object resolves each field: a key starting with "_" is a context key; otherwise _outputs.<key> when that node has produced an output, else the context key. A string inputs "_token" reads the context key _token.',
		build: () => ({
			flow: createFlow('inputs-object-and-underscore')
				.node('start', T.const, { params: { value: { v: 2 } } })
				.node('fields', T.echo, {
					inputs: { ctx: 'x', node: 'start', outputs: '_outputs.start', token: '_token', missing: 'nope', dotted: 'start.v' },
				})
				.node('token', T.echo, { inputs: '_token' })
				.edge('start', 'fields')
				.edge('start', 'token'),
		}),
		input: { x: 1, _token: 't-1' },
	},
	{
		name: 'bare-node-key',
		description: 'A node\'s output is written to the bare key <id> too, overwriting an initial context key of the same name; get reads it (key "start") as it reads _outputs.start.',
		build: () => ({
			flow: createFlow('bare-node-key')
				.node('start', T.const, { params: { value: 'output-of-start' } })
				.node('read-bare', T.get, { params: { key: 'start' } })
				.node('read-outputs', T.get, { params: { key: '_outputs.start' } })
				.node('read-initial', T.get, { params: { key: 'other' } })
				.edge('start', 'read-bare')
				.edge('start', 'read-outputs')
				.edge('start', 'read-initial'),
		}),
		input: { start: 'initial-value', other: 'untouched' },
	},

	// ── retries, fallbacks, failures ─────────────────────────────────────
	{
		name: 'retries-succeed',
		description: 'maxRetries is the total number of attempts: flaky fails attempts 1 and 2 and succeeds on attempt 3 of 3. retryDelay is set but FlowRuntime retries at once.',
		build: () => ({
			flow: createFlow('retries-succeed')
				.node('start', T.const, { params: { value: 'go' } })
				.node('flaky', T['fail-then-succeed'], { params: { failures: 2 }, config: { maxRetries: 3, retryDelay: 5 } })
				.node('after', T.echo)
				.edge('start', 'flaky')
				.edge('flaky', 'after'),
		}),
		input: {},
	},
	{
		name: 'retries-exhausted',
		description: 'flaky fails both of its 2 attempts: the run fails with the last attempt\'s error, wrapped ("Node \'flaky\' execution failed", cause "attempt 2 failed"); nothing after flaky runs, while the independent branch good → after-good does.',
		build: () => ({
			flow: createFlow('retries-exhausted')
				.node('start', T.const, { params: { value: 'go' } })
				.node('flaky', T['fail-then-succeed'], { params: { failures: 3 }, config: { maxRetries: 2 } })
				.node('never', T.echo)
				.node('good', T.echo)
				.node('after-good', T.echo)
				.edge('start', 'flaky')
				.edge('flaky', 'never')
				.edge('start', 'good')
				.edge('good', 'after-good'),
		}),
		input: {},
	},
	{
		name: 'fallback',
		description: 'primary fails (fail-always) and has config.fallback "backup": backup runs, primary\'s output is null, and primary\'s edge to next carries backup\'s output.',
		build: () => ({
			flow: createFlow('fallback')
				.node('start', T.const, { params: { value: 'in' } })
				.node('primary', T['fail-always'], { params: { message: 'primary down' }, config: { fallback: 'backup' } })
				.node('backup', T.const, { params: { value: 'from-backup' } })
				.node('next', T.echo)
				.edge('start', 'primary')
				.edge('primary', 'next'),
		}),
		input: {},
	},
	{
		name: 'fallback-masks-failure',
		description: 'One branch fails and is rescued by a fallback; another branch fails with no fallback (bad). The failure of bad is in errors, yet the status is "completed".',
		build: () => ({
			flow: createFlow('fallback-masks-failure')
				.node('start', T.const, { params: { value: 'in' } })
				.node('primary', T['fail-always'], { params: { message: 'primary down' }, config: { fallback: 'backup' } })
				.node('backup', T.const, { params: { value: 'from-backup' } })
				.node('bad', T['fail-always'], { params: { message: 'bad down' } })
				.node('after-bad', T.echo)
				.edge('start', 'primary')
				.edge('start', 'bad')
				.edge('bad', 'after-bad'),
		}),
		input: {},
		flowcraftBug: 'Once any fallback has run, getStatus() answers "completed" whatever other nodes failed: bad failed without a fallback and after-bad never ran, so the run should be "failed".',
	},
	{
		name: 'failed-attempt-writes',
		description: 'writer sets context key written and then throws, on both of its 2 attempts; its fallback backup runs. The writes of the failed attempts stay in the context.',
		build: () => ({
			flow: createFlow('failed-attempt-writes')
				.node('writer', T['set-then-fail'], { params: { key: 'written', value: 'by-failed-attempt' }, config: { maxRetries: 2, fallback: 'backup' } })
				.node('backup', T.const, { params: { value: 'from-backup' } }),
		}),
		input: {},
	},
	{
		name: 'timeout-not-enforced',
		description: 'slow takes 30 ms with config.timeout 5 (ms). FlowRuntime does not enforce timeout: the node succeeds.',
		build: () => ({
			flow: createFlow('timeout-not-enforced')
				.node('slow', T['delay-echo'], { inputs: 'job', config: { timeout: 5 } })
				.node('after', T.echo)
				.edge('slow', 'after'),
		}),
		input: { job: { ms: 30, value: 'done' } },
		flowcraftBug: 'config.timeout is part of NodeConfig but the in-process runtime never applies it: an attempt that outlives its timeout still succeeds.',
	},
	{
		name: 'unknown-uses',
		description: 'A JSON blueprint whose node uses an implementation nobody registered: that node fails with a fatal "Implementation for \'…\' not found." and the run fails.',
		build: () => ({
			blueprint: {
				id: 'unknown-uses',
				nodes: [
					{ id: 'start', uses: 'const', params: { value: 1 } },
					{ id: 'mystery', uses: 'not-registered' },
				],
				edges: [{ source: 'start', target: 'mystery' }],
			},
			registry: { const: T.const },
		}),
		input: {},
	},

	// ── batches ──────────────────────────────────────────────────────────
	{
		name: 'batch-docs-example',
		description: 'The batches guide: start outputs [10, 20, 30]; .batch("double-items", double, {inputKey: "start", outputKey: "doubled"}) scatters one worker per item and gathers [20, 40, 60] into context.doubled; sum-results (inputs "doubled") sums them.',
		build: () => ({
			flow: createFlow('batch-docs-example')
				.node('start', T.const, { params: { value: [10, 20, 30] } })
				.batch('double-items', T.double, { inputKey: 'start', outputKey: 'doubled' })
				.node('sum-results', T.sum, { inputs: 'doubled' })
				.edge('start', 'double-items')
				.edge('double-items', 'sum-results'),
		}),
		input: {},
	},
	{
		name: 'batch-empty',
		description: 'A batch over an empty array from the initial context: no workers, doubled is [], the sum 0.',
		build: () => ({
			flow: createFlow('batch-empty')
				.batch('dbl', T.double, { inputKey: 'items', outputKey: 'doubled' })
				.node('total', T.sum, { inputs: 'doubled' })
				.edge('dbl', 'total'),
		}),
		input: { items: [] },
	},
	{
		name: 'batch-missing-input',
		description: 'A batch whose inputKey is in neither the outputs nor the context: the scatter treats the missing input as [] and the batch gathers [].',
		build: () => ({
			flow: createFlow('batch-missing-input')
				.batch('dbl', T.double, { inputKey: 'items', outputKey: 'doubled' })
				.node('total', T.sum, { inputs: 'doubled' })
				.edge('dbl', 'total'),
		}),
		input: {},
	},
	{
		name: 'batch-not-array',
		description: 'A batch over a string: the scatter fails with "Input for batch-scatter node \'dbl_scatter\' must be an array." and the run fails.',
		build: () => ({
			flow: createFlow('batch-not-array')
				.batch('dbl', T.double, { inputKey: 'items', outputKey: 'doubled' })
				.node('total', T.sum, { inputs: 'doubled' })
				.edge('dbl', 'total'),
		}),
		input: { items: 'abc' },
	},
	{
		name: 'batch-item-order',
		description: 'Five workers (delay-echo) that finish in another order than they started (40, 1, 20, 5, 0 ms): the gathered results are in item order.',
		build: () => ({
			flow: createFlow('batch-item-order')
				.batch('slow', T['delay-echo'], { inputKey: 'items', outputKey: 'letters' })
				.node('after', T.echo, { inputs: 'letters' })
				.edge('slow', 'after'),
		}),
		input: {
			items: [
				{ ms: 40, value: 'a' },
				{ ms: 1, value: 'b' },
				{ ms: 20, value: 'c' },
				{ ms: 5, value: 'd' },
				{ ms: 0, value: 'e' },
			],
		},
	},
	{
		name: 'batch-chunked',
		description: 'A batch of five items with chunkSize 2: the scatter makes workers for items 0 and 1 and sets hasMore; the gather then schedules a next scatter (dbl_gather_scatter_next) whose inputs is the gather\'s own input object.',
		build: () => ({
			flow: createFlow('batch-chunked')
				.batch('dbl', T.double, { inputKey: 'items', outputKey: 'doubled', chunkSize: 2 })
				.node('after', T.echo, { inputs: 'doubled' })
				.edge('dbl', 'after'),
		}),
		input: { items: [1, 2, 3, 4, 5] },
		flowcraftBug: 'chunkSize does not work in-process: only the first chunk is processed; while hasMore the gather outputs [] without setting outputKey, its successor runs anyway (with doubled unset), and the next scatter it schedules has an inputs object ({gatherNodeId, hasMore}) that cannot resolve, so the items after the first chunk are never processed.',
	},

	// ── loops ────────────────────────────────────────────────────────────
	{
		name: 'loop-docs-example',
		description: 'The loops guide verbatim: initialize → increment, with .loop("counter", {startNodeId: "increment", endNodeId: "increment", condition: "count < 5"}). increment has two predecessors (initialize and the controller) and joinStrategy all, so it never becomes ready.',
		build: () => ({
			flow: createFlow('loop-docs-example')
				.node('initialize', T.set, { params: { key: 'count', value: 0 } })
				.node('increment', T.increment, { params: { key: 'count' } })
				.loop('counter', { startNodeId: 'increment', endNodeId: 'increment', condition: 'count < 5' })
				.edge('initialize', 'increment'),
		}),
		input: {},
		flowcraftBug: 'The documented loop never runs its body, and the run still reports "completed" (the guide says .loop() makes the body nodes joinStrategy any; 2.10.1 does not).',
	},
	{
		name: 'loop-counter',
		description: 'A counter loop wired through the controller: initialize → counter; body increment; condition `count < 5` (bare context key). The controller continues 5 times and then breaks to done along the break edge (transform context["increment"]).',
		build: () => ({
			flow: createFlow('loop-counter')
				.node('initialize', T.set, { params: { key: 'count', value: 0 } })
				.node('increment', T.increment, { params: { key: 'count' } })
				.node('done', T.echo)
				.loop('counter', { startNodeId: 'increment', endNodeId: 'increment', condition: 'count < 5' })
				.edge('initialize', 'counter')
				.edge('counter', 'done'),
		}),
		input: {},
	},
	{
		name: 'loop-multi-node-body',
		description: 'A loop whose body is two nodes, bump (increment i) → scale (double of bump\'s output); the condition `i < 3` reads a key the body writes. Three iterations, then break to done with context["scale"].',
		build: () => ({
			flow: createFlow('loop-multi-node-body')
				.node('init', T.set, { params: { key: 'i', value: 0 } })
				.node('bump', T.increment, { params: { key: 'i' } })
				.node('scale', T.double)
				.node('done', T.echo)
				.loop('repeat', { startNodeId: 'bump', endNodeId: 'scale', condition: 'i < 3' })
				.edge('init', 'repeat')
				.edge('bump', 'scale')
				.edge('repeat', 'done'),
		}),
		input: {},
	},
	{
		name: 'loop-conditional-exit',
		description: 'A conditional edge out of a loop-controller is tried before its continue/break actions: condition `count < 10` would loop 10 times, but the edge to early (condition `count >= 3`) is taken once count is 3.',
		build: () => ({
			flow: createFlow('loop-conditional-exit')
				.node('initialize', T.set, { params: { key: 'count', value: 0 } })
				.node('increment', T.increment, { params: { key: 'count' } })
				.node('early', T.echo)
				.node('done', T.echo)
				.loop('counter', { startNodeId: 'increment', endNodeId: 'increment', condition: 'count < 10' })
				.edge('initialize', 'counter')
				.edge('counter', 'early', { condition: 'count >= 3' })
				.edge('counter', 'done'),
		}),
		input: {},
	},
	{
		name: 'loop-runaway',
		description: 'A loop whose condition is always true. Flowcraft has no per-loop iteration limit; the orchestrator stops after 10000 traversal steps and runtime.run rejects.',
		build: () => ({
			flow: createFlow('loop-runaway')
				.node('initialize', T.set, { params: { key: 'count', value: 0 } })
				.node('increment', T.increment, { params: { key: 'count' } })
				.loop('forever', { startNodeId: 'increment', endNodeId: 'increment', condition: 'true' })
				.edge('initialize', 'forever'),
		}),
		input: {},
		timeoutMs: 60000,
	},

	// ── subflows ─────────────────────────────────────────────────────────
	{
		name: 'subflow-outputs',
		description: 'A subflow node (createFlow: .node(id, SubflowNode, {params}), so uses is "SubflowNode") with params.inputs {a: "val"} and params.outputs {result: "double-a"}: the parent key result gets the child node\'s output, and the subflow node\'s own output is the child\'s whole final context.',
		build: () => ({
			flow: createFlow('subflow-outputs')
				.node('prepare', T.set, { params: { key: 'val', value: 21 } })
				.node('run-math', SubflowNode, { params: { blueprintId: 'math', inputs: { a: 'val' }, outputs: { result: 'double-a' } } })
				.node('after', T.echo, { inputs: 'result' })
				.edge('prepare', 'run-math')
				.edge('run-math', 'after'),
			children: [{ flow: createFlow('math').node('double-a', T.double, { inputs: 'a' }) }],
		}),
		input: {},
	},
	{
		name: 'subflow-no-outputs',
		description: 'A subflow node without params.outputs: its output is the output of the child\'s single terminal node (x → y, y = (n + 1) * 2).',
		build: () => ({
			flow: createFlow('subflow-no-outputs')
				.node('sub', SubflowNode, { params: { blueprintId: 'inc-then-double', inputs: { n: 'num' } } })
				.node('after', T.echo)
				.edge('sub', 'after'),
			children: [
				{
					flow: createFlow('inc-then-double')
						.node('x', T['add-one'], { inputs: 'n' })
						.node('y', T.double)
						.edge('x', 'y'),
				},
			],
		}),
		input: { num: 4 },
	},
	{
		name: 'subflow-input-passthrough',
		description: 'A subflow node without params.inputs passes its own input to the child\'s start nodes (as _inputs.<start>); the child has two terminal nodes, so the subflow\'s output is a map terminal id → output.',
		build: () => ({
			flow: createFlow('subflow-input-passthrough')
				.node('start', T.const, { params: { value: 7 } })
				.node('sub', SubflowNode, { params: { blueprintId: 'two-ends' } })
				.edge('start', 'sub'),
			children: [
				{
					flow: createFlow('two-ends')
						.node('seed', T.echo)
						.node('twice', T.double)
						.node('plus', T['add-one'])
						.edge('seed', 'twice')
						.edge('seed', 'plus'),
				},
			],
		}),
		input: {},
	},
	{
		name: 'subflow-failing-child',
		description: 'A child run that fails: the subflow node fails with "Sub-workflow \'broken\' did not complete successfully. Status: failed. Error: …" and so does the parent.',
		build: () => ({
			flow: createFlow('subflow-failing-child')
				.node('sub', SubflowNode, { params: { blueprintId: 'broken' } })
				.node('after', T.echo)
				.edge('sub', 'after'),
			children: [{ flow: createFlow('broken').node('bad', T['fail-always'], { params: { message: 'child broke' } }) }],
		}),
		input: {},
	},
	{
		name: 'subflow-json',
		description: 'A JSON blueprint with uses "subflow" (the runtime\'s built-in key) and params {blueprintId, inputs, outputs}, child and test nodes from a registry by name.',
		build: () => ({
			blueprint: {
				id: 'subflow-json',
				nodes: [
					{ id: 'sub', uses: 'subflow', params: { blueprintId: 'child-json', inputs: { word: 'greeting' }, outputs: { shouted: 'shout' } } },
					{ id: 'after', uses: 'echo', inputs: 'shouted' },
				],
				edges: [{ source: 'sub', target: 'after' }],
			},
			registry: { echo: T.echo },
			children: [
				{
					blueprint: { id: 'child-json', nodes: [{ id: 'shout', uses: 'to-upper', inputs: 'word' }], edges: [] },
					registry: { 'to-upper': T['to-upper'] },
				},
			],
		}),
		input: { greeting: 'hello' },
	},
	{
		name: 'subflow-docs-object-form',
		description: 'The subflows guide\'s form .node("run-math", {uses: "subflow", params: {…}}): the builder takes the object for an implementation, gives the node a fn_ key and drops uses and params; running it calls the object as a function.',
		build: () => ({
			flow: createFlow('subflow-docs-object-form')
				.node('prepare-data', T.set, { params: { key: 'val1', value: 10 } })
				.node('run-math', { uses: 'subflow', params: { blueprintId: 'math', inputs: { a: 'val1' }, outputs: { addition_result: 'double-a' } } })
				.edge('prepare-data', 'run-math'),
			children: [{ flow: createFlow('math').node('double-a', T.double, { inputs: 'a' }) }],
		}),
		input: {},
		flowcraftBug: 'The documented way to declare a subflow with the builder does not produce a subflow node: the run fails with "this.implementation is not a function".',
	},
	{
		name: 'subflow-wait-resume',
		description: 'A child that pauses at a wait node: the parent run is awaiting at the subflow node (uses "SubflowNode"), with the child\'s serialized context at _subflowState.sub. resume(…, {output}, "sub") resumes the child, whose output then becomes the subflow node\'s output.',
		build: () => ({
			flow: createFlow('subflow-wait-resume')
				.node('sub', SubflowNode, { params: { blueprintId: 'approval' } })
				.node('after', T.echo)
				.edge('sub', 'after'),
			children: [
				{
					flow: createFlow('approval')
						.node('ask', T.const, { params: { value: 'please approve' } })
						.wait('decide')
						.node('record', T.inspect)
						.edge('ask', 'decide')
						.edge('decide', 'record'),
				},
			],
		}),
		input: {},
		resume: [{ nodeId: 'sub', output: { approved: true } }],
	},
	{
		name: 'subflow-json-wait-resume',
		description: 'The same pausing child under a JSON subflow node (uses "subflow"). resume only treats a node with uses "SubflowNode" as a subflow, so here it takes the resume output as the subflow node\'s own output and never resumes the child.',
		build: () => ({
			blueprint: {
				id: 'subflow-json-wait-resume',
				nodes: [
					{ id: 'sub', uses: 'subflow', params: { blueprintId: 'approval-json' } },
					{ id: 'after', uses: 'echo' },
				],
				edges: [{ source: 'sub', target: 'after' }],
			},
			registry: { echo: T.echo },
			children: [
				{
					blueprint: {
						id: 'approval-json',
						nodes: [
							{ id: 'ask', uses: 'const', params: { value: 'please approve' } },
							{ id: 'decide', uses: 'wait' },
							{ id: 'record', uses: 'inspect' },
						],
						edges: [
							{ source: 'ask', target: 'decide' },
							{ source: 'decide', target: 'record' },
						],
					},
					registry: { const: T.const, inspect: T.inspect },
				},
			],
		}),
		input: {},
		resume: [{ nodeId: 'sub', output: { approved: true } }],
		flowcraftBug: 'runtime.resume recognises a subflow only by uses === "SubflowNode"; for the built-in key "subflow" the child is never resumed (record never runs) and the resume output stands in for the whole subflow.',
	},

	// ── sleep ────────────────────────────────────────────────────────────
	{
		name: 'sleep-zero',
		description: 'sleep with duration 0: the run still stops "awaiting" with a timer (_awaitingDetails.nap = {reason: "timer", wakeUpAt}); the sleep node\'s output is its input. The runtime\'s scheduler resumes it, and the run completes.',
		build: () => ({
			flow: createFlow('sleep-zero')
				.node('start', T.const, { params: { value: 'x' } })
				.sleep('nap', { duration: 0 })
				.node('after', T.echo)
				.edge('start', 'nap')
				.edge('nap', 'after'),
		}),
		input: {},
		resume: [{ via: 'scheduler' }],
	},
	{
		name: 'sleep-number',
		description: 'sleep with a number duration (20 ms): awaiting with a timer, then resumed by the scheduler.',
		build: () => ({
			flow: createFlow('sleep-number')
				.node('start', T.const, { params: { value: 'x' } })
				.sleep('nap', { duration: 20 })
				.node('after', T.echo)
				.edge('start', 'nap')
				.edge('nap', 'after'),
		}),
		input: {},
		resume: [{ via: 'scheduler' }],
	},
	{
		name: 'sleep-string',
		description: 'sleep with a duration string "1s" (format ^\\d+[smhd]$): awaiting with a timer 1 s ahead, then resumed by the scheduler.',
		build: () => ({
			flow: createFlow('sleep-string')
				.node('start', T.const, { params: { value: 'x' } })
				.sleep('nap', { duration: '1s' })
				.node('after', T.echo)
				.edge('start', 'nap')
				.edge('nap', 'after'),
		}),
		input: {},
		resume: [{ via: 'scheduler' }],
	},
	{
		name: 'sleep-invalid',
		description: 'sleep with "500ms", which is not in the accepted format (^\\d+[smhd]$): the sleep node fails and so does the run.',
		build: () => ({
			flow: createFlow('sleep-invalid')
				.node('start', T.const, { params: { value: 'x' } })
				.sleep('nap', { duration: '500ms' })
				.node('after', T.echo)
				.edge('start', 'nap')
				.edge('nap', 'after'),
		}),
		input: {},
	},

	// ── wait and webhook ─────────────────────────────────────────────────
	{
		name: 'wait-resume-output',
		description: 'The pausing guide\'s approval flow: start → wait-for-approval → process. The run stops awaiting at the wait node; resume(…, {output: {approved: true}}, "wait-for-approval") makes that output the wait node\'s output and process\'s input.',
		build: () => ({
			flow: createFlow('wait-resume-output')
				.node('start', T.const, { params: { value: { user: 'Alice', amount: 1500 } } })
				.wait('wait-for-approval')
				.node('process', T.inspect)
				.edge('start', 'wait-for-approval')
				.edge('wait-for-approval', 'process'),
		}),
		input: {},
		resume: [{ nodeId: 'wait-for-approval', output: { approved: true } }],
	},
	{
		name: 'wait-resume-action',
		description: 'The pausing guide\'s review flow: review has edges with actions approve, reject and escalate, and is resumed with {output, action: "approve"}.',
		build: () => ({
			flow: createFlow('wait-resume-action')
				.node('start', T.const, { params: { value: { item: 'document.pdf' } } })
				.wait('review')
				.node('approve', T.const, { params: { value: 'Document approved' } })
				.node('reject', T.const, { params: { value: 'Document rejected' } })
				.node('escalate', T.const, { params: { value: 'Escalated to manager' } })
				.edge('start', 'review')
				.edge('review', 'approve', { action: 'approve' })
				.edge('review', 'reject', { action: 'reject' })
				.edge('review', 'escalate', { action: 'escalate' }),
		}),
		input: {},
		resume: [{ nodeId: 'review', output: { reviewer: 'john@example.com' }, action: 'approve' }],
		flowcraftBug: 'runtime.resume ignores resumeData.action (it routes {output} only), so no action edge is taken: approve never runs and the run reports "completed".',
	},
	{
		name: 'wait-parallel-branch',
		description: 'A wait node beside an independent branch (start → gate, start → side → side-after). The traversal stops after the step in which the wait ran: side ran in that step, side-after has not yet run when the run reports awaiting; it runs after the resume, together with gate\'s successor.',
		build: () => ({
			flow: createFlow('wait-parallel-branch')
				.node('start', T.const, { params: { value: 'go' } })
				.wait('gate')
				.node('after-gate', T.echo)
				.node('side', T.echo)
				.node('side-after', T.echo)
				.edge('start', 'gate')
				.edge('gate', 'after-gate')
				.edge('start', 'side')
				.edge('side', 'side-after'),
		}),
		input: {},
		resume: [{ nodeId: 'gate', output: 'opened' }],
	},
	{
		name: 'webhook-no-adapter',
		description: 'A webhook node (uses "webhook") run in-process: its prep asks dependencies.adapter.registerWebhookEndpoint, and FlowRuntime has no adapter, so the node fails with a TypeError and the run fails.',
		build: () => ({
			blueprint: {
				id: 'webhook-no-adapter',
				nodes: [
					{ id: 'hook', uses: 'webhook' },
					{ id: 'after', uses: 'echo' },
				],
				edges: [{ source: 'hook', target: 'after' }],
			},
			registry: { echo: T.echo },
		}),
		input: {},
	},
	{
		name: 'webhook-stub-adapter',
		description: 'A webhook node (createFlow: .node(id, WebhookNode), so uses is "WebhookNode") with a stub adapter in the runtime\'s dependencies (fixture "webhook-adapter": registerWebhookEndpoint(runId, nodeId) → {url: "https://hooks.example/<runId>/<nodeId>", event: "webhook:<nodeId>"}). Its output is {url, event, request}, request a never-settling Promise (serialized as {}); the webhook does not pause: the next node runs at once.',
		build: () => ({
			flow: createFlow('webhook-stub-adapter')
				.node('hook', WebhookNode)
				.node('after', T.echo)
				.edge('hook', 'after'),
		}),
		input: {},
		fixtures: ['webhook-adapter'],
	},
]
