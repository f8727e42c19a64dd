// Kernel worker thread: waits on the control block, runs its share of each dispatched op
// against the arena's shared memory, reports completion (and errors) through the control block.
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import {
  instantiate, runShare, writeError, type KernelExports,
  W_SEQ, W_DONE, W_ERRS, W_OP, W_ARENA, W_DEAD, OP_EXIT, PARAM_BYTE, ERR_BYTE,
} from './exec.js';

interface Init { module: WebAssembly.Module; ctl: SharedArrayBuffer; port: MessagePort; t: number; T: number; spin: number }
const { module, ctl: sab, port, t, T, spin } = workerData as Init;
const ctl = new Int32Array(sab);
const params = new Float64Array(sab, PARAM_BYTE, (ERR_BYTE - PARAM_BYTE) / 8);
const arenas = new Map<number, KernelExports>();

process.on('exit', () => {
  Atomics.add(ctl, W_DEAD, 1);
  Atomics.notify(ctl, W_DONE);
});

function arena(index: number): KernelExports {
  let k = arenas.get(index);
  for (let tries = 0; !k; tries++) {
    const m = receiveMessageOnPort(port);
    if (m) {
      const { index: i, memory } = m.message as { index: number; memory: WebAssembly.Memory };
      arenas.set(i, instantiate(module, memory));
      k = arenas.get(index);
    } else if (tries > 1000) {
      throw new Error(`kernel worker ${t}: arena ${index} was never registered`);
    } else {
      Atomics.wait(ctl, W_DEAD + 1, 0, 1); // ~1 ms pause (word 7 stays 0)
    }
  }
  return k;
}

// read the generation before announcing readiness: the caller may dispatch right after 'ready'
let seen = Atomics.load(ctl, W_SEQ);
parentPort!.postMessage('ready');
for (;;) {
  let s = Atomics.load(ctl, W_SEQ);
  for (let i = 0; s === seen && i < spin; i++) s = Atomics.load(ctl, W_SEQ);
  while (s === seen) {
    Atomics.wait(ctl, W_SEQ, seen);
    s = Atomics.load(ctl, W_SEQ);
  }
  seen = s;
  if (ctl[W_OP] === OP_EXIT) break;
  try {
    runShare(ctl, params, arena(ctl[W_ARENA]), t, T);
  } catch (e) {
    writeError(ctl, t, e);
    Atomics.add(ctl, W_ERRS, 1);
  }
  Atomics.add(ctl, W_DONE, 1);
  Atomics.notify(ctl, W_DONE);
}
