// Starts node processes with their open-file limit raised to the hard limit. Node cannot call
// setrlimit itself, so a /bin/sh wrapper runs `ulimit -n <hard>` and then execs node (same pid,
// the IPC channel of fork() survives the exec).

import { spawn } from 'node:child_process'

const WRAP = 'ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true; exec "$@"'

/**
 * spawnNode(script, { args, nodeArgs, env, ipc, stdio }) → ChildProcess
 * With ipc: true the child gets a fork()-style IPC channel (process.send / 'message').
 */
export function spawnNode (script, { args = [], nodeArgs = [], env = process.env, ipc = false, stdio = 'inherit', cwd } = {}) {
  const io = Array.isArray(stdio) ? stdio : [stdio === 'inherit' ? 'ignore' : stdio, stdio, stdio]
  return spawn('/bin/sh', ['-c', WRAP, 'sh', process.execPath, ...nodeArgs, script, ...args], {
    env,
    cwd,
    stdio: ipc ? [...io, 'ipc'] : io,
    ...(ipc ? { serialization: 'advanced' } : {})
  })
}
