'use strict';
// Shared by the tests: a session with the daemon the pytest wrapper started (its address and
// token file come in SOCKBROKER_GRPC and SOCKBROKER_TOKEN_FILE), plain loopback peers made with
// node:net / node:dgram, and bounded waits.

const net = require('node:net');
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

module.exports = { sessions, within, peerServer, readAll, closedPort };
