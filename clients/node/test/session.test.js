'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const sb = require('..');
const { sessions, within, holder, peerServer, readAll } = require('./helpers');

test('a SIGKILLed Node process loses its sockets at once: the peer sees EOF', async (t) => {
  const peer = await peerServer(t);
  const { child, session, resumeToken } = await holder(t, peer.port);
  assert.match(session, /^ses_/);
  assert.equal(resumeToken, '-', 'no grace asked, no resume token');
  const socket = await peer.next();
  const received = readAll(socket, 5000);
  const started = Date.now();
  child.kill('SIGKILL');
  assert.equal((await received).toString(), 'held\n');
  assert.ok(Date.now() - started < 5000);
});

test('close() drops the session and every socket in it; it is idempotent', async (t) => {
  const broker = await sessions(t)();
  const peer = await peerServer(t);
  await broker.tcpConnect('127.0.0.1', peer.port);
  const socket = await peer.next();
  const eof = readAll(socket);
  await broker.close();
  await eof;
  await broker.close();
  assert.equal(broker.attached, false);
});

test('detach leaves the lease in charge; keepAlive renews it', async (t) => {
  const broker = await sessions(t)({ leaseSeconds: 30 });
  assert.equal(broker.attached, true);
  await within(5000, broker.detach());
  assert.equal(broker.attached, false);
  const lease = await broker.keepAlive();
  assert.ok(lease > 0 && lease <= 30);
  const listener = await broker.tcpListen(0, 4, false, '127.0.0.1');
  assert.equal(await listener.acceptReady(), false);
});

test('a session without an attachment, and a handle held as a plain string', async (t) => {
  const broker = await sessions(t)({ attach: false });
  assert.equal(broker.attached, false);
  const listener = await broker.tcpListen(0, 4, false, '127.0.0.1');
  assert.equal(await broker.tcpAcceptReady(String(listener)), false);
  assert.equal(typeof broker.session, 'string');
  assert.ok(broker.custodian instanceof sb.Custodian);
});
