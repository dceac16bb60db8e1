#!/usr/bin/env node
// Prints the results table of saved runs: node bench/report.mjs [FILE.json ...]
// (default: every bench/results/<scenario>-*.json). --update rewrites each file's derived
// fields (steady deliveries/s, targets) with the current evaluation.

import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { row, table, targets, steadyRate } from './lib/report.mjs'

const HERE = dirname(fileURLToPath(import.meta.url))
const ORDER = ['idle', 'connect', 'broadcast', 'per-user', 'publish', 'publish-x100', 'multi-idle', 'multi-broadcast', 'multi-per-user']
const args = process.argv.slice(2)
const update = args.includes('--update')
let files = args.filter(a => !a.startsWith('--'))
if (files.length === 0) {
  files = readdirSync(join(HERE, 'results'))
    .filter(f => f.endsWith('.json') && ORDER.some(s => f.startsWith(`${s}-`)))
    .map(f => join(HERE, 'results', f))
}
const results = files.map(f => ({ f, r: JSON.parse(readFileSync(f, 'utf8')) }))
for (const { f, r } of results) {
  if (r.delivery !== undefined && r.delivery.perSecondSteady === undefined) r.delivery.perSecondSteady = steadyRate(r.delivery, r.settings.durationS)
  r.targets = targets(r)
  if (update) writeFileSync(f, JSON.stringify(r, null, 2) + '\n')
}
results.sort((a, b) =>
  a.r.settings.connectionsPerInstance - b.r.settings.connectionsPerInstance ||
  ORDER.indexOf(a.r.scenario) - ORDER.indexOf(b.r.scenario) ||
  (a.r.rate ?? 0) - (b.r.rate ?? 0) ||
  (b.r.settings.batchWindowMs ?? 0) - (a.r.settings.batchWindowMs ?? 0) ||
  a.r.date.localeCompare(b.r.date))
process.stdout.write(table(results.map(({ f, r }) => ({ ...row(r), build: `${r.machine.commit ?? '?'} ${r.machine.gatewayBuildSha1 ?? ''}`.trim(), file: relative(HERE, f) }))) + '\n')
