// The test node implementations of the conformance corpus.
//
// Each is a Flowcraft node function: it gets {input, context, params} and
// returns {output, action?}. They are trivial and deterministic on purpose:
// conformance/README.md describes each one exactly, so that a Go
// implementation registered under the same name behaves the same way.
// Change one here and the README (and the Go mirror) must change with it.

const attempts = new Map() // params.key (or "default") → attempts so far

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export const testNodes = {
	// Outputs params.value.
	const: async ({ params }) => ({ output: params.value }),

	// Outputs its input unchanged.
	echo: async ({ input }) => ({ output: input }),

	// Outputs input * 2.
	double: async ({ input }) => ({ output: input * 2 }),

	// Outputs input + 1.
	'add-one': async ({ input }) => ({ output: input + 1 }),

	// Outputs the input string in upper case.
	'to-upper': async ({ input }) => ({ output: String(input).toUpperCase() }),

	// Outputs what it was given: {hasInput, input} where input is null when
	// the node got none (undefined).
	inspect: async ({ input }) => ({ output: { hasInput: input !== undefined, input: input === undefined ? null : input } }),

	// Outputs the value of the context key params.key (null when unset).
	get: async ({ context, params }) => {
		const value = await context.get(params.key)
		return { output: value === undefined ? null : value }
	},

	// Sets the context key params.key to params.value, and outputs its input.
	set: async ({ context, params, input }) => {
		await context.set(params.key, params.value)
		return { output: input }
	},

	// Adds 1 to the number at context key params.key (default "count"; unset
	// counts as 0), stores it there and outputs the new number.
	increment: async ({ context, params }) => {
		const key = params.key ?? 'count'
		const next = ((await context.get(key)) ?? 0) + 1
		await context.set(key, next)
		return { output: next }
	},

	// Outputs its input with the action params.action.
	'emit-action': async ({ input, params }) => ({ output: input, action: params.action }),

	// Sums an array of numbers.
	sum: async ({ input }) => ({ output: input.reduce((a, b) => a + b, 0) }),

	// Waits input.ms milliseconds, then outputs input.value.
	'delay-echo': async ({ input }) => {
		await sleep(input.ms)
		return { output: input.value }
	},

	// Always throws Error(params.message ?? "fail-always failed").
	'fail-always': async ({ params }) => {
		throw new Error(params.message ?? 'fail-always failed')
	},

	// Attempt n (counted from 1 per node) throws Error("attempt <n> failed")
	// while n <= params.failures (default 1); later attempts output
	// {attempts: n}.
	'fail-then-succeed': async ({ params }) => {
		const key = params.key ?? 'default'
		const n = (attempts.get(key) ?? 0) + 1
		attempts.set(key, n)
		if (n <= (params.failures ?? 1)) throw new Error(`attempt ${n} failed`)
		return { output: { attempts: n } }
	},

	// Sets the context key params.key to params.value, then throws
	// Error("set-then-fail failed").
	'set-then-fail': async ({ context, params }) => {
		await context.set(params.key, params.value)
		throw new Error('set-then-fail failed')
	},
}

// The name of a test node implementation, or undefined.
export function testNodeName(impl) {
	for (const [name, fn] of Object.entries(testNodes)) if (fn === impl) return name
	return undefined
}
