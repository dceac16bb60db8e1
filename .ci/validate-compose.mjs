#!/usr/bin/env node
// Validates the compose files against the Compose Specification's JSON schema
// (vendored as deploy/compose-spec.json, since CI has no network) plus the
// cross-references the schema cannot see but `docker compose up` would trip on.
// Runs in seconds, before .ci/compose-e2e.sh brings the stacks up for real, so a typo
// fails the build with a line number instead of a compose stack trace.
//
//   node .ci/validate-compose.mjs [file.yml ...]   (default: both compose files)
//
// Exit 0 when every file is valid, 1 with one line per problem otherwise.
import { existsSync, readFileSync, statSync } from 'node:fs'
import { dirname, isAbsolute, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { spawnSync } from 'node:child_process'
import Ajv from 'ajv'
import addFormats from 'ajv-formats'
import { LineCounter, parseDocument } from 'yaml'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const defaultFiles = ['docker-compose.yml', 'docker-compose.cluster.yml']
const files = (process.argv.length > 2 ? process.argv.slice(2) : defaultFiles).map(f => resolve(process.cwd(), f))

const schema = JSON.parse(readFileSync(join(root, 'deploy/compose-spec.json'), 'utf8'))
// The spec names its meta-schema by an https URL Ajv does not ship; the schema
// itself is plain draft-07, which is Ajv's default dialect.
delete schema.$schema
// strict off: the spec uses annotation keywords (e.g. "deprecated") that
// draft-07 does not define. verbose keeps parentSchema for "did you mean".
const ajv = new Ajv({ allErrors: true, strict: false, verbose: true })
addFormats(ajv)
const validateSchema = ajv.compile(schema)

// Compose's own YAML tags; `!reset` removes an inherited value (e.g. after `<<`).
const RESET = Symbol('reset')
const customTags = [
  { tag: '!reset', resolve: () => RESET },
  { tag: '!override', resolve: (v) => v },
  { tag: '!reset', collection: 'map', resolve: () => RESET },
  { tag: '!reset', collection: 'seq', resolve: () => RESET },
  { tag: '!override', collection: 'map', resolve: (v) => v },
  { tag: '!override', collection: 'seq', resolve: (v) => v }
]

function dropResets (value) {
  if (Array.isArray(value)) return value.filter(v => v !== RESET).map(dropResets)
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (v === RESET) delete value[k]
      else value[k] = dropResets(v)
    }
  }
  return value
}

const pathText = (segs) => segs.length === 0 ? '(top level)' : segs.join('.')
const pointerToPath = (ptr) => ptr === '' ? [] : ptr.slice(1).split('/').map(s => s.replace(/~1/g, '/').replace(/~0/g, '~'))

function levenshtein (a, b) {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)])
  for (let j = 1; j <= b.length; j++) d[0][j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
  }
  return d[a.length][b.length]
}

function suggest (word, candidates) {
  let best = null
  for (const c of candidates) {
    const dist = levenshtein(word.toLowerCase(), c.toLowerCase())
    if (dist <= Math.max(2, Math.floor(c.length / 4)) && (!best || dist < best.dist)) best = { c, dist }
  }
  return best ? ` (did you mean "${best.c}"?)` : ''
}

const typeOf = (v) => v === null ? 'null' : Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v
const branchAccepts = (branch, value) => {
  if (!branch || branch.type === undefined) return true
  const types = [].concat(branch.type)
  const t = typeOf(value)
  return types.includes(t) || (t === 'integer' && types.includes('number'))
}

// Ajv reports every failed branch of a oneOf. Keep what explains the mistake:
// errors from branches whose type fits the value, and the most specific paths.
function explainSchemaErrors (errors, data) {
  const valueAt = (segs) => segs.reduce((v, k) => (v == null ? undefined : v[k]), data)
  const under = (o, e) => o.instancePath === e.instancePath || o.instancePath.startsWith(e.instancePath + '/')
  const kept = errors.filter(e => {
    if (e.keyword === 'oneOf' || e.keyword === 'anyOf') {
      return !errors.some(o => o !== e && o.keyword !== 'oneOf' && o.keyword !== 'anyOf' && o.keyword !== 'type' &&
        under(o, e))
    }
    if (e.keyword === 'type') {
      // Type errors from oneOf branches the value was never meant for: either a
      // fitting branch has a more specific error, or the oneOf line explains it.
      if (errors.some(o => o !== e && o.keyword !== 'type' && o.keyword !== 'oneOf' && o.keyword !== 'anyOf' &&
        under(o, e))) return false
      if (errors.some(o => (o.keyword === 'oneOf' || o.keyword === 'anyOf') && o.instancePath === e.instancePath)) return false
    }
    return true
  })
  const out = new Map()
  for (const e of kept) {
    const segs = pointerToPath(e.instancePath)
    let msg
    switch (e.keyword) {
      case 'additionalProperties': {
        const key = e.params.additionalProperty
        const known = Object.keys(e.parentSchema?.properties ?? {})
        const what = segs.length === 0 ? 'top-level key' : segs[0] === 'services' && segs.length === 2 ? 'service key' : 'key'
        msg = `unknown ${what} "${key}"${suggest(key, known)}`
        segs.push(key)
        break
      }
      case 'oneOf': {
        const branches = e.schema ?? []
        const fitting = branches.filter(b => branchAccepts(b, valueAt(segs)))
        msg = fitting.length === 0
          ? `must be ${branches.map(b => [].concat(b.type ?? 'object').join(' or ')).join(', or ')}, got ${typeOf(valueAt(segs))}`
          : 'does not match any allowed form'
        break
      }
      case 'enum': msg = `must be one of ${e.params.allowedValues.map(v => JSON.stringify(v)).join(', ')}, got ${JSON.stringify(e.data)}`; break
      case 'type': msg = `must be ${[].concat(e.params.type).join(' or ')}, got ${typeOf(e.data)}`; break
      case 'required': msg = `missing required key "${e.params.missingProperty}"`; break
      case 'uniqueItems': msg = `has duplicate entries (items ${e.params.j} and ${e.params.i})`; break
      case 'pattern': msg = `${JSON.stringify(e.data)} does not match ${e.params.pattern}`; break
      default: msg = e.message
    }
    out.set(`${segs.join('\0')}|${msg}`, { segs, msg })
  }
  return [...out.values()]
}

// Compose interpolates ${VAR}, ${VAR:-default}, $VAR ... in every value before
// anything else; `$$` is a literal `$`. A bad template fails `docker compose up`,
// and a shell variable written `$x` instead of `$$x` is silently replaced by "".
function checkInterpolation (str) {
  const problems = []
  const name = /^[_a-zA-Z][_a-zA-Z0-9]*/
  const clip = (v) => v.length > 60 ? `${v.slice(0, 57)}...` : v
  const scan = (s) => {
    let i = 0
    while (i < s.length) {
      if (s[i] !== '$') { i++; continue }
      const rest = s.slice(i + 1)
      if (rest[0] === '$') { i += 2; continue }
      const named = name.exec(rest)
      if (named) {
        if (/[a-z]/.test(named[0])) {
          problems.push(`"$${named[0]}" would be replaced by compose (probably meant for the shell: write "$$${named[0]}")`)
        }
        i += 1 + named[0].length
        continue
      }
      if (rest[0] === '{') {
        let depth = 1; let j = 1
        for (; j < rest.length && depth > 0; j++) {
          if (rest[j] === '$' && rest[j + 1] === '$') { j++; continue }
          if (rest[j] === '{') depth++
          else if (rest[j] === '}') depth--
        }
        if (depth !== 0) { problems.push(`unterminated "\${" in ${JSON.stringify(clip(str))}`); return }
        const body = rest.slice(1, j - 1)
        const m = /^([_a-zA-Z][_a-zA-Z0-9]*)(?:(:?[-?+])([\s\S]*))?$/.exec(body)
        if (!m) problems.push(`invalid interpolation "\${${body}}"`)
        else if (m[3]) scan(m[3])
        i += 1 + j
        continue
      }
      problems.push(`lone "$" in ${JSON.stringify(clip(str))} (write "$$" for a literal dollar)`)
      i++
    }
  }
  scan(str)
  return problems
}

function walkStrings (value, segs, visit) {
  if (typeof value === 'string') visit(value, segs)
  else if (Array.isArray(value)) value.forEach((v, i) => walkStrings(v, [...segs, String(i)], visit))
  else if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) walkStrings(v, [...segs, k], visit)
}

const hasInterpolation = (s) => /\$(?!\$)/.test(s.replace(/\$\$/g, ''))

// Checks `docker compose config` would make: references between services,
// networks and volumes, and the host paths the stack mounts or builds from.
function checkReferences (cfg, baseDir) {
  const problems = []
  const add = (segs, msg) => problems.push({ segs, msg })
  const services = cfg.services && typeof cfg.services === 'object' ? cfg.services : {}
  const serviceNames = Object.keys(services)
  const volumeNames = Object.keys(cfg.volumes && typeof cfg.volumes === 'object' ? cfg.volumes : {})
  const networkNames = ['default', ...Object.keys(cfg.networks && typeof cfg.networks === 'object' ? cfg.networks : {})]
  const pathExists = (p) => existsSync(isAbsolute(p) ? p : join(baseDir, p))
  const published = new Map()
  // The schema has already reported wrong shapes; here they are just skipped.
  const asMap = (v) => (v && typeof v === 'object' && !Array.isArray(v) ? v : {})
  const asList = (v) => (Array.isArray(v) ? v : [])

  for (const [name, svc] of Object.entries(services)) {
    if (!svc || typeof svc !== 'object') continue
    const at = (...rest) => ['services', name, ...rest]
    if (svc.image === undefined && svc.build === undefined && svc.extends === undefined && svc.provider === undefined) {
      add(at(), 'has neither "image" nor "build"')
    }

    const deps = Array.isArray(svc.depends_on) ? svc.depends_on : Object.keys(asMap(svc.depends_on))
    for (const dep of deps) {
      if (!serviceNames.includes(dep)) add(at('depends_on', dep), `depends on unknown service "${dep}"${suggest(dep, serviceNames)}`)
      if (dep === name) add(at('depends_on', dep), 'depends on itself')
    }

    const nets = Array.isArray(svc.networks) ? svc.networks : Object.keys(asMap(svc.networks))
    for (const net of nets) {
      if (!networkNames.includes(net)) add(at('networks', net), `uses undeclared network "${net}"${suggest(net, networkNames)}`)
    }

    if (svc.build !== undefined) {
      const build = typeof svc.build === 'string' ? { context: svc.build } : asMap(svc.build)
      const ctx = build.context ?? '.'
      if (typeof ctx === 'string' && !hasInterpolation(ctx) && !/^[a-z]+:\/\//i.test(ctx)) {
        if (!pathExists(ctx)) add(at('build', 'context'), `build context "${ctx}" does not exist`)
        else if (build.dockerfile_inline === undefined) {
          const df = build.dockerfile ?? 'Dockerfile'
          const dfPath = typeof df !== 'string' ? '' : isAbsolute(df) ? df : join(isAbsolute(ctx) ? ctx : join(baseDir, ctx), df)
          if (typeof df === 'string' && !hasInterpolation(df) && !existsSync(dfPath)) add(at('build', 'dockerfile'), `Dockerfile "${relative(baseDir, dfPath)}" does not exist`)
        }
      }
    }

    for (const [i, vol] of asList(svc.volumes).entries()) {
      let source, type
      if (typeof vol === 'string') {
        const parts = vol.split(':')
        if (parts.length === 1) continue // anonymous volume
        source = parts[0]
        type = /^[./~]/.test(source) || isAbsolute(source) ? 'bind' : 'volume'
      } else if (vol && typeof vol === 'object') {
        source = vol.source
        type = vol.type
      }
      if (typeof source !== 'string' || hasInterpolation(source)) continue
      if (type === 'bind') {
        const createsHostPath = typeof vol === 'object' && vol.bind?.create_host_path === true
        if (!source.startsWith('~') && !pathExists(source) && !createsHostPath) {
          add(at('volumes', String(i)), `bind mount source "${source}" does not exist`)
        }
      } else if (type === 'volume' && !volumeNames.includes(source)) {
        add(at('volumes', String(i)), `named volume "${source}" is not declared under top-level "volumes"${suggest(source, volumeNames)}`)
      }
    }

    for (const ef of [].concat(svc.env_file ?? [])) {
      const p = typeof ef === 'string' ? ef : ef?.path
      const required = typeof ef === 'string' ? true : ef?.required !== false
      if (typeof p === 'string' && required && !hasInterpolation(p) && !pathExists(p)) add(at('env_file'), `env_file "${p}" does not exist`)
    }

    for (const [i, port] of asList(svc.ports).entries()) {
      let key = null
      if (typeof port === 'string' && !hasInterpolation(port)) {
        const [spec, proto = 'tcp'] = port.split('/')
        const parts = spec.split(':')
        if (parts.length >= 2 && /^\d+$/.test(parts[parts.length - 2])) {
          key = `${parts.length === 3 ? parts[0] : '0.0.0.0'}:${parts[parts.length - 2]}/${proto}`
        }
      } else if (port && typeof port === 'object' && port.published !== undefined && /^\d+$/.test(String(port.published))) {
        key = `${port.host_ip ?? '0.0.0.0'}:${port.published}/${port.protocol ?? 'tcp'}`
      }
      if (!key) continue
      if (published.has(key)) add(at('ports', String(i)), `host port ${key} is already published by service "${published.get(key)}"`)
      else published.set(key, name)
    }
  }
  return problems
}

function locate (doc, lineCounter, segs) {
  // Paths inside a `<<` merge have no node of their own; point at the nearest
  // ancestor that does.
  for (let n = segs.length; n >= 0; n--) {
    const node = doc.getIn(segs.slice(0, n).map(s => (/^\d+$/.test(s) ? Number(s) : s)), true)
    const pair = n > 0 ? findKeyNode(doc, segs.slice(0, n)) : null
    const range = pair?.range ?? node?.range
    if (range) {
      const { line, col } = lineCounter.linePos(range[0])
      return `${line}:${col}`
    }
  }
  return '1:1'
}

function findKeyNode (doc, segs) {
  const parent = segs.length === 1 ? doc.contents : doc.getIn(segs.slice(0, -1).map(s => (/^\d+$/.test(s) ? Number(s) : s)), true)
  const items = parent?.items
  if (!Array.isArray(items)) return null
  const last = segs[segs.length - 1]
  const pair = items.find(p => p && p.key !== undefined && String(p.key?.value ?? p.key) === last)
  return pair?.key ?? null
}

function validateFile (file) {
  const shown = relative(process.cwd(), file) || file
  const problems = []
  if (!existsSync(file) || !statSync(file).isFile()) return [`${shown}: file not found`]

  const src = readFileSync(file, 'utf8')
  const lineCounter = new LineCounter()
  const doc = parseDocument(src, { merge: true, uniqueKeys: true, prettyErrors: false, lineCounter, customTags })
  for (const e of [...doc.errors, ...doc.warnings]) {
    const pos = e.pos ? lineCounter.linePos(e.pos[0]) : null
    problems.push(`${shown}:${pos ? `${pos.line}:${pos.col}` : '?'} YAML: ${e.message.split('\n')[0]}`)
  }
  if (doc.errors.length > 0) return problems

  const cfg = dropResets(doc.toJS({ maxAliasCount: -1 }))
  if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) return [`${shown}: not a mapping of compose keys`]
  const report = ({ segs, msg }) => problems.push(`${shown}:${locate(doc, lineCounter, segs)} ${pathText(segs)}: ${msg}`)

  if (!validateSchema(cfg)) explainSchemaErrors(validateSchema.errors, cfg).forEach(report)
  if (cfg.services === undefined) report({ segs: [], msg: 'no "services" defined' })

  const seen = new Set()
  walkStrings(cfg, [], (str, segs) => {
    for (const msg of checkInterpolation(str)) {
      const k = `${msg}|${str}`
      if (seen.has(k)) continue
      seen.add(k)
      report({ segs, msg })
    }
  })

  checkReferences(cfg, dirname(file)).forEach(report)
  return problems
}

// Where the compose CLI exists (not in CI here), let it have the last word too.
function dockerComposeConfig (file) {
  const probe = spawnSync('docker', ['compose', 'version'], { stdio: 'ignore' })
  if (probe.status !== 0) return []
  const r = spawnSync('docker', ['compose', '-f', file, 'config', '--quiet'], { encoding: 'utf8', cwd: dirname(file) })
  return r.status === 0 ? [] : [`${relative(process.cwd(), file)}: docker compose config: ${(r.stderr || r.stdout).trim()}`]
}

let failed = 0
for (const file of files) {
  const problems = validateFile(file)
  if (problems.length === 0) problems.push(...dockerComposeConfig(file))
  const shown = relative(process.cwd(), file) || file
  if (problems.length === 0) {
    console.log(`ok   ${shown}`)
  } else {
    failed++
    console.error(`FAIL ${shown}`)
    for (const p of problems) console.error(`  ${p}`)
  }
}
if (failed > 0) {
  console.error(`compose validation failed: ${failed} of ${files.length} file(s) invalid`)
  process.exit(1)
}
console.log(`compose validation: ${files.length} file(s) valid against the Compose Specification`)
