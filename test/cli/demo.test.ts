// `flashlm demo` as on a fresh machine: an empty HOME (no FLASHLM_CACHE, no XDG_CACHE_HOME, so the
// default ~/.cache/flashlm), a working directory outside the repo, and no network (a preload makes
// every socket connect, DNS lookup and fetch throw). The first run generates the embedded model into
// the cache and runs it; the second finds it there and reuses it without rewriting it (same inode,
// mtime, ctime, bytes), and prints the same greedy tokens. FLASHLM_CACHE moves the cache.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { test, type TestContext } from 'node:test';
import { testDir } from '../helpers.js';

const BIN = fileURLToPath(new URL('../../../bin/flashlm.cjs', import.meta.url));
const PROMPT = 'The quick brown fox'; // the demo's default prompt

const OFFLINE = `
import net from 'node:net';
import dns from 'node:dns';
const no = (what) => () => { throw new Error('offline: ' + what + ' called'); };
net.Socket.prototype.connect = no('net.Socket.connect');
net.connect = no('net.connect');
net.createConnection = no('net.createConnection');
dns.lookup = no('dns.lookup');
dns.promises.lookup = no('dns.promises.lookup');
globalThis.fetch = no('fetch');
`;

interface Run { code: number; stdout: string; stderr: string }

function setup(t: TestContext, name: string) {
  const root = testDir(name);
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const home = join(root, 'home');
  const cwd = join(root, 'cwd');
  mkdirSync(home, { recursive: true });
  mkdirSync(cwd, { recursive: true });
  const preload = join(root, 'offline.mjs');
  writeFileSync(preload, OFFLINE);
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
  delete env.FLASHLM_CACHE;
  delete env.XDG_CACHE_HOME;
  const node = (args: string[], extraEnv: NodeJS.ProcessEnv = {}): Run => {
    const r = spawnSync(process.execPath, ['--import', pathToFileURL(preload).href, ...args], { cwd, env: { ...env, ...extraEnv }, encoding: 'utf8', timeout: 120_000 });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  return { root, home, node, demo: (args: string[] = [], extraEnv: NodeJS.ProcessEnv = {}) => node([BIN, 'demo', ...args], extraEnv) };
}

function fileId(path: string) {
  const s = statSync(path, { bigint: true });
  return { ino: s.ino, size: s.size, mtime: s.mtimeNs, ctime: s.ctimeNs, sha256: createHash('sha256').update(readFileSync(path)).digest('hex') };
}

/** The demo's report on stderr: model line, token ids, tokens/s. */
function report(r: Run): { model: string; how: string; ids: number[]; tps: number } {
  const m = /^demo model: (.+) \((generated in \d+ ms|cached)\)$/m.exec(r.stderr);
  assert.ok(m, `demo model line in:\n${r.stderr}`);
  assert.match(r.stderr, /what the engine did:/);
  assert.match(r.stderr, /loaded [\d.]+ [KMG]?B of weights into \d+ WebAssembly arena/);
  const ids = /^ {2}token ids: ([\d,]+)$/m.exec(r.stderr);
  assert.ok(ids, `token ids line in:\n${r.stderr}`);
  const tps = /(\d+) prompt tokens, then (\d+) tokens greedily at ([\d.]+) tokens\/s/.exec(r.stderr);
  assert.ok(tps, `stats line in:\n${r.stderr}`);
  const list = ids[1]!.split(',').map(Number);
  assert.equal(Number(tps[2]), list.length);
  return { model: m[1]!, how: m[2]!, ids: list, tps: Number(tps[3]) };
}

test('the offline preload does block the network (so the demo runs below are offline)', (t) => {
  const { node } = setup(t, 'demo-offline-check');
  const r = node(['-e', "require('node:net').connect(9, '127.0.0.1')"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /offline: net\.connect called/);
  const f = node(['-e', "fetch('http://127.0.0.1:9/').then(() => process.exit(0), (e) => { console.error(String(e)); process.exit(3); })"]);
  assert.notEqual(f.code, 0);
  assert.match(f.stderr, /offline: fetch called/);
});

test('demo on a fresh HOME: generates and caches the model, then reuses it unchanged', (t) => {
  const { home, demo } = setup(t, 'demo-fresh');
  const cache = join(home, '.cache', 'flashlm');
  assert.ok(!existsSync(cache));

  const a = demo();
  assert.equal(a.code, 0, a.stderr);
  const ra = report(a);
  assert.equal(ra.model, join(cache, 'demo-v1.gguf'));
  assert.match(ra.how, /^generated in/);
  assert.deepEqual(readdirSync(cache), ['demo-v1.gguf'], 'only the model in the cache (no temp file left)');
  const id1 = fileId(ra.model);
  assert.ok(id1.size > 1_000_000n, `a real model file (${id1.size} bytes)`);
  // stdout: the prompt, then the generated text (control characters escaped), one line
  assert.ok(a.stdout.startsWith(PROMPT), `stdout starts with the prompt: ${JSON.stringify(a.stdout.slice(0, 80))}`);
  assert.ok(a.stdout.trimEnd().length > PROMPT.length, 'generated text follows the prompt');
  assert.equal(ra.ids.length, 24, 'the default 24 tokens');
  assert.ok(ra.tps > 0);
  assert.ok(ra.ids.every((id) => Number.isInteger(id) && id >= 0 && id < 1024), 'ids in the demo vocab');

  const b = demo();
  assert.equal(b.code, 0, b.stderr);
  const rb = report(b);
  assert.equal(rb.model, ra.model);
  assert.equal(rb.how, 'cached');
  assert.deepEqual(fileId(ra.model), id1, 'the cached file is reused as is: same inode, size, mtime, ctime and bytes');
  assert.deepEqual(readdirSync(cache), ['demo-v1.gguf']);
  assert.deepEqual(rb.ids, ra.ids, 'greedy: the same tokens from the cached model');
  assert.equal(b.stdout, a.stdout);

  // --json and -n: one JSON object, the cached model, the same first tokens
  const c = demo(['-n', '5', '--json']);
  assert.equal(c.code, 0, c.stderr);
  const j = JSON.parse(c.stdout.trim().split('\n').pop()!) as { model: string; tokens: number[]; text: string; stats: { generated_tokens: number; prompt_tokens: number; tokens_per_s: number } };
  assert.equal(j.model, ra.model);
  assert.deepEqual(j.tokens, ra.ids.slice(0, 5));
  assert.equal(j.stats.generated_tokens, 5);
  assert.ok(j.stats.prompt_tokens > 0 && j.stats.tokens_per_s > 0);
  assert.equal(typeof j.text, 'string');
  assert.deepEqual(fileId(ra.model), id1);
});

test('demo honours FLASHLM_CACHE (and leaves HOME alone)', (t) => {
  const { root, home, demo } = setup(t, 'demo-env-cache');
  const dir = join(root, 'elsewhere', 'cache');
  const r = demo(['-n', '4'], { FLASHLM_CACHE: dir });
  assert.equal(r.code, 0, r.stderr);
  const rr = report(r);
  assert.equal(rr.model, join(dir, 'demo-v1.gguf'));
  assert.match(rr.how, /^generated in/);
  assert.ok(!existsSync(join(home, '.cache')), 'nothing written under HOME');
  const again = demo(['-n', '4'], { FLASHLM_CACHE: dir });
  assert.equal(again.code, 0, again.stderr);
  assert.equal(report(again).how, 'cached');
});
