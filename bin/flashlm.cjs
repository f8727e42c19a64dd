#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/ (built by `npm run build`, which `npm install` runs via `prepare`).
//
// CommonJS on purpose: libuv sizes its threadpool from UV_THREADPOOL_SIZE when the pool first runs
// work, and Node's ESM loader reads modules through that pool, so an ES-module launcher would set
// the variable too late (4 threads). CommonJS loads synchronously: the pool does not exist yet here.
// Flash reads are one fs.read each, run on the pool: 64 threads = 64 reads really in flight. We use
// the pool rather than io_uring (UV_USE_IO_URING=1, still honoured) because libuv's io_uring is an
// SQPOLL ring whose kernel thread spins on one of the two cores the kernels want (CodeLlama-13B at a
// 50% budget: hybrid 0.208 → 0.275 and sparse 0.169 → 0.192 tokens/s, README "I/O path").
process.env.UV_THREADPOOL_SIZE ??= '64';
// `flashlm inspect big.gguf | head` closes stdout early: stop quietly, as Unix tools do.
process.stdout.on('error', (e) => { if (e.code === 'EPIPE') process.exit(0); else throw e; });
import('../dist/src/cli/main.js').then(({ main }) => main(process.argv.slice(2))).then(
  (code) => { process.exitCode = code; },
  (e) => { console.error(e); process.exitCode = 1; },
);
