'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { pipeline } = require('node:stream/promises');
const { Readable } = require('node:stream');
const sb = require('..');
const { sessions, within, peerServer, readAll } = require('./helpers');

const SIZE = 8 * 1024 * 1024;

async function collect(readable) {
  const chunks = [];
  for await (const chunk of readable) chunks.push(chunk);
  return Buffer.concat(chunks);
}

test('a connection as a Duplex: a large payload each way, half-close both ways', async (t) => {
  const broker = await sessions(t)();
  const peer = await peerServer(t);
  const [ci] = await broker.tcpConnect('127.0.0.1', peer.port);
  const socket = await peer.next();
  const stream = broker.tcpStream(ci);
  assert.ok(stream instanceof sb.PortStream);

  const up = crypto.randomBytes(SIZE);
  const down = crypto.randomBytes(SIZE);
  const peerGot = readAll(socket, 30000);
  socket.end(down);
  const [, weGot] = await within(30000, Promise.all([
    pipeline(Readable.from([up.subarray(0, 1000), up.subarray(1000)]), stream),
    collect(stream),
  ]), 'both directions');
  assert.equal((await peerGot).length, SIZE, 'the peer saw our FIN after every byte');
  assert.ok((await peerGot).equals(up));
  assert.ok(weGot.equals(down), 'the peer\'s FIN ended our readable side after every byte');
});

test('backpressure: a reader that stops holds the daemon back, then gets every byte', async (t) => {
  const broker = await sessions(t)();
  const peer = await peerServer(t);
  const [ci] = await broker.tcpConnect('127.0.0.1', peer.port);
  const socket = await peer.next();
  const stream = broker.tcpStream(ci);
  const payload = crypto.randomBytes(32 * 1024 * 1024);
  let written = 0;
  const writing = new Promise((resolve) => {
    const more = () => {
      while (written < payload.length) {
        const chunk = payload.subarray(written, written + 1024 * 1024);
        written += chunk.length;
        if (!socket.write(chunk)) return socket.once('drain', more);
      }
      socket.end(resolve);
    };
    more();
  });
  // Nobody reads for a while: the peer's writes must stall well short of the payload.
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(socket.writableLength > 0, 'the peer could not hand every byte to the kernel');
  assert.ok(written < payload.length, 'the peer is held back');
  const got = await within(30000, collect(stream), 'reading the rest');
  await writing;
  assert.ok(got.equals(payload));
  stream.destroy();
});

test('destroying the Duplex ends the stream with a FIN; the input port stays open', async (t) => {
  const broker = await sessions(t)();
  const peer = await peerServer(t);
  const [ci] = await broker.tcpConnect('127.0.0.1', peer.port);
  const socket = await peer.next();
  const peerGot = readAll(socket);
  const stream = broker.tcpStream(ci);
  stream.write('through the stream');
  await new Promise((r) => setTimeout(r, 100));
  stream.destroy();
  await new Promise((r) => stream.once('close', r));
  assert.equal((await peerGot).toString(), 'through the stream');
  // grpc-js's cancel is END_STREAM now and RST_STREAM a few ms later: until the daemon has the
  // reset it treats the call as half-closed and would deliver the peer's bytes to this destroyed
  // stream (tests/behaviour/test_stream_cancel.py has the daemon side).
  await new Promise((r) => setTimeout(r, 500));
  socket.end('and back directly');
  assert.deepEqual(await ci.readBytes(17, { timeout: 5 }), Buffer.from('and back directly'));
  assert.equal((await ci.describe()).closed, false);
});

test('a stream on an unknown port fails with a typed error', async (t) => {
  const broker = await sessions(t)();
  const stream = broker.tcpStream('tin_nope');
  const err = await within(5000, new Promise((r) => stream.once('error', r)));
  assert.ok(err instanceof sb.NotFoundError, `${err}`);
});
