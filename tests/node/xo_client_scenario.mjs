// One scenario with a real Xen Orchestra API client against our server's WebSocket /api/.
//
//   node xo_client_scenario.mjs '{"lib":"xo-lib","url":"http://127.0.0.1:PORT",
//                                 "email":"…","password":"…","clientId":"…",
//                                 "migrate":{"vm":"web-01","host":"a2"}}'
//
// lib "xo-lib": the npm xo-lib package (0.9.0, the newest published), used as its README says.
// lib "jsonrpc-websocket-client": the transport of xo-lib 0.11.2 (what xo-cli 0.32.3 runs on:
// ws 8, json-rpc-peer 0.17), used the way xo-lib 0.11 wraps it (url + '/api/', session.signIn
// through the raw call).
//
// Prints one JSON document on stdout. Exit code 0 even when a step fails (the failure is part
// of the report), 1 only if the scenario itself crashed.
import XoLib from 'xo-lib'
import { JsonRpcWebSocketClient } from 'jsonrpc-websocket-client'

const opts = JSON.parse(process.argv[2])
const report = { lib: opts.lib, steps: [] }
const step = name => report.steps.push(name)

const Xo = XoLib.default ?? XoLib

// The same surface for both libraries: open, signIn, call, notifications, close.
function makeClient() {
  if (opts.lib === 'xo-lib') {
    const xo = new Xo({ url: opts.url })
    const client = {
      raw: xo,
      events: [],
      open: () => xo.open(),
      signIn: credentials => xo.signIn(credentials).then(() => xo.user),
      getUser: () => xo.refreshUser(),
      // xo-lib refuses session.* in call(); it reaches them through its transport's call.
      rawCall: (method, params) => Object.getPrototypeOf(Xo.prototype).call.call(xo, method, params),
      call: (method, params) => xo.call(method, params),
      close: () => xo.close(),
    }
    xo.on('authenticated', () => client.events.push('authenticated'))
    xo.on('authenticationFailure', () => client.events.push('authenticationFailure'))
    return client
  }
  const ws = new JsonRpcWebSocketClient(opts.url.replace(/\/+$/, '') + '/api/')
  return {
    raw: ws,
    events: [],
    open: () => ws.open(),
    signIn: credentials => ws.call('session.signIn', credentials),
    getUser: () => ws.call('session.getUser'),
    rawCall: (method, params) => ws.call(method, params),
    call: (method, params) => ws.call(method, params),
    close: () => ws.close(),
  }
}

// Everything a user could look at in an error that came back from the server.
function errorInfo(error) {
  return {
    name: error?.constructor?.name,
    code: error?.code,
    message: String(error?.message ?? error),
    data: error?.data,
  }
}

async function errorOf(promise) {
  try {
    const result = await promise
    return { unexpectedResult: result === undefined ? null : result }
  } catch (error) {
    return errorInfo(error)
  }
}

// Applies `all` notifications the way xo-web / xo-server-test's XoConnection do.
function watchObjects(client) {
  const watched = { objects: {}, counts: { enter: 0, exit: 0, other: 0 }, taskLabels: new Set() }
  client.raw.on('notification', message => {
    if (message.method !== 'all') {
      watched.counts.other++
      return
    }
    const { type, items } = message.params
    watched.counts[type === 'exit' ? 'exit' : 'enter']++
    for (const [id, object] of Object.entries(items)) {
      if (type === 'exit') {
        delete watched.objects[id]
      } else {
        watched.objects[id] = object
        if (object.type === 'task') watched.taskLabels.add(object.name_label)
      }
    }
  })
  return watched
}

async function waitFor(predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for a condition')
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

const clients = []
try {
  const a = makeClient()
  clients.push(a)
  const watchedA = watchObjects(a)
  await a.open()
  step('open')

  // Before sign-in: a protected method is refused, an unknown one is not found.
  report.beforeSignIn = await errorOf(a.call('vm.migrate', { vm: 'x', targetHost: 'y' }))
  report.unknownMethod = await errorOf(a.call('no.such.method', {}))

  report.badPassword = await errorOf(a.signIn({ email: opts.email, password: 'not-the-password' }))
  // xo-server throttles the next attempt for that user (a plain error, hidden as -32000).
  report.tooFast = await errorOf(a.signIn({ email: opts.email, password: opts.password }))
  await new Promise(resolve => setTimeout(resolve, opts.throttleMs))
  report.user = await a.signIn({ email: opts.email, password: opts.password })
  report.eventsA = a.events
  report.getUser = await a.getUser() // a frame without `params`
  step('signedIn')

  const tokenParams = { client: { id: opts.clientId }, description: `node-clients test (${opts.lib})` }
  report.token = await a.call('token.create', tokenParams)
  report.tokenAgain = await a.call('token.create', tokenParams)
  // A plain server error: admins get its message (xo-cli `create-token --expiresIn 1000`).
  report.tokenTooShort = await errorOf(a.call('token.create', { expiresIn: 1000 }))
  step('token')

  const b = makeClient()
  clients.push(b)
  const watchedB = watchObjects(b)
  await b.open()
  report.userByToken = await b.signIn({ token: report.token })
  report.badToken = await errorOf(makeTokenClient('not-a-token'))
  step('tokenSignIn')

  const methods = await a.call('system.getMethodsInfo')
  report.methodsInfo = {
    count: Object.keys(methods).length,
    signIn: methods['session.signIn'],
    vmMigrate: methods['vm.migrate'],
  }
  step('methodsInfo')

  const vms = await b.call('xo.getAllObjects', { filter: { type: 'VM' } })
  report.vms = Object.entries(vms).map(([key, vm]) => ({
    key,
    id: vm.id,
    uuid: vm.uuid,
    type: vm.type,
    name_label: vm.name_label,
    power_state: vm.power_state,
    $container: vm.$container,
    $pool: vm.$pool,
  }))
  step('getAllObjects')

  // The one-shot download xo-web's connectStore and xo-cli's `$getFrom` use.
  const getFrom = await b.call('xo.getAllObjects', { filter: { type: 'VM' }, ndjson: true })
  const response = await fetch(new URL(getFrom.$getFrom, opts.url))
  const lines = (await response.text()).split('\n').filter(line => line !== '')
  report.ndjson = {
    getFrom,
    status: response.status,
    ids: lines.map(line => JSON.parse(line).id),
    again: (await fetch(new URL(getFrom.$getFrom, opts.url))).status,
  }
  step('ndjson')

  const anyVm = report.vms[0]?.id ?? 'x'
  report.invalidParams = await errorOf(
    a.call('vm.migrate', { vm: anyVm, targetHost: anyVm, id: anyVm, force: 'yes' })
  )
  report.noSuchVm = await errorOf(a.call('vm.migrate', { vm: 'no-such-vm', targetHost: anyVm }))
  step('errors')

  if (opts.migrate !== undefined) {
    const hosts = await a.call('xo.getAllObjects', { filter: { type: 'host' } })
    const vm = report.vms.find(v => v.name_label === opts.migrate.vm)
    const host = Object.values(hosts).find(h => h.name_label === opts.migrate.host)
    report.migrate = { vm: vm.id, host: host.id, before: vm.$container }
    const started = Date.now()
    report.migrate.result = await a.call('vm.migrate', { vm: vm.id, targetHost: host.id })
    report.migrate.ms = Date.now() - started
    step('migrated')

    // Both signed-in connections see the move through `all` notifications alone.
    for (const [name, watched] of [
      ['A', watchedA],
      ['B', watchedB],
    ]) {
      await waitFor(() => watched.objects[vm.id]?.$container === host.id, 10e3)
      // XAPI task objects of the migration leave the collection (`exit`) once it is over.
      const tasks = () => Object.values(watched.objects).filter(o => o.type === 'task')
      try {
        await waitFor(() => tasks().length === 0, 5e3)
      } catch {}
      report.migrate['seenBy' + name] = {
        $container: watched.objects[vm.id].$container,
        tasksLeft: tasks().map(t => ({ name_label: t.name_label, status: t.status })),
        counts: watched.counts,
        taskLabels: [...watched.taskLabels].sort(),
      }
    }
    step('seenMoved')
  }
  report.notificationsA = watchedA.counts
  report.notificationsB = watchedB.counts

  // session.signOut: true, and the connection is anonymous again.
  report.signOut = await a.rawCall('session.signOut')
  report.afterSignOut = await errorOf(a.call('xo.getAllObjects', {}))
  step('signedOut')
} catch (error) {
  report.error = errorInfo(error)
  report.error.stack = error?.stack
} finally {
  await Promise.allSettled(clients.map(c => c.close()))
}
process.stdout.write(JSON.stringify(report) + '\n')
process.exit(0)

// A sign-in attempt with a token on a fresh connection, closed afterwards.
async function makeTokenClient(token) {
  const c = makeClient()
  await c.open()
  try {
    return await c.signIn({ token })
  } finally {
    await c.close()
  }
}
