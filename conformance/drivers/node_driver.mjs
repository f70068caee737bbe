// iii conformance driver for the Node iii-sdk (see SPEC.md in this directory).
//
// Reads JSON-line commands on stdin, writes JSON-line events on stdout. Uses only
// the public SDK API: registerWorker, InvocationError, TriggerAction.
// The SDK is loaded from $III_SDK_NODE_PREFIX/node_modules/$III_SDK_NODE_PACKAGE
// (set by conformance.sdk.installer); without it, from a plain `import 'iii-sdk'`.
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'
import util from 'node:util'
import { pathToFileURL } from 'node:url'

const PROTOCOL = 1

// --- stdout is the event channel, and nothing else may write to it -------------------
const toStderr = (...args) => {
  try {
    fs.writeSync(2, util.format(...args) + '\n')
  } catch {}
}
for (const m of ['log', 'info', 'debug', 'warn', 'error', 'trace', 'dir']) console[m] = toStderr
process.stdout.write = (chunk, enc, cb) => {
  process.stderr.write(chunk, enc, cb)
  return true
}

const monoNs = () => process.hrtime.bigint()

function emit(event, fields = {}) {
  const t = monoNs()
  // t_ns is a BigInt: splice it in as an exact integer literal.
  const body = JSON.stringify({ event, ...fields }, (k, v) => (typeof v === 'bigint' ? Number(v) : v))
  const line = `{"t_ns":${t.toString()},${body.slice(1)}\n`
  writeAll(1, Buffer.from(line))
}

// stdout may be a non-blocking pipe: writeSync can write part of a large line or throw EAGAIN,
// and a cut line would look like a crashed driver. Write it all, waiting briefly when full.
const pause = new Int32Array(new SharedArrayBuffer(4))
function writeAll(fd, buf) {
  let off = 0
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off)
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e
      Atomics.wait(pause, 0, 0, 2)
    }
  }
}

process.env.OTEL_ENABLED ??= 'false'

async function loadSdk() {
  const prefix = process.env.III_SDK_NODE_PREFIX
  const name = process.env.III_SDK_NODE_PACKAGE || 'iii-sdk'
  if (!prefix) return { mod: await import('iii-sdk'), version: null }
  const dir = path.join(prefix, 'node_modules', name)
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
  let entry = null
  const dot = pkg.exports && (typeof pkg.exports === 'string' ? pkg.exports : pkg.exports['.'])
  if (typeof dot === 'string') entry = dot
  else if (dot && typeof dot === 'object') {
    const imp = dot.import
    entry = typeof imp === 'string' ? imp : imp?.default ?? dot.default ?? dot.require
  }
  entry ??= pkg.module ?? pkg.main ?? 'index.js'
  const mod = await import(pathToFileURL(path.join(dir, entry)).href)
  return { mod, version: pkg.version ?? null }
}

let sdk
try {
  sdk = await loadSdk()
} catch (e) {
  emit('fatal', { message: `cannot load iii-sdk: ${e?.stack ?? e}` })
  process.exit(3)
}
const { registerWorker, InvocationError, TriggerAction } = sdk.mod

class CommandError extends Error {}

const state = {
  worker: null,
  functions: new Map(),
  triggers: new Map(),
  records: new Map(),
  nextHandle: 0,
}

function needWorker() {
  if (!state.worker) throw new CommandError('not connected: send connect first')
  return state.worker
}

function capabilities() {
  return {
    state: false, // 0.22.1 exposes no connection-state getter (HEAD adds getConnectionState)
    state_changed: false,
    trigger_id: false,
    invocation_id: false,
    register_trigger_type: true,
    unregister_trigger_type: true,
    connect_blocks: false,
  }
}

function makeHandler(functionId, behaviour) {
  const kind = behaviour?.kind ?? 'echo'
  if (!['echo', 'fail', 'sleep', 'record'].includes(kind)) throw new CommandError(`unknown behaviour kind ${JSON.stringify(kind)}`)
  const message = behaviour.message ?? 'driver-induced failure'
  const ms = Number(behaviour.ms ?? 0)
  return async (data) => {
    emit('invoked', { function_id: functionId, payload: data === undefined ? null : data, invocation_id: null, behaviour: kind })
    if (kind === 'record') {
      if (!state.records.has(functionId)) state.records.set(functionId, [])
      state.records.get(functionId).push(data)
    }
    if (kind === 'sleep') await new Promise((r) => setTimeout(r, ms))
    if (kind === 'fail') throw new Error(message)
    return data
  }
}

const commands = {
  async connect(c) {
    if (state.worker) throw new CommandError('already connected')
    const otel = Boolean(c.otel)
    process.env.OTEL_ENABLED = otel ? 'true' : 'false'
    const opts = { otel: { enabled: otel } }
    if (c.name != null) opts.workerName = c.name
    if (c.invocation_timeout_ms != null) opts.invocationTimeoutMs = Number(c.invocation_timeout_ms)
    if (c.reconnection) {
      const map = {
        initial_delay_ms: 'initialDelayMs',
        max_delay_ms: 'maxDelayMs',
        backoff_multiplier: 'backoffMultiplier',
        jitter_factor: 'jitterFactor',
        max_retries: 'maxRetries',
      }
      opts.reconnectionConfig = {}
      for (const [k, v] of Object.entries(c.reconnection)) {
        if (!(k in map)) throw new CommandError(`unknown reconnection field ${k}`)
        opts.reconnectionConfig[map[k]] = v
      }
    }
    const t0 = monoNs()
    state.worker = registerWorker(c.url, opts)
    const blocked = Number(monoNs() - t0) / 1e6
    return { state: currentState(), blocked_ms: blocked }
  },

  async state() {
    if (!state.worker) return { state: 'not_connected' }
    return { state: currentState() }
  },

  async register_function(c) {
    const w = needWorker()
    const handler = makeHandler(c.function_id, c.behaviour ?? { kind: 'echo' })
    const opts = c.description != null ? { description: c.description } : undefined
    state.functions.set(c.function_id, w.registerFunction(c.function_id, handler, opts))
    return { function_id: c.function_id }
  },

  async unregister_function(c) {
    needWorker()
    const ref = state.functions.get(c.function_id)
    if (!ref) throw new CommandError(`function ${JSON.stringify(c.function_id)} was not registered by this driver`)
    state.functions.delete(c.function_id)
    ref.unregister()
    return {}
  },

  async register_trigger_type(c) {
    const w = needWorker()
    const type = c.trigger_type
    w.registerTriggerType(
      { id: type, description: c.description ?? type },
      {
        async registerTrigger(config) {
          emit('trigger_type_call', { op: 'register', trigger_type: type, trigger: config })
        },
        async unregisterTrigger(config) {
          emit('trigger_type_call', { op: 'unregister', trigger_type: type, trigger: config })
        },
      },
    )
    return {}
  },

  async unregister_trigger_type(c) {
    const w = needWorker()
    w.unregisterTriggerType({ id: c.trigger_type, description: c.trigger_type })
    return {}
  },

  async register_trigger(c) {
    const w = needWorker()
    const trig = w.registerTrigger({ type: c.trigger_type, function_id: c.function_id, config: c.config ?? {} })
    const handle = `t${++state.nextHandle}`
    state.triggers.set(handle, trig)
    return { handle, trigger_id: typeof trig?.id === 'string' ? trig.id : null }
  },

  async unregister_trigger(c) {
    needWorker()
    const trig = state.triggers.get(c.handle)
    if (!trig) throw new CommandError(`unknown trigger handle ${JSON.stringify(c.handle)}`)
    state.triggers.delete(c.handle)
    trig.unregister()
    return {}
  },

  async trigger(c) {
    const w = needWorker()
    const req = { function_id: c.function_id, payload: c.payload ?? null }
    if (c.timeout_ms != null) req.timeoutMs = c.timeout_ms
    if (c.action === 'void') req.action = TriggerAction.Void()
    const t0 = monoNs()
    try {
      const value = await w.trigger(req)
      const t1 = monoNs()
      return { outcome: 'ok', result: value === undefined ? null : value, elapsed_ms: Number(t1 - t0) / 1e6, t_start_ns: t0, t_end_ns: t1 }
    } catch (e) {
      const t1 = monoNs()
      return {
        outcome: 'error',
        error: {
          code: typeof e?.code === 'string' ? e.code : null,
          message: String(e?.message ?? e),
          class: e instanceof InvocationError ? 'InvocationError' : (e?.name ?? typeof e),
        },
        elapsed_ms: Number(t1 - t0) / 1e6,
        t_start_ns: t0,
        t_end_ns: t1,
      }
    }
  },

  async records(c) {
    if (c.function_id != null) return { records: { [c.function_id]: [...(state.records.get(c.function_id) ?? [])] } }
    return { records: Object.fromEntries([...state.records].map(([k, v]) => [k, [...v]])) }
  },

  async shutdown() {
    if (state.worker) {
      await Promise.race([state.worker.shutdown(), new Promise((r) => setTimeout(r, 10000))])
    }
    return {}
  },
}

function currentState() {
  const w = state.worker
  if (w && typeof w.getConnectionState === 'function') return String(w.getConnectionState())
  return 'unsupported'
}

async function handle(line) {
  let c
  try {
    c = JSON.parse(line)
    if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new Error('command is not a JSON object')
  } catch (e) {
    emit('reply', { id: null, ok: false, error: { message: `bad command line: ${e.message}` } })
    return
  }
  const fn = Object.hasOwn(commands, c.cmd) ? commands[c.cmd] : null
  if (!fn) {
    emit('reply', { id: c.id ?? null, ok: false, error: { message: `unknown command ${JSON.stringify(c.cmd)}` } })
    return
  }
  try {
    const result = await fn(c)
    emit('reply', { id: c.id, ok: true, result })
  } catch (e) {
    emit('reply', {
      id: c.id,
      ok: false,
      error: { message: String(e?.message ?? e), type: e?.constructor?.name ?? 'Error', traceback: e?.stack ?? null },
    })
  }
  if (c.cmd === 'shutdown') process.exit(0)
}

process.on('uncaughtException', (e) => toStderr('[driver] uncaughtException:', e))
process.on('unhandledRejection', (e) => toStderr('[driver] unhandledRejection:', e))

const caps = capabilities()
emit('ready', {
  protocol: PROTOCOL,
  pid: process.pid,
  driver: 'node_driver',
  sdk: { language: 'node', package: process.env.III_SDK_NODE_PACKAGE || 'iii-sdk', version: sdk.version },
  runtime: { name: 'node', version: process.versions.node },
  capabilities: caps,
})

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on('line', (line) => {
  if (line.trim()) handle(line)
})
rl.on('close', async () => {
  // stdin closed: the harness is gone.
  if (state.worker) await Promise.race([state.worker.shutdown().catch(() => {}), new Promise((r) => setTimeout(r, 3000))])
  process.exit(0)
})
