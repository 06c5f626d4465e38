'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const net = require('node:net');
const sb = require('..');
const { sessions, within, peerServer, readAll } = require('./helpers');

const SIZE = 4 * 1024 * 1024;

test('a relay channel: a net.Socket carrying the connection both ways, half-close both ways', async (t) => {
  const broker = await sessions(t)();
  const peer = await peerServer(t);
  const [ci, co] = await broker.tcpConnect('127.0.0.1', peer.port);
  const socket = await peer.next();
  socket.write('hello first'); // read by the daemon before the channel: it comes first on it
  await within(5000, ci.peekBytesAvail(100, { timeout: 5 }), 'the greeting reached the daemon');
  const channel = await ci.openChannel();
  assert.ok(channel instanceof net.Socket);

  const up = crypto.randomBytes(SIZE);
  const down = crypto.randomBytes(SIZE);
  const peerGot = readAll(socket, 30000);
  const weGot = readAll(channel, 30000);
  channel.resume(); // it comes paused, as a server socket with pauseOnConnect does
  channel.end(up);
  socket.end(down);
  assert.ok((await within(30000, peerGot, 'the peer read to our FIN')).equals(up));
  assert.ok((await within(30000, weGot, 'we read to the peer\'s FIN')).equals(Buffer.concat([Buffer.from('hello first'), down])));
  await assert.rejects(co.write('x'), (err) => err instanceof sb.FailError);
});

test('a used ticket is refused with the typed error of the ERR line; hand-offs are refused at once', async (t) => {
  const broker = await sessions(t)();
  const peer = await peerServer(t);
  const [ci] = await broker.tcpConnect('127.0.0.1', peer.port);
  await peer.next();
  await assert.rejects(ci.openChannel('handoff'), (err) => err instanceof sb.ContractError && /SCM_RIGHTS/.test(err.message));
  const sock = await broker.udpOpenSocket('127.0.0.1');
  await assert.rejects(sock.openChannel(), (err) => err instanceof sb.ContractError && /SCM_RIGHTS/.test(err.message));
  const reply = await broker.call('Ports.OpenChannel', { port: ci, mode: 'relay' });
  const { redeem } = require('../lib/channel');
  (await redeem(reply.ticket, reply.address)).destroy();
  await assert.rejects(redeem(reply.ticket, reply.address), (err) => err instanceof sb.NotFoundError && /no such ticket/.test(err.message));
});
