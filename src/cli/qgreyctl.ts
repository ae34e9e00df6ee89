#!/usr/bin/env node
// qgreyctl: the administrator's tool for qgreyd. Query the daemon, inspect and change its
// store (through the running daemon's admin socket, or directly when it is stopped), migrate
// from greydaemon, and report on the decision log.
// Exit codes: 0 success (accept, match), 1 a negative answer (defer, no match, nothing to
// forget), 100 permanent error (usage, bad file), 111 temporary error (no answer, locked).
import { fail } from './common.js';
import { errorExit, main } from './qgreyctl/main.js';
import { guardStdout } from './qgreyctl/shared.js';

guardStdout();
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const { code, message } = errorExit(e);
    fail('qgreyctl', message, code);
  },
);
