#!/usr/bin/env node
// The published entry runs the compiled CLI; `npm ci` builds it through the `prepare` script.
import { main } from '../dist/src/cli/main.js';
main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
