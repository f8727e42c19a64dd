// A fault-injecting stand-in for fs.read (DirectReader's `readFn` seam), shared by the engine and
// server fault tests (issue 7 item 2). Every call really reads the file, unless a fault answers it:
//   - an errno (EIO, EINTR, EAGAIN, ...) delivered asynchronously, as libuv would;
//   - a short read: the real read happens, then the reported count is cut and the bytes past it are
//     overwritten with 0xA5, so a reader that trusted them would compute garbage;
//   - O_DIRECT refused: EINVAL for every read on a descriptor opened with O_DIRECT (flags read from
//     /proc/self/fdinfo), as on a filesystem that accepts the flag at open and refuses the reads;
//   - a slow read: the real read starts after a delay, so a test can keep one read in flight while
//     another fails (does the error wait for it, or escape while it still writes into memory?).
// It records every call (position, length) and counts calls whose callback has not run yet, so a
// test can check that no read is still in flight when an error reaches the caller.
import * as fs from 'node:fs';
import type { ReadFn } from '../../src/flash/io.js';

export interface ReadCall {
  pos: number;
  len: number;
}

/** What to do with one call: nothing (undefined), fail with an errno, cut it short to n bytes, or
 * start the real read after `delayMs`. */
export type Fault = { errno: string } | { short: number } | { delayMs: number } | undefined;

export function errnoError(code: string): NodeJS.ErrnoException {
  const e = new Error(`${code}: injected fault, read`) as NodeJS.ErrnoException;
  e.code = code;
  return e;
}

function isDirectFd(fd: number): boolean {
  try {
    const m = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    return !!m && (parseInt(m[1]!, 8) & fs.constants.O_DIRECT) !== 0;
  } catch {
    return false;
  }
}

export class FaultyDisk {
  /** Every call, in the order DirectReader issued them. */
  readonly calls: ReadCall[] = [];
  /** Calls whose callback has not been delivered yet. */
  outstanding = 0;
  /** Faults delivered, by errno or 'short'. */
  readonly injected = new Map<string, number>();
  /** The calls failed with an errno since the last arm() (position and length as DirectReader asked). */
  readonly failed: (ReadCall & { code: string })[] = [];
  /** EINVAL for reads on O_DIRECT descriptors. */
  refuseDirect = false;
  /** Decides each call's fault: `i` counts calls since the last arm(). */
  private rule: ((i: number, c: ReadCall) => Fault) | undefined;
  private base = 0;

  /** Faults from now on (call indices restart at 0); undefined disarms. */
  arm(rule: ((i: number, c: ReadCall) => Fault) | undefined): void {
    this.rule = rule;
    this.base = this.calls.length;
    this.failed.length = 0;
  }

  /** Resolves once no call is outstanding (DirectReader issues queued reads from completions, in
   * microtasks: a macrotask turn with nothing outstanding means nothing more is coming). */
  async quiet(): Promise<void> {
    while (this.outstanding > 0) await new Promise((r) => setImmediate(r));
  }

  /** Calls since the last arm(). */
  get sinceArm(): ReadCall[] {
    return this.calls.slice(this.base);
  }

  count(kind: string): number {
    return this.injected.get(kind) ?? 0;
  }

  private note(kind: string): void {
    this.injected.set(kind, this.count(kind) + 1);
  }

  readonly readFn: ReadFn = (fd, buf, off, len, pos, cb) => {
    const c = { pos, len };
    const i = this.calls.length - this.base;
    this.calls.push(c);
    this.outstanding++;
    const deliver = (e: NodeJS.ErrnoException | null, n: number) => {
      this.outstanding--;
      cb(e, n);
    };
    const fail = (code: string) => {
      this.note(code);
      this.failed.push({ ...c, code });
      setImmediate(() => deliver(errnoError(code), 0));
    };
    if (this.refuseDirect && isDirectFd(fd)) return fail('EINVAL');
    const f = this.rule?.(i, c);
    if (f && 'errno' in f) return fail(f.errno);
    const real = (): void => fs.read(fd, buf, off, len, pos, (e, n) => {
      if (!e && f && 'short' in f && f.short < n) {
        this.note('short');
        buf.fill(0xa5, off + f.short, off + n);
        n = f.short;
      }
      deliver(e, n);
    });
    if (f && 'delayMs' in f) {
      this.note('delay');
      setTimeout(real, f.delayMs);
    } else real();
  };
}
