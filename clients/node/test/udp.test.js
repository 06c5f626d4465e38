'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const dgram = require('node:dgram');
const { once } = require('node:events');
const sb = require('..');
const { sessions, within } = require('./helpers');

async function boundSocket(broker) {
  const sock = await broker.udpOpenSocket();
  await sock.bind('127.0.0.1', 0);
  const [, port] = await sock.addresses(true);
  return [sock, port];
}

test('open, bind, sendTo, receive; nowait forms; the socket predicates', async (t) => {
  const broker = await sessions(t)();
  const [a, portA] = await boundSocket(broker);
  const b = await broker.udpOpenSocket('127.0.0.1');
  assert.equal(await broker.udp(b), true);
  assert.equal(await b.bound(), false);
  assert.equal(await a.receiveNowait(), null);
  assert.equal(await a.receive(100, { timeout: 0.05 }), null);

  assert.equal(await broker.udpSendTo(b, '127.0.0.1', portA, 'hello, world', 0, 5), true);
  assert.equal(await b.bound(), true, 'sending binds an unbound socket');
  const [, portB] = await broker.udpAddresses(b, true);
  const got = await a.receive(65535, { timeout: 5 });
  assert.deepEqual(got, { count: 5, host: '127.0.0.1', port: portB, data: Buffer.from('hello') });

  await b.sendToNowait('127.0.0.1', portA, Buffer.from('truncated!'));
  assert.deepEqual((await broker.udpReceive(a, 4, { timeout: 5 })).data, Buffer.from('trun'));

  await b.connect('127.0.0.1', portA);
  assert.equal(await broker.udpConnected(b), true);
  assert.equal(await b.send('connected'), true);
  assert.equal((await a.receive(100, { timeout: 5 })).data.toString(), 'connected');
  await assert.rejects(b.sendTo('127.0.0.1', portA, 'x'), sb.NetworkError);
  await assert.rejects(a.send('x'), (err) => err instanceof sb.NetworkError && /not connected/.test(err.message));
  await assert.rejects(a.bind('127.0.0.1', 0), sb.NetworkError);
  await assert.rejects(b.send('x', 0, 5), sb.ContractError);
  await b.connect(null, null);
  assert.equal(await b.connected(), false);
});

test('options: ttl, receive buffer size, multicast settings', async (t) => {
  const broker = await sessions(t)();
  const sock = await broker.udpOpenSocket();
  await sock.setTtl(7);
  assert.equal(await sock.ttl(), 7);
  await broker.udpSetReceiveBufferSize(sock, 65536);
  await sock.multicastSetTtl(3);
  assert.equal(await broker.udpMulticastTtl(sock), 3);
  await sock.multicastSetLoopback(false);
  assert.equal(await sock.multicastLoopback(), false);
  await sock.multicastSetInterface('127.0.0.1');
  assert.equal(await sock.multicastInterface(), '127.0.0.1');
  await assert.rejects(sock.multicastJoinGroup('127.0.0.1', '127.0.0.1'), (err) =>
    err instanceof sb.NetworkErrnoError && err.errno === 22);
});

test('a datagram stream is an async iterator; leaving the loop ends it', async (t) => {
  const broker = await sessions(t)();
  const [sock, port] = await boundSocket(broker);
  const peer = dgram.createSocket('udp4');
  t.after(() => peer.close());
  peer.bind(0, '127.0.0.1');
  await once(peer, 'listening');
  const stream = sock.receiveStream();
  const sending = setInterval(() => peer.send(`d${sent++}`, port, '127.0.0.1'), 5);
  let sent = 0;
  t.after(() => clearInterval(sending));
  const seen = [];
  await within(5000, (async () => {
    for await (const datagram of stream) {
      assert.ok(datagram instanceof sb.Datagram);
      assert.equal(datagram.host, '127.0.0.1');
      assert.equal(datagram.port, peer.address().port);
      seen.push(datagram.data.toString());
      if (seen.length === 5) break;
    }
  })(), 'five datagrams');
  clearInterval(sending);
  assert.deepEqual(seen, ['d0', 'd1', 'd2', 'd3', 'd4']);
  // The stream is over, and the socket still works with plain calls. (A datagram that arrives
  // while the cancel is on its way may still go to the stream, so the peer sends until one lands.)
  let next = null;
  await within(5000, (async () => {
    while (!next || next.data.toString() !== 'after') {
      peer.send('after', port, '127.0.0.1');
      next = await sock.receive(100, { timeout: 0.2 });
    }
  })());
  assert.equal(next.data.toString(), 'after');
});

test('a datagram stream on a closed socket fails with a typed error', async (t) => {
  const broker = await sessions(t)();
  const sock = await broker.udpOpenSocket();
  await sock.close();
  await assert.rejects(async () => {
    for await (const _ of sock.receiveStream()) assert.fail('no datagram expected');
  }, sb.NetworkError);
});

test('sendStream sends from an (async) iterable and counts', async (t) => {
  const broker = await sessions(t)();
  const [receiver, port] = await boundSocket(broker);
  const sender = await broker.udpOpenSocket();
  async function* datagrams() {
    for (let i = 0; i < 3; i += 1) yield { data: `s${i}`, host: '127.0.0.1', port };
  }
  assert.equal(await sender.sendStream(datagrams()), 3);
  assert.equal(await sender.sendStream([[Buffer.from('s3'), '127.0.0.1', port]]), 1);
  const got = [];
  for (let i = 0; i < 4; i += 1) got.push((await receiver.receive(10, { timeout: 5 })).data.toString());
  assert.deepEqual(got, ['s0', 's1', 's2', 's3']);
});

test('sync and syncTimeout perform exactly one event', async (t) => {
  const broker = await sessions(t)();
  const [sock, port] = await boundSocket(broker);
  const listener = await broker.tcpListen(0, 4, false, '127.0.0.1');
  assert.equal(await broker.syncTimeout(0, sb.udpReceiveEvt(sock), sb.tcpAcceptEvt(listener)), null);
  const other = await broker.udpOpenSocket();
  const sent = await broker.sync(sb.udpSendToEvt(other, '127.0.0.1', port, 'via sync'));
  assert.deepEqual(sent, { index: 0, result: true });
  const received = await broker.syncTimeout(5, sb.tcpAcceptEvt(listener), sb.udpReceiveEvt(sock, 3));
  assert.equal(received.index, 1);
  assert.equal(received.result.data.toString(), 'via');
  const [, listenPort] = await listener.addresses(true);
  await broker.tcpConnect('127.0.0.1', listenPort);
  const accepted = await broker.syncTimeout(5, sb.tcpAcceptEvt(listener));
  assert.ok(accepted.result[0] instanceof sb.InputPort && accepted.result[1] instanceof sb.OutputPort);
  const ready = await broker.syncTimeout(5, sb.udpSendReadyEvt(sock));
  assert.deepEqual(ready, { index: 0, result: sock.handle });
});

test('packed batches decode as docs/wire.md says; malformed packed bytes are a NetworkError', () => {
  const { unpackDatagrams } = require('../lib/streams');
  // `hi` from 127.0.0.1 port 9000, then an empty datagram for the connected peer.
  const packed = Buffer.from('00000002093132372e302e302e312328686900000000000000', 'hex');
  const got = unpackDatagrams(packed);
  assert.ok(got.every((d) => d instanceof sb.Datagram));
  assert.deepEqual(got.map((d) => [d.data.toString(), d.host, d.port]), [['hi', '127.0.0.1', 9000], ['', '', 0]]);
  assert.deepEqual(unpackDatagrams(Buffer.alloc(0)), []);
  for (const [hex, reason] of [
    ['000000', /truncated header/],
    ['0000000109313237', /truncated host or port/],
    ['00000005093132372e302e302e3123286869', /5 bytes of data, 2 left/],
    ['0000000102c3a90009', /not printable ASCII/],
  ]) {
    assert.throws(() => unpackDatagrams(Buffer.from(hex, 'hex')), (err) => err instanceof sb.NetworkError && reason.test(err.message));
  }
});
