// CLI pieces for the flash layout: `flashlm verify MODEL` and the inspect lines. (main.ts wires them.)
import { describeMismatch, verifyModel } from '../formats/checksum.js';
import { describeFlashLayout, openFlashLayout } from '../formats/flash-layout.js';
import { readGGUF, type GGUFFile } from '../formats/gguf.js';
import { describePredictors } from '../formats/predictors.js';
import { describePlacement } from '../formats/placement.js';
import { fmtBytes, Progress } from './progress.js';
import { parse, UsageError } from './main.js';

export { describeFlashLayout };

/** `flashlm verify MODEL [--json]`: re-hashes every tensor and bundle block; exit 1 on any mismatch. */
export async function cmdVerify(argv: string[]): Promise<number> {
  const { flags, positionals } = parse(argv, { json: { type: 'boolean' } });
  if (flags.help) {
    process.stdout.write('usage: flashlm verify MODEL [--json]   (MODEL: a GGUF written by convert --layout flash)\n');
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('verify needs exactly one MODEL');
  const path = positionals[0]!;
  openFlashLayout(readGGUF(path)); // layout keys first: a bad key is a FormatError naming it
  const bar = new Progress('verifying', process.stderr, !flags.json);
  const t0 = performance.now();
  const r = verifyModel(path, (d, t) => bar.update(d, t));
  bar.finish();
  const secs = (performance.now() - t0) / 1000;
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ path, ok: r.ok, tensors: r.tensorsChecked, blocks: r.blocksChecked, bytes: r.bytesChecked, seconds: secs, mismatches: r.mismatches })}\n`);
    return r.ok ? 0 : 1;
  }
  const what = `${r.tensorsChecked} tensors and ${r.blocksChecked} bundle blocks, ${fmtBytes(r.bytesChecked)} in ${secs.toFixed(1)} s`;
  if (r.ok) {
    process.stdout.write(`OK ${path}: ${what}\n`);
    return 0;
  }
  for (const m of r.mismatches) process.stderr.write(`  ${describeMismatch(m)}\n`);
  process.stdout.write(`FAILED ${path}: ${r.mismatches.length} checksum mismatch${r.mismatches.length === 1 ? '' : 'es'} ` +
    `(first: ${describeMismatch(r.mismatches[0]!)}); ${what} — the file was modified or corrupted after conversion, convert it again\n`);
  return 1;
}

/** Lines `flashlm inspect` prints for a flash-layout GGUF ([] for any other file): the layout, then
 * the sparsity thresholds / predictors when `flashlm sparsify` added them. */
export function flashInspectLines(path: string | GGUFFile): string[] {
  const f = typeof path === 'string' ? readGGUF(path) : path;
  const lines = describeFlashLayout(f);
  return lines.length ? [...lines, ...describePlacement(f.metadata), ...describePredictors(f)] : lines;
}
