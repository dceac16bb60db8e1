'use strict'
// Loaded into the gateway by the bench only (node --expose-gc --require this file); the
// gateway's code is unchanged. Two signals that close-with-grace does not use:
//   SIGWINCH  full garbage collection, so idle memory can be read at steady state
//   SIGURG    a heap snapshot into $BENCH_HEAP_DIR (bench --heap-snapshot)
const v8 = require('node:v8')
const path = require('node:path')

process.on('SIGWINCH', () => {
  if (typeof global.gc === 'function') {
    global.gc()
    global.gc()
  }
})

process.on('SIGURG', () => {
  const dir = process.env.BENCH_HEAP_DIR
  if (!dir) return
  if (typeof global.gc === 'function') global.gc()
  v8.writeHeapSnapshot(path.join(dir, `gateway-${process.pid}-${Date.now()}.heapsnapshot`))
  process.stderr.write('heap snapshot written\n')
})
