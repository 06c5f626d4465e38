'use strict';
// Session resume (DESIGN §5): a session opened with graceSeconds outlives a broken attachment
// for that long, and Broker.connect(target, {resume}) takes it back with every handle and queued
// byte; a wrong, spent or late token is NotFoundError.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { once } = require('node:events');
const sb = require('..');
const { sessions, within, eventually, holder, kill, peerServer, readAll } = require('./helpers');

/** Everything `socket` has received so far, as a function returning it as text. */
function received(socket) {
  const chunks = [];
  socket.on('data', (chunk) => chunks.push(chunk));
  return () => Buffer.concat(chunks).toString();
}

test('a graced session outlives its SIGKILLed process; resume takes back its connection and the bytes that came meanwhile', async (t) => {
  const open = sessions(t);
  const peer = await peerServer(t);
  const held = await holder(t, peer.port, '30');
  assert.match(held.resumeToken, /^sbr_/);
  const socket = await peer.next();
  const got = received(socket);
  await eventually(() => got() === 'held\n', 5000, 'the holder\'s first bytes');

  await kill(held.child);
  socket.write('sent while away');
  const back = await open({ resume: { session: held.session, resumeToken: held.resumeToken } });
  assert.equal(back.session, held.session);
  assert.equal(back.graceSeconds, 30);
  assert.equal(back.attached, true);
  assert.match(back.resumeToken, /^sbr_/);
  assert.notEqual(back.resumeToken, held.resumeToken, 'each resume gives a new token');
  assert.deepEqual(back.resumption, { session: held.session, resumeToken: back.resumeToken });

  const input = new sb.InputPort(back, held.input);
  assert.deepEqual(await input.readBytes(15, { timeout: 5 }), Buffer.from('sent while away'));
  await new sb.OutputPort(back, held.output).write('after resume', { flush: true });
  await eventually(() => got() === 'held\nafter resume', 5000, 'the peer to get the bytes');
});

test('abandon() lets the session go as a crash would; a resume finds its pending client, a wrong or spent token is NotFoundError', async (t) => {
  const open = sessions(t);
  const broker = await open({ graceSeconds: 30 });
  const listener = await broker.tcpListen(0, 4, false, '127.0.0.1');
  const [, port] = await listener.addresses(true);
  const first = broker.resumption;
  const pending = listener.accept();

  await broker.abandon();
  assert.equal(broker.attached, false);
  await assert.rejects(within(5000, pending), sb.BreakError, 'a call under way is cancelled');
  await assert.rejects(broker.keepAlive(), (err) => err instanceof sb.FailError && /the broker is closed/.test(err.message));
  await broker.abandon();
  await broker.close(); // sends nothing: the session stays in its grace period

  const early = net.connect(port, '127.0.0.1');
  t.after(() => early.destroy());
  await once(early, 'connect');
  early.write('hello');
  await assert.rejects(open({ resume: { session: first.session, resumeToken: 'sbr_wrong' } }), sb.NotFoundError);

  const back = await open({ resume: first });
  assert.equal(back.custodian.handle, broker.custodian.handle);
  const accepted = await back.tcpAccept(listener, { timeout: 5 });
  assert.ok(accepted, 'the client that came while away waits to be accepted');
  assert.deepEqual(await accepted[0].readBytes(5), Buffer.from('hello'));
  await assert.rejects(open({ resume: first }), sb.NotFoundError, 'a spent token');

  await back.abandon();
  const again = await open({ resume: back.resumption });
  assert.equal(again.session, first.session);
  assert.equal(await again.tcpAcceptReady(listener), false);
});

test('after its grace period the session drops: the peer sees EOF, and the token is NotFoundError', async (t) => {
  const open = sessions(t);
  const peer = await peerServer(t);
  const broker = await open({ graceSeconds: 0.3 });
  assert.equal(broker.graceSeconds, 0.3);
  await broker.tcpConnect('127.0.0.1', peer.port);
  const eof = readAll(await peer.next());
  const started = Date.now();
  await broker.abandon();
  assert.equal((await eof).length, 0);
  assert.ok(Date.now() - started >= 250, `dropped after ${Date.now() - started} ms, before its grace was over`);
  await assert.rejects(open({ resume: broker.resumption }), sb.NotFoundError);
});

test('grace and resume options: a session without grace has no token; bad options are ContractError', async (t) => {
  const open = sessions(t);
  const plain = await open();
  assert.equal(plain.graceSeconds, 0);
  assert.equal(plain.resumeToken, '');
  const clamped = await open({ graceSeconds: 1e9 });
  assert.ok(clamped.graceSeconds > 0 && clamped.graceSeconds < 1e9, `clamped to ${clamped.graceSeconds}`);

  const resume = { session: 'ses_x', resumeToken: 'sbr_x' };
  const refusedHere = [
    { graceSeconds: 'soon' }, { graceSeconds: Infinity }, { resume: 'ses_x' }, { resume: ['ses_x', 'sbr_x'] },
    { resume: { session: 'ses_x' } }, { resume: { ...resume, token: 'x' } }, { resume, graceSeconds: 5 },
    { resume, leaseSeconds: 5 }, { resumeToken: 'sbr_x' },
  ];
  for (const options of refusedHere) {
    await assert.rejects(open(options), (err) => err instanceof sb.ContractError && err.code === null, JSON.stringify(options));
  }
  await assert.rejects(open({ graceSeconds: -1 }), (err) => err instanceof sb.ContractError && err.code === 'INVALID_ARGUMENT');
});
