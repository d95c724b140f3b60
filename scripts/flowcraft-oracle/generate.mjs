// Writes the Flowcraft conformance corpus: ../../conformance/<case>.json.
//
//   npm ci && node generate.mjs            every case
//   node generate.mjs chain fallback       only these cases (other files kept)
//
// Each case runs in a child process of its own, for two reasons: the
// builder's fn_<hash> keys depend on a counter that lives in the flowcraft
// module, so a fresh process makes each case's keys depend on that case
// alone; and a case that hangs can be killed (every case is bounded by its
// timeoutMs, default 10 s). See conformance/README.md for the file format.

import { fork } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const outDir = join(here, '..', '..', 'conformance')
const DEFAULT_TIMEOUT_MS = 10000
const SCHEDULER_WAIT_MS = 3000 // how long past the wake-up time to wait for the scheduler

// ── parent ───────────────────────────────────────────────────────────────

async function main(only) {
	const { cases } = await import('./cases.mjs')
	const names = new Set()
	for (const c of cases) {
		if (names.has(c.name)) throw new Error(`duplicate case name ${c.name}`)
		names.add(c.name)
	}
	for (const n of only) if (!names.has(n)) throw new Error(`no case named ${n}`)
	const selected = only.length ? cases.filter((c) => only.includes(c.name)) : cases

	mkdirSync(outDir, { recursive: true })
	if (!only.length) {
		// A full run owns every case file: drop the ones of removed cases.
		for (const f of readdirSync(outDir)) if (f.endsWith('.json')) rmSync(join(outDir, f))
	}
	const version = JSON.parse(readFileSync(join(here, 'node_modules', 'flowcraft', 'package.json'), 'utf8')).version
	for (const c of selected) {
		const started = Date.now()
		const record = await runChild(c.name, c.timeoutMs ?? DEFAULT_TIMEOUT_MS)
		const doc = {
			name: c.name,
			description: c.description,
			flowcraftVersion: version,
			...record,
		}
		if (c.flowcraftBug) doc.flowcraftBug = c.flowcraftBug
		writeFileSync(join(outDir, `${c.name}.json`), `${JSON.stringify(doc, null, '\t')}\n`)
		const status = record.expected?.status
		const after = record.expected?.afterResume?.map((r) => r.status).join(' → ')
		console.log(`${c.name}: ${status}${after ? ` → ${after}` : ''} (${Date.now() - started} ms)`)
	}
}

function runChild(name, timeoutMs) {
	return new Promise((resolve, reject) => {
		const proc = fork(fileURLToPath(import.meta.url), ['--child', name], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
		let record
		const timer = setTimeout(() => {
			record = { timedOut: true }
			proc.kill('SIGKILL')
		}, timeoutMs)
		proc.on('message', (m) => {
			record = m
		})
		proc.on('error', reject)
		proc.on('exit', (code, signal) => {
			clearTimeout(timer)
			if (record?.timedOut) {
				resolve({ expected: { status: 'timeout', note: `FlowRuntime had not settled after ${timeoutMs} ms; the case was killed` } })
			} else if (record?.error) {
				reject(new Error(`case ${name}: ${record.error}`))
			} else if (!record) {
				reject(new Error(`case ${name}: child exited (${code ?? signal}) without a result`))
			} else resolve(record)
		})
	})
}

// ── child: one case ──────────────────────────────────────────────────────

async function child(name) {
	try {
		process.send(await runCase(name))
	} catch (err) {
		process.send({ error: err?.stack ?? String(err) })
	}
	// Scheduler intervals and never-settling promises must not keep us.
	process.exit(0)
}

// Flowcraft draws execution and batch ids from crypto.randomUUID; the N-th
// draw of a case is made 00000000-0000-4000-8000-<N as 12 hex digits>, so
// that the files are the same on every run.
function deterministicIds() {
	let n = 0
	const fake = () => `00000000-0000-4000-8000-${(++n).toString(16).padStart(12, '0')}`
	Object.defineProperty(globalThis.crypto, 'randomUUID', { value: fake, configurable: true, writable: true })
}

// console.error/warn calls (the evaluators report swallowed expression
// errors this way) are recorded, not printed.
function captureConsole(sink) {
	const fmt = (args) =>
		args
			.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === 'string' ? a : JSON.stringify(a)))
			.join(' ')
	console.error = (...args) => sink.push({ level: 'error', message: fmt(args) })
	console.warn = (...args) => sink.push({ level: 'warn', message: fmt(args) })
}

async function runCase(name) {
	deterministicIds()
	const flowcraft = await import('flowcraft')
	const { FlowRuntime, UnsafeEvaluator, PropertyEvaluator, SubflowNode, WebhookNode, WaitNode, SleepNode } = flowcraft
	const { testNodeName } = await import('./nodes.mjs')
	const { cases } = await import('./cases.mjs')
	const c = cases.find((x) => x.name === name)
	if (!c) throw new Error(`no case named ${name}`)

	const built = c.build()
	const parts = [{ ...built, children: undefined }, ...(built.children ?? [])]
	const functionRegistry = new Map()
	const registry = {}
	const blueprints = {}
	const pristine = []
	for (const p of parts) {
		let bp
		if (p.flow) {
			bp = p.flow.toBlueprint()
			for (const [k, v] of p.flow.getFunctionRegistry()) functionRegistry.set(k, v)
		} else {
			bp = p.blueprint
			Object.assign(registry, p.registry ?? {})
		}
		// FlowRuntime.resume edits the blueprint it is given: record it first.
		pristine.push(JSON.parse(JSON.stringify(bp)))
		blueprints[bp.id] = bp
		p.bp = bp
	}
	const main = parts[0].bp

	const builtinClasses = new Map([
		[SubflowNode, 'flowcraft:SubflowNode'],
		[WebhookNode, 'flowcraft:WebhookNode'],
		[WaitNode, 'flowcraft:WaitNode'],
		[SleepNode, 'flowcraft:SleepNode'],
	])
	const nodes = {}
	for (const [key, impl] of [...functionRegistry, ...Object.entries(registry)]) {
		const n = testNodeName(impl) ?? builtinClasses.get(impl)
		nodes[key] = n ?? (typeof impl === 'function' ? 'unknown-function' : 'not-a-function')
	}

	const fixtures = {
		'webhook-adapter': {
			dependencies: {
				adapter: {
					registerWebhookEndpoint: async (runId, nodeId) => ({
						url: `https://hooks.example/${runId}/${nodeId}`,
						event: `webhook:${nodeId}`,
					}),
				},
			},
		},
	}
	const runtimeOptions = {
		evaluator: c.evaluator === 'property' ? new PropertyEvaluator() : new UnsafeEvaluator(),
		blueprints,
		registry,
	}
	for (const f of c.fixtures ?? []) Object.assign(runtimeOptions, fixtures[f])

	const logs = []
	captureConsole(logs)
	const runtime = new FlowRuntime(runtimeOptions)
	const runOptions = { ...(c.runOptions ?? {}), functionRegistry }

	const input = structuredClone(c.input ?? {})
	const expected = await settle(() => runtime.run(main, structuredClone(input), runOptions))
	let last = expected.raw
	delete expected.raw

	const resumeSteps = []
	if (c.resume) {
		expected.afterResume = []
		for (const step of c.resume) {
			let outcome
			if (step.via === 'scheduler') {
				const nodeId = last?.context?._awaitingNodeIds?.[0]
				resumeSteps.push({ via: 'scheduler', nodeId, output: null })
				outcome = await settle(() => viaScheduler(runtime, last))
			} else {
				const data = { output: step.output }
				if (step.action !== undefined) data.action = step.action
				resumeSteps.push({ via: 'resume', nodeId: step.nodeId, ...data })
				outcome = await settle(() => runtime.resume(main, last.serializedContext, data, step.nodeId, { functionRegistry }))
			}
			last = outcome.raw
			delete outcome.raw
			expected.afterResume.push(outcome)
		}
	}
	if (logs.length) expected.console = logs

	const record = {
		builder: parts[0].flow ? 'createFlow' : 'json',
		evaluator: c.evaluator === 'property' ? 'PropertyEvaluator' : 'UnsafeEvaluator',
		blueprint: pristine[0],
		blueprints: Object.fromEntries(pristine.slice(1).map((b) => [b.id, b])),
		input,
		nodes,
	}
	if (c.fixtures) record.fixtures = c.fixtures
	if (c.runOptions) record.runOptions = c.runOptions
	if (resumeSteps.length) record.resume = resumeSteps
	record.expected = expected
	return record
}

// The scheduler resumes timer-awaiting runs once their wakeUpAt has passed:
// start it and wait for its result. It checks once a second; it has to be
// started without an interval, since startScheduler(ms) replaces the
// scheduler and so forgets the timers that run() registered.
async function viaScheduler(runtime, result) {
	const executionId = result.context._executionId
	runtime.startScheduler()
	try {
		const wakeUps = Object.values(result.context._awaitingDetails ?? {}).map((d) => Date.parse(d.wakeUpAt))
		const deadline = Math.max(Date.now(), ...wakeUps.filter(Number.isFinite)) + SCHEDULER_WAIT_MS
		while (Date.now() < deadline) {
			const r = runtime.scheduler.getResumeResult(executionId)
			if (r) return r
			await new Promise((res) => setTimeout(res, 10))
		}
		throw new Error(`the scheduler did not resume ${executionId}`)
	} finally {
		runtime.stopScheduler()
	}
}

// Runs fn and describes its WorkflowResult, or what it threw.
async function settle(fn) {
	let result
	try {
		result = await fn()
	} catch (err) {
		return { status: 'threw', thrown: describeError(err), raw: undefined }
	}
	const out = { status: result.status }
	out.context = normalize(JSON.parse(JSON.stringify(result.context)))
	const undefinedPaths = findUndefined(result.context, [], [])
	if (undefinedPaths.length) out.undefinedPaths = undefinedPaths
	if (result.errors?.length) out.errors = result.errors.map(describeStateError)
	out.raw = result
	return out
}

// The paths (key by key, array indexes as numbers) of the values that are
// undefined: JSON drops them from objects (and makes them null in arrays),
// so the context alone cannot tell "set to undefined" from "not there".
function findUndefined(v, path, acc) {
	if (path.length > 32) return acc
	const plain = v !== null && typeof v === 'object' && (Array.isArray(v) || Object.getPrototypeOf(v) === Object.prototype)
	if (!plain) return acc
	for (const [k, x] of Object.entries(v)) {
		const p = [...path, Array.isArray(v) ? Number(k) : k]
		if (x === undefined) acc.push(p)
		else findUndefined(x, p, acc)
	}
	return acc
}

// An entry of WorkflowResult.errors: a FlowcraftError spread into an object,
// plus timestamp and originalError.
function describeStateError(e) {
	const d = {}
	if (e.nodeId !== undefined) d.nodeId = e.nodeId
	d.message = e.message
	if (e.isFatal !== undefined) d.isFatal = e.isFatal
	if (e.originalError) d.originalError = describeError(e.originalError)
	return d
}

function describeError(e) {
	if (e === undefined || e === null) return undefined
	if (typeof e !== 'object') return { value: String(e) }
	// A sub-workflow's error carries the child's WorkflowResult.errors
	// entry, a plain object, as its cause.
	if (!(e instanceof Error)) return { plainObject: true, ...describeStateError(e) }
	const d = { name: e.name, message: e.message }
	if (e.nodeId !== undefined) d.nodeId = e.nodeId
	if (e.blueprintId !== undefined) d.blueprintId = e.blueprintId
	if (e.isFatal !== undefined) d.isFatal = e.isFatal
	const cause = describeError(e.cause)
	if (cause) d.cause = cause
	return d
}

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

// Timestamps (sleep's wakeUpAt) depend on the clock: "<timestamp>".
function normalize(v) {
	if (typeof v === 'string') return ISO.test(v) ? '<timestamp>' : v
	if (Array.isArray(v)) return v.map(normalize)
	if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalize(x)]))
	return v
}

if (process.argv[2] === '--child') await child(process.argv[3])
else await main(process.argv.slice(2))
