#!/usr/bin/env node
// qgreyctl: the administrator's tool for qgreyd. Query the daemon, inspect and change its
// store (through the running daemon's admin socket, or directly when it is stopped), migrate
// from greydaemon, and report on the decision log.
// Exit codes: 0 success (accept, match), 1 a negative answer (defer, no match, nothing to
// forget), 100 permanent error (usage, bad file), 111 temporary error (no answer, locked).
// This file is only the entry: the process's streams for the commands, and the one place
// their result or error becomes the exit code (cli/common.ts exitOnError).
import { EXIT_OK, EXIT_TEMPORARY, exitOnError, fail } from './common.js';
import { main } from './qgreyctl/main.js';
import { processIo } from './qgreyctl/io.js';

const io = processIo();
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  // a reader that went away (dump | head) is not our failure
  if (e.code === 'EPIPE') {
    io.broken = true;
    process.exit(EXIT_OK);
  }
  fail('qgreyctl', `standard output: ${e.message}`, EXIT_TEMPORARY);
});
main(process.argv.slice(2), io).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => exitOnError('qgreyctl', e),
);
