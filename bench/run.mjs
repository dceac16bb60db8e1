#!/usr/bin/env node
// sse-gateway load benchmarks. `npm run bench` (all scenarios at 1,000 connections, ~2 min),
// `npm run bench -- --help` for the options, bench/README.md for what each figure means.
// The orchestrator: it runs the plan, one module per scenario in bench/scenarios/.

import { mkdirSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { options, ALL, COMPARABLE } from './lib/options.mjs'
import { quiet } from './lib/measure.mjs'
import { row, table, describeRun } from './lib/report.mjs'
import { initMachineInfo, ensureBuilt, save } from './lib/results.mjs'
import { comparePair, compareTable } from './lib/compare.mjs'
import { BENCH, ROOT } from './lib/setup.mjs'
import { idle } from './scenarios/idle.mjs'
import { broadcast } from './scenarios/broadcast.mjs'
import { perUser } from './scenarios/per-user.mjs'
import { publish } from './scenarios/publish.mjs'
import { connect } from './scenarios/connect.mjs'
import { multi } from './scenarios/multi.mjs'
import { storm } from './scenarios/storm.mjs'

async function runOne (o, name) {
  const K = o.instances ?? 1
  const redis = o.redis || K > 1
  switch (name) {
    case 'idle': return [await idle(o, { instances: K, redis })]
    case 'broadcast': return [await broadcast(o, { instances: K, redis })]
    case 'per-user': return [await perUser(o, { instances: K, redis })]
    case 'publish': return await publish(o)
    case 'connect': return [await connect(o, { instances: K, redis })]
    case 'multi': return await multi(o)
    case 'storm': return [await storm(o)]
  }
  throw new Error(`unknown scenario ${name}`)
}

/** The issue's target configurations, one after the other. */
function targetPlan (o) {
  return [
    ['idle', { connections: 10000 }],
    ['connect', { connections: 10000 }],
    ['broadcast', { connections: 1000, rate: 10, batchMs: 100 }],
    ['broadcast', { connections: 1000, rate: 10, batchMs: 0 }],
    ['broadcast', { connections: 10000, rate: 10, batchMs: 100 }],
    ['broadcast', { connections: 10000, rate: 10, batchMs: 0 }],
    ['broadcast', { connections: 10000, rate: 50, batchMs: 100 }],
    ['per-user', { connections: 10000, rate: 10000, batchMs: 100 }],
    ['storm', { connections: 10000, rate: 1000, batchMs: 100 }],
    ['multi', { connections: 10000, batchMs: 100 }]
  ].map(([name, x]) => [name, { ...o, ...x }])
}

/** `--scenario compare`: the nchan comparison set (every one against both servers). */
function comparePlan (o) {
  return [
    ['idle', { connections: 10000 }],
    ['connect', { connections: 10000 }],
    ['broadcast', { connections: 1000, rate: 10 }],
    ['broadcast', { connections: 10000, rate: 10 }],
    ['per-user', { connections: 10000, rate: 10000 }]
  ].map(([name, x]) => [name, { ...o, ...x }])
}

async function main () {
  const o = options()
  ensureBuilt(o)
  const m = initMachineInfo(o)
  process.stdout.write(`sse-gateway bench: ${m.cores} cores (${m.cpuModel}), ${m.memoryGiB} GiB, Node ${m.node}, commit ${m.commit ?? '?'}, load average ${m.loadavg.join(' ')}\n`)
  const plan = o.scenario === 'targets'
    ? targetPlan(o)
    : o.scenario === 'compare'
      ? comparePlan(o)
      : (o.scenario === 'all' ? ALL : [o.scenario]).map(n => [n, o])
  const results = []
  const compared = []
  const started = Date.now()
  for (const [name, so] of plan) {
    if (name === 'multi' && o.urls !== null && o.urls.length < 2) {
      process.stdout.write('\nmulti: skipped (--url gives one gateway; pass two URLs)\n')
      continue
    }
    const servers = o.compare !== null && COMPARABLE.includes(name) ? ['gateway', 'nchan'] : ['gateway']
    const pair = []
    for (const server of servers) {
      const sso = { ...so, server }
      const batch = server === 'nchan' ? 'nchan' : `batch ${so.batchMs} ms`
      process.stdout.write(`\n== ${name} [${server}]: ${so.connections} connections${name === 'multi' ? ' per instance' : ''}, ${so.duration} s${so.rate ? `, rate ${so.rate}` : ''}, ${batch}\n`)
      let rs
      try {
        const q = await quiet(sso)
        if (q !== null && q.waitedS > 0) process.stdout.write(`  waited ${q.waitedS} s for a quiet machine\n`)
        rs = await runOne(sso, name)
      } catch (err) {
        process.stdout.write(`  FAILED: ${err.stack ?? err.message}\n`)
        if (o.scenario !== 'all' && o.scenario !== 'targets') process.exitCode = 1
        continue
      }
      for (const r of rs) {
        process.stdout.write(`${r.server === 'nchan' ? 'nchan ' : ''}${r.scenario}:\n${describeRun(r)}\n`)
        if (o.save) r.file = save(r)
        if (o.save) process.stdout.write(`  saved ${r.file}\n`)
        results.push(r)
      }
      pair.push(rs[0])
    }
    if (pair.length === 2) compared.push({ gateway: pair[0], nchan: pair[1], rows: comparePair(pair[0], pair[1]) })
  }
  if (results.length > 0) process.stdout.write(`\n${table(results.map(r => ({ server: r.server, ...row(r) })))}\n`)
  if (compared.length > 0) {
    const rows = compared.flatMap(c => c.rows)
    process.stdout.write(`\ngateway vs nginx + Nchan (same run, ${m.cores} cores, commit ${m.commit ?? '?'}):\n${compareTable(rows)}\n`)
    if (o.save) {
      const dir = join(BENCH, 'results')
      mkdirSync(dir, { recursive: true })
      const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
      const file = join(dir, `compare-nchan-${stamp}.json`)
      writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), command: `npm run bench -- ${process.argv.slice(2).join(' ')}`, machine: m, pairs: compared.map(c => ({ gateway: c.gateway.file, nchan: c.nchan.file, rows: c.rows })) }, null, 2) + '\n')
      process.stdout.write(`  saved ${relative(ROOT, file)}\n`)
    }
  }
  process.stdout.write(`\ndone in ${Math.round((Date.now() - started) / 1000)} s\n`)
}

main().then(() => process.exit(process.exitCode ?? 0), (err) => {
  process.stderr.write(`bench: ${err.stack ?? err.message}\n`)
  process.exit(1)
})
