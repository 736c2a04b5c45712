// Cross-pool Storage XenMotion the way XO drives it, with two real `xen-api` clients:
// host.migrate_receive on the destination pool, VM.assert_can_migrate then
// callAsync('VM.migrate_send', …) on the source pool, and both collections updated by events.
//
//   node xen_api_cross_pool.mjs '{"transport":"auto",
//     "source":{"url":"http://127.0.1.1:PORT","user":"root","password":"…"},
//     "target":{"url":"http://127.0.2.2:PORT", …},       // a pool member: HOST_IS_SLAVE redirect
//     "vm":"<uuid>","host":"<uuid>","sr":"<uuid>","network":"<uuid>"}'
//
// Prints one JSON document on stdout (failures included); exit code 1 only on a crash.
import { CancelToken } from 'promise-toolbox'
import { createClient } from 'xen-api'

const opts = JSON.parse(process.argv[2])
const report = { steps: [] }
const step = name => report.steps.push(name)

function errorInfo(error) {
  return {
    name: error?.constructor?.name,
    code: error?.code,
    params: error?.params,
    message: String(error?.message ?? error),
  }
}

async function waitFor(predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for a condition')
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

const client = ({ url, user, password }) =>
  createClient({
    url,
    auth: { user, password },
    allowUnauthorized: true,
    transport: opts.transport ?? 'auto',
    debounce: 20,
  })

const source = client(opts.source)
const target = client(opts.target)
try {
  await Promise.all([source.connect(), target.connect()])
  // The target URL named a pool member: login answered HOST_IS_SLAVE and the client moved on.
  report.targetHostname = target._url.hostname
  step('connected')
  await Promise.all([source.objectsFetched, target.objectsFetched])
  step('objectsFetched')

  const vm = source.getObjectByUuid(opts.vm)
  const host = target.getObjectByUuid(opts.host)
  const sr = target.getObjectByUuid(opts.sr)
  const network = target.getObjectByUuid(opts.network)

  // Every disk to `sr`, every VIF to `network`, as XO's defaults would map them.
  const maps = vm => {
    const vdiMap = {}
    const vdis = []
    for (const vbd of vm.$VBDs) {
      if (vbd.type === 'Disk' && vbd.VDI !== 'OpaqueRef:NULL') {
        vdiMap[vbd.VDI] = sr.$ref
        vdis.push(vbd.$VDI.uuid)
      }
    }
    const vifMap = {}
    for (const vif of vm.VIFs) vifMap[vif] = network.$ref
    return { vdiMap, vifMap, vdis }
  }

  const dest = await target.call('host.migrate_receive', host.$ref, network.$ref, {})
  report.destKeys = Object.keys(dest).sort()
  step('migrate_receive')

  const { vdiMap, vifMap, vdis: sourceVdis } = maps(vm)
  report.sourceVdis = sourceVdis

  // XO's argument lists: 6 params after the session (vgpu_map left to its default).
  report.assertResult = await source.call('VM.assert_can_migrate', vm.$ref, dest, true, vdiMap, vifMap, {})
  step('assert_can_migrate')
  report.migrateResult = await source.callAsync('VM.migrate_send', vm.$ref, dest, true, vdiMap, vifMap, {})
  step('migrate_send')

  // The VM leaves the source pool's collection and arrives in the target pool's.
  await waitFor(() => source.getObjectByUuid(opts.vm, undefined) === undefined, 10e3)
  await waitFor(() => target.getObjectByUuid(opts.vm, undefined)?.resident_on === host.$ref, 10e3)
  const arrived = target.getObjectByUuid(opts.vm)
  report.arrived = {
    $ref: arrived.$ref,
    power_state: arrived.power_state,
    resident_on: arrived.resident_on,
    vdis: arrived.$VBDs.filter(vbd => vbd.type === 'Disk').map(vbd => ({ uuid: vbd.$VDI.uuid, sr: vbd.$VDI.$SR.uuid })),
    networks: arrived.$VIFs.map(vif => vif.$network.uuid),
  }
  step('seenMoved')

  if (opts.cancelVm !== undefined) {
    // Cancel a running migrate_send through callAsync's cancel token (task.cancel): the
    // client sees the task end `cancelled` and the VM stays where it was.
    const other = source.getObjectByUuid(opts.cancelVm)
    const residentOn = other.resident_on
    const dest2 = await target.call('host.migrate_receive', host.$ref, network.$ref, {})
    const m = maps(other)
    const { cancel, token } = CancelToken.source()
    const pending = source.callAsync(token, 'VM.migrate_send', other.$ref, dest2, true, m.vdiMap, m.vifMap, {})
    pending.catch(() => {})
    const running = () =>
      Object.values(source.objects.all).find(
        o => o.$type === 'task' && o.name_label === 'Async.VM.migrate_send' && o.status === 'pending' && o.progress > 0
      )
    await waitFor(() => running() !== undefined, 10e3)
    report.cancel = { progressSeen: running().progress }
    cancel()
    try {
      report.cancel.unexpectedResult = await pending
    } catch (error) {
      report.cancel.error = errorInfo(error)
    }
    const after = source.getObjectByUuid(opts.cancelVm, undefined)
    report.cancel.after = after && { resident_on: after.resident_on, power_state: after.power_state }
    report.cancel.residentBefore = residentOn
    report.cancel.inTarget = target.getObjectByUuid(opts.cancelVm, undefined) !== undefined
    step('cancelled')
  }
  report.errors = [source, target].map(x => (x.watchEventsError === undefined ? null : errorInfo(x.watchEventsError)))
} catch (error) {
  report.error = errorInfo(error)
  report.error.stack = error?.stack
} finally {
  await Promise.allSettled([source.disconnect(), target.disconnect()])
}
process.stdout.write(JSON.stringify(report) + '\n')
process.exit(0)
