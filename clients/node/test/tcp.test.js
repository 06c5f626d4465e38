'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const sb = require('..');
const { sessions, within, peerServer, readAll } = require('./helpers');

test('listen, connect, accept, and bytes both ways through the broker', async (t) => {
  const broker = await sessions(t)();
  const listener = await broker.tcpListen(0, 4, false, '127.0.0.1');
  assert.ok(listener instanceof sb.Listener);
  assert.equal(await broker.tcpListener(listener), true);
  const [host, port] = await listener.addresses(true);
  assert.equal(host, '127.0.0.1');
  assert.ok(port > 0);
  assert.equal(await listener.acceptReady(), false);

  const [ci, co] = await broker.tcpConnect('127.0.0.1', port);
  assert.ok(ci instanceof sb.InputPort && co instanceof sb.OutputPort);
  await within(5000, (async () => { while (!(await listener.acceptReady())); })(), 'accept-ready');
  const [si, so] = await listener.accept();
  assert.equal(await broker.tcpPort(si), true);

  assert.equal(await co.writeBytes('ping', { flush: true }), 4);
  assert.deepEqual(await si.readBytes(4), Buffer.from('ping'));
  assert.equal(await so.write(Buffer.from('pong')), 4);
  assert.deepEqual(await ci.readBytesAvailNowait(), Buffer.alloc(0), 'block-buffered: nothing until flushed');
  await so.flushOutput();
  assert.deepEqual(await ci.readBytesAvail(), Buffer.from('pong'));

  const [local, localPort, remote, remotePort] = await broker.tcpAddresses(co, true);
  assert.deepEqual([local, remote, remotePort], ['127.0.0.1', '127.0.0.1', port]);
  const [, serverLocalPort, , serverRemotePort] = await so.addresses(true);
  assert.equal(serverLocalPort, port);
  assert.equal(serverRemotePort, localPort);
  assert.deepEqual(await si.addresses(), ['127.0.0.1', '127.0.0.1']);
});

test('half-close: closing one output port is EOF for the peer, the other way stays open', async (t) => {
  const broker = await sessions(t)();
  const listener = await broker.tcpListen(0, 4, false, '127.0.0.1');
  const [, port] = await listener.addresses(true);
  const [ci, co] = await broker.tcpConnect('127.0.0.1', port);
  const [si, so] = await listener.accept({ timeout: 5 });
  await co.write('last words', { flush: true });
  await co.close();
  assert.deepEqual(await si.readBytes(10), Buffer.from('last words'));
  assert.equal(await si.read(), sb.EOF);
  assert.equal((await co.describe()).closed, true);
  await so.write('still here', { flush: true });
  assert.deepEqual(await ci.readBytes(10), Buffer.from('still here'));
  await so.close();
  assert.equal(await ci.readBytesAvail(100, { timeout: 5 }), sb.EOF);
});

test('peek leaves the bytes; a plain peer sees what the broker writes', async (t) => {
  const broker = await sessions(t)();
  const peer = await peerServer(t);
  const [ci, co] = await broker.tcpConnect('127.0.0.1', peer.port);
  const socket = await peer.next();
  socket.write('abcdef');
  assert.deepEqual(await ci.peekBytesAvail(3, { timeout: 5 }), Buffer.from('abc'));
  assert.deepEqual(await ci.read(6, { mode: 'exact' }), Buffer.from('abcdef'));
  await co.setBufferMode('none');
  const received = readAll(socket);
  await co.write('to the peer');
  await co.close();
  assert.equal((await received).toString(), 'to the peer');
});

test('accept with a timeout resolves null; an AbortSignal breaks a blocking accept', async (t) => {
  const broker = await sessions(t)();
  const listener = await broker.tcpListen(0, 4, false, '127.0.0.1');
  assert.equal(await broker.tcpAccept(listener, { timeout: 0.05 }), null);

  const controller = new AbortController();
  const pending = listener.accept({ signal: controller.signal });
  setTimeout(() => controller.abort(), 100);
  await assert.rejects(within(5000, pending), (err) => err instanceof sb.BreakError && err.kind === 'exn:break');
  // Nothing was taken: a client that arrives now is accepted by the next call.
  const [, port] = await listener.addresses(true);
  await broker.tcpConnect('127.0.0.1', port);
  assert.ok(await listener.accept({ timeout: 5 }));

  const aborted = AbortSignal.abort();
  await assert.rejects(listener.accept({ signal: aborted }), sb.BreakError);
});

test('close() of a handle object is idempotent; tcpClose twice fails as in Racket', async (t) => {
  const broker = await sessions(t)();
  const listener = await broker.tcpListen(0, 4, false, '127.0.0.1');
  const [, port] = await listener.addresses(true);
  const [ci, co] = await broker.tcpConnect('127.0.0.1', port);
  await listener.close();
  await listener.close();
  assert.equal((await listener.describe()).closed, true);
  await assert.rejects(broker.tcpClose(listener), (err) => {
    assert.ok(err instanceof sb.NetworkError);
    assert.equal(err.kind, 'exn:fail:network');
    assert.equal(err.message.split('\n')[0], 'tcp-close: listener is closed');
    return true;
  });
  await Promise.all([ci.close(), ci.close(), co.close()]);
  await co.close();
  await assert.rejects(co.write('x'), (err) => err instanceof sb.FailError && err.kind === 'exn:fail');

  const sock = await broker.udpOpenSocket();
  await sock.close();
  await sock.close();
  await assert.rejects(broker.udpClose(sock), (err) => err.message.startsWith('udp-close: udp socket was already closed'));
});

test('custodians: shutdownAll closes what they hold; describeCustodian lists it', async (t) => {
  const broker = await sessions(t)();
  const custodian = await broker.makeCustodian();
  const peer = await peerServer(t);
  const [ci] = await broker.tcpConnect('127.0.0.1', peer.port, null, null, { custodian });
  const socket = await peer.next();
  const description = await broker.describeCustodian(custodian);
  assert.equal(description.parent, broker.custodian.handle);
  assert.ok(description.handles.some((h) => h.handle === ci.handle));
  const eof = readAll(socket);
  await custodian.shutdownAll();
  await eof;
  assert.equal((await ci.describe()).closed, true);
  await assert.rejects(broker.tcpListen(0, 4, false, '127.0.0.1', { custodian }), sb.ContractError);
});
