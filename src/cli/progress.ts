// A progress bar on stderr for long work (load, convert). On a TTY it redraws one line; otherwise it
// prints a line every 10% so logs stay short.

const fmtBytes = (n: number): string => {
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) (n /= 1000), i++;
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
};
export { fmtBytes };

export class Progress {
  private readonly t0 = performance.now();
  private lastDraw = 0;
  private lastDecile = -1;
  private done = false;
  private readonly tty: boolean;

  constructor(private readonly label: string, private readonly stream: NodeJS.WriteStream = process.stderr, enabled = true,
    private readonly fmt: (n: number) => string = fmtBytes) {
    this.tty = enabled && !!stream.isTTY;
    if (!enabled) this.done = true;
  }

  update(done: number, total: number): void {
    if (this.done) return;
    // Short work needs no bar: start drawing only after half a second.
    if (performance.now() - this.t0 < 500) return;
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const now = performance.now();
    const secs = (now - this.t0) / 1000;
    const rate = done / Math.max(secs, 1e-3);
    const eta = rate > 0 ? (total - done) / rate : 0;
    const f = this.fmt;
    const text = `${this.label} ${(frac * 100).toFixed(0).padStart(3)}% ${f(done)}/${f(total)} ${f(rate)}/s eta ${eta.toFixed(0)}s`;
    if (this.tty) {
      if (now - this.lastDraw < 100 && frac < 1) return;
      this.lastDraw = now;
      const width = 24;
      const fill = Math.round(frac * width);
      this.stream.write(`\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${text}\x1b[K`);
    } else {
      const decile = Math.floor(frac * 10);
      if (decile === this.lastDecile) return;
      this.lastDecile = decile;
      this.stream.write(`${text}\n`);
    }
    if (frac >= 1) this.finish();
  }

  finish(): void {
    if (this.done) return;
    this.done = true;
    if (this.tty) this.stream.write('\n');
  }
}
