'use strict';
// Shared by the tests: a session with the daemon the pytest wrapper started (its address and
// token file come in SOCKBROKER_GRPC and SOCKBROKER_TOKEN_FILE), plain loopback peers made with
// node:net / node:dgram, a separate process holding a session, and bounded waits.

const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { once } = require('node:events');
const { Broker } = require('..');

if (!process.env.SOCKBROKER_GRPC || !process.env.SOCKBROKER_TOKEN_FILE) {
  throw new Error('set SOCKBROKER_GRPC and SOCKBROKER_TOKEN_FILE to a running daemon (tests/node/test_node_client.py does)');
}

/** Open a session; the test's `after` hook closes every one opened through `sessions()`. */
function sessions(t) {
  const opened = [];
  t.after(async () => {
    for (const broker of opened) await broker.close().catch(() => {});
  });
  return async (options) => {
    const broker = await Broker.connect(undefined, options);
    opened.push(broker);
    return broker;
  };
}

/** Reject with a clear message when `promise` takes longer than `ms`. */
function within(ms, promise, what = 'operation') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolve once `predicate()` (sync or async) is truthy, polling; reject after `ms`. */
async function eventually(predicate, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Run test/fixtures/holder.js: another Node process whose session holds a connection to
 * 127.0.0.1:`port` (`args`: its grace seconds). Resolves once it is ready to {child, session,
 * resumeToken, input, output}; the test's `after` hook kills it if it still runs. */
async function holder(t, port, ...args) {
  const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'holder.js'), String(port), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'));
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const line = await within(15000, new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out.trim());
    });
    child.once('exit', () => reject(new Error(`holder exited early: ${stderr}`)));
  }), 'the holder to start');
  const [word, session, resumeToken, input, output] = line.split(' ');
  if (word !== 'ready') throw new Error(`holder: unexpected line ${JSON.stringify(line)}`);
  return { child, session, resumeToken, input, output };
}

/** SIGKILL `child` and wait until it has exited. */
async function kill(child) {
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await within(5000, exited, 'the child to exit');
}

/** A plain TCP server on 127.0.0.1 (outside the broker), half-open allowed (our FIN does not
 * end its side): resolves to {server, port, next()}. */
async function peerServer(t) {
  const accepted = [];
  const waiting = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const resolve = waiting.shift();
    if (resolve) resolve(socket);
    else accepted.push(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const s of accepted) s.destroy();
    server.close();
  });
  const next = () =>
    within(5000, accepted.length ? Promise.resolve(accepted.shift()) : new Promise((r) => waiting.push(r)), 'accept');
  return { server, port: server.address().port, next };
}

/** Everything `socket` sends until EOF or a reset, bounded in time. */
function readAll(socket, ms = 5000) {
  const chunks = [];
  socket.on('data', (c) => chunks.push(c));
  const ended = new Promise((resolve) => {
    socket.once('end', resolve);
    socket.once('close', resolve);
    socket.once('error', resolve);
  });
  return within(ms, ended, 'reading to EOF').then(() => Buffer.concat(chunks));
}

/** A port on 127.0.0.1 where nothing listens (bound, then closed). */
async function closedPort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

module.exports = { sessions, within, eventually, holder, kill, peerServer, readAll, closedPort };
