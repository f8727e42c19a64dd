#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/ (built by `npm run build`, which `npm install` runs via `prepare`).
import { main } from '../dist/src/cli/main.js';
// `flashlm inspect big.gguf | head` closes stdout early: stop quietly, as Unix tools do.
process.stdout.on('error', (e) => { if (e.code === 'EPIPE') process.exit(0); else throw e; });
main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
