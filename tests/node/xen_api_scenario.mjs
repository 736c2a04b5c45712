// One scenario with XO's real XAPI client (npm `xen-api`) against a simulated pool master.
//
//   node xen_api_scenario.mjs '{"url":"http://127.0.1.1:PORT","user":"root","password":"…",
//     "transport":"auto","vm":"<uuid>","host":"<uuid>","badVm":"<uuid of a dom0>"}'
//
// The client does its own discovery (system.listMethods), event loop (event.inject +
// event.from) and object collection. Prints one JSON document on stdout; exit code 0 even when
// a step fails (the failure is part of the report), 1 only if the scenario itself crashed.
import { createClient } from 'xen-api'

const opts = JSON.parse(process.argv[2])
const report = { steps: [] }
const step = name => report.steps.push(name)

// Which endpoint each HTTP request went to: shows what the `auto` transport settled on.
const paths = {}
function countPaths(xapi) {
  const dispatcher = xapi._undiciDispatcher
  const dispatch = dispatcher.dispatch.bind(dispatcher)
  dispatcher.dispatch = (request, handler) => {
    paths[request.path] = (paths[request.path] ?? 0) + 1
    return dispatch(request, handler)
  }
}

function errorInfo(error) {
  return {
    name: error?.constructor?.name,
    code: error?.code,
    params: error?.params,
    message: String(error?.message ?? error),
  }
}

function vmSummary(xapi) {
  return Object.values(xapi.objects.all)
    .filter(o => o.$type === 'VM')
    .map(vm => ({
      uuid: vm.uuid,
      name_label: vm.name_label,
      is_a_template: vm.is_a_template,
      is_control_domain: vm.is_control_domain,
      power_state: vm.power_state,
      resident_on: vm.resident_on,
    }))
}

async function waitFor(predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for a condition')
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

const xapi = createClient({
  url: opts.url,
  auth: { user: opts.user, password: opts.password },
  allowUnauthorized: true,
  transport: opts.transport ?? 'auto',
  debounce: 20,
})
countPaths(xapi)

try {
  await xapi.connect()
  step('connected')
  report.pool = { uuid: xapi.pool.uuid, name_label: xapi.pool.name_label, $ref: xapi.pool.$ref }
  report.types = xapi._types

  await xapi.objectsFetched
  step('objectsFetched')
  report.vms = vmSummary(xapi)
  report.hosts = Object.values(xapi.objects.all)
    .filter(o => o.$type === 'host')
    .map(h => ({ uuid: h.uuid, name_label: h.name_label, $ref: h.$ref, address: h.address }))

  // A call that fails: XapiError with the XAPI code and its params.
  try {
    await xapi.call('VM.get_record', 'OpaqueRef:00000000-0000-0000-0000-000000000000')
    report.badCall = { unexpectedSuccess: true }
  } catch (error) {
    report.badCall = errorInfo(error)
  }
  step('badCall')

  // Value types as each transport decodes them (int64: number over JSON-RPC, string over
  // XML-RPC; datetimes: strings over JSON-RPC, Date objects over XML-RPC).
  const someVm = xapi.getObjectByUuid(opts.vm)
  const metrics = await xapi.getRecord('VM_metrics', someVm.metrics)
  report.valueTypes = {
    memory_static_max: typeof someVm.memory_static_max,
    memory_static_max_value: String(someVm.memory_static_max),
    start_time: metrics.start_time instanceof Date ? 'Date' : typeof metrics.start_time,
    start_time_value: metrics.start_time instanceof Date ? metrics.start_time.toISOString() : metrics.start_time,
    VCPUs_max: typeof someVm.VCPUs_max,
    is_a_template: typeof someVm.is_a_template,
  }

  // A write through the record helper, then barrier(): an event round trip on the pool
  // object (pool.add_to_other_config) after which the collection is up to date.
  await someVm.set_name_description('set by xen-api')
  const fresh = await xapi.barrier(someVm.$ref)
  report.barrier = { name_description: fresh.name_description }
  step('barrier')

  if (opts.vm !== undefined) {
    const vm = xapi.getObjectByUuid(opts.vm)
    const host = xapi.getObjectByUuid(opts.host)
    report.before = { resident_on: vm.resident_on, host: host.$ref }

    // Async.VM.pool_migrate + watchTask over the client's own event loop, then task.destroy.
    const started = Date.now()
    report.migrateResult = await xapi.callAsync('VM.pool_migrate', vm.$ref, host.$ref, { live: 'true' })
    report.migrateMs = Date.now() - started
    step('migrated')

    // The move must reach the client's own collection through event.from.
    await waitFor(() => xapi.getObjectByUuid(opts.vm).resident_on === host.$ref, 10e3)
    report.after = { resident_on: xapi.getObjectByUuid(opts.vm).resident_on }
    step('seenMoved')

    // A failing async call (a control domain cannot move): the task fails and watchTask
    // rejects with the task's error_info.
    const badVm = xapi.getObjectByUuid(opts.badVm)
    try {
      await xapi.callAsync('VM.pool_migrate', badVm.$ref, host.$ref, { live: 'true' })
      report.badAsync = { unexpectedSuccess: true }
    } catch (error) {
      report.badAsync = errorInfo(error)
    }
    step('badAsync')

    // callAsync destroys its tasks once settled: the `del` events empty the collection.
    const tasks = () => Object.values(xapi.objects.all).filter(o => o.$type === 'task')
    try {
      await waitFor(() => tasks().length === 0, 5e3)
    } catch {}
    report.tasksLeft = tasks().map(t => ({ name_label: t.name_label, status: t.status }))
  }
  report.watchEventsError = xapi.watchEventsError === undefined ? null : errorInfo(xapi.watchEventsError)
  report.lastEventFetched = xapi.lastEventFetchedTimestamp !== undefined
} catch (error) {
  report.error = errorInfo(error)
} finally {
  report.paths = paths
  await xapi.disconnect()
}
process.stdout.write(JSON.stringify(report) + '\n')
// The event loop keeps a long-poll pending; leave without waiting for it.
process.exit(0)
