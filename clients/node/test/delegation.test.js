'use strict';
// Delegation (DESIGN §5): broker.delegate / custodian.delegate mint a token for a sandboxed
// child whose sessions live under one custodian, with the intersection of the delegating
// session's policy and the lists given. Every target is on loopback; the wrapper's daemon lets
// the parent connect to 127.0.0.1 only, so 127.0.0.2 is denied before any packet.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const sb = require('..');
const { sessions, peerServer, readAll, closedPort } = require('./helpers');

test('a delegated token connects where both policies allow, and nowhere else', async (t) => {
  const open = sessions(t);
  const parent = await open();
  const peer = await peerServer(t);
  const notDelegated = await closedPort();
  const sandbox = await parent.makeCustodian();
  const token = await sandbox.delegate({
    expiresSeconds: 60,
    allowConnect: ['127.0.0.0/8'], // wider than the parent's 127.0.0.1: the parent's wins
    allowPorts: [String(peer.port)],
  });
  assert.match(token, /^sbd_/);

  const child = await open({ token });
  const [input] = await child.tcpConnect('127.0.0.1', peer.port);
  const socket = await peer.next();
  socket.write('to the child');
  assert.deepEqual(await input.readBytes(12, { timeout: 5 }), Buffer.from('to the child'));

  await assert.rejects(child.tcpConnect('127.0.0.1', notDelegated), sb.PermissionDeniedError, 'a port not delegated');
  await assert.rejects(parent.tcpConnect('127.0.0.1', notDelegated), sb.NetworkErrnoError, 'the parent may: refused by the OS');
  await assert.rejects(child.tcpConnect('127.0.0.2', peer.port), sb.PermissionDeniedError, 'delegated, but not the parent\'s');
  await assert.rejects(child.tcpListen(0, 4, false, '127.0.0.1'), sb.PermissionDeniedError, 'allowListen absent: nothing');
});

test('shutting the custodian down ends the child\'s session and makes its token unauthenticated', async (t) => {
  const open = sessions(t);
  const parent = await open();
  const peer = await peerServer(t);
  const sandbox = await parent.makeCustodian();
  const token = await parent.delegate(sandbox, { expiresSeconds: 60, allowConnect: ['127.0.0.1/32'], allowPorts: ['0-65535'] });
  const child = await open({ token });
  await child.tcpConnect('127.0.0.1', peer.port);
  const eof = readAll(await peer.next());

  await sandbox.shutdownAll();
  assert.equal((await eof).length, 0, 'the child\'s connection closed with the custodian');
  await assert.rejects(child.keepAlive(), sb.UnauthenticatedError, 'the child\'s token is refused from now on');
  await assert.rejects(open({ token }), sb.UnauthenticatedError);
  await assert.rejects(sandbox.delegate({ expiresSeconds: 60 }), sb.ContractError, 'a shut-down custodian delegates nothing');
  assert.ok(await parent.keepAlive() > 0, 'the parent lives on');
});

test('a delegated token expires, and its sessions with it', async (t) => {
  const open = sessions(t);
  const parent = await open();
  const peer = await peerServer(t);
  const token = await parent.delegate(parent.custodian, {
    expiresSeconds: 1.5, allowConnect: ['127.0.0.1/32'], allowPorts: [String(peer.port)],
  });
  const child = await open({ token });
  await child.tcpConnect('127.0.0.1', peer.port);
  assert.equal((await readAll(await peer.next(), 5000)).length, 0, 'the child\'s connection closed when the token expired');
  await assert.rejects(child.keepAlive(), sb.UnauthenticatedError);
  await assert.rejects(open({ token }), sb.UnauthenticatedError);
});

test('bad delegations are ContractError, before the wire where the client can tell', async (t) => {
  const broker = await sessions(t)();
  const refusedHere = [
    undefined, {}, { expiresSeconds: 'soon' }, { expiresSeconds: 60, allowConnect: '127.0.0.1/32' },
    { expiresSeconds: 60, allowPorts: [80] }, { expiresSeconds: 60, allowPort: ['80'] },
    { expiresSeconds: 60, allowHandoff: 'yes' }, 60,
  ];
  for (const options of refusedHere) {
    await assert.rejects(broker.custodian.delegate(options), (err) => err instanceof sb.ContractError && err.code === null, JSON.stringify(options));
  }
  const refusedThere = [
    { expiresSeconds: 0 }, { expiresSeconds: 60, allowConnect: ['not-a-network'] }, { expiresSeconds: 60, allowPorts: ['70000'] },
  ];
  for (const options of refusedThere) {
    await assert.rejects(broker.delegate(broker.custodian, options), (err) => err instanceof sb.ContractError && err.code === 'INVALID_ARGUMENT', JSON.stringify(options));
  }
  await assert.rejects(broker.delegate(`cst_${'x'.repeat(22)}`, { expiresSeconds: 60 }), sb.NotFoundError);
});
