'use strict';
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const sb = require('..');
const { sessions, closedPort } = require('./helpers');

test('a refused connection is NetworkErrnoError with errno 111 (posix), as Racket words it', async (t) => {
  const broker = await sessions(t)();
  const port = await closedPort();
  await assert.rejects(broker.tcpConnect('127.0.0.1', port), (err) => {
    assert.ok(err instanceof sb.NetworkErrnoError && err instanceof sb.NetworkError && err instanceof sb.BrokerError);
    assert.equal(err.kind, 'exn:fail:network:errno');
    assert.equal(err.errno, 111);
    assert.equal(err.errnoFamily, 'posix');
    assert.equal(err.code, 'UNAVAILABLE');
    assert.equal(err.message.split('\n')[0], 'tcp-connect: connection failed');
    assert.match(err.message, /system error: Connection refused; errno=111/);
    return true;
  });
});

test('an unknown name is a gai error', async (t) => {
  const broker = await sessions(t)();
  await assert.rejects(broker.tcpConnect('no-such-host.invalid', 80), (err) => {
    assert.ok(err instanceof sb.NetworkErrnoError);
    assert.equal(err.errnoFamily, 'gai');
    assert.equal(err.message.split('\n')[0], 'tcp-connect: host not found');
    return true;
  });
});

test('a target the policy denies is permission-denied', async (t) => {
  const broker = await sessions(t)();
  // The wrapper's daemon may connect to 127.0.0.1 only, so 127.0.0.2 is denied before any packet.
  await assert.rejects(broker.tcpConnect('127.0.0.2', 9), (err) => {
    assert.ok(err instanceof sb.PermissionDeniedError);
    assert.equal(err.kind, 'permission-denied');
    assert.equal(err.code, 'PERMISSION_DENIED');
    assert.equal(err.errno, null);
    assert.match(err.message, /^tcp-connect: connect to 127\.0\.0\.2:9 denied/);
    return true;
  });
  const sock = await broker.udpOpenSocket();
  await assert.rejects(sock.sendTo('127.0.0.2', 9, 'x'), sb.PermissionDeniedError);
});

test("the daemon's contract errors, and bad arguments refused before the wire", async (t) => {
  const broker = await sessions(t)();
  await assert.rejects(broker.tcpListen(70000), (err) => {
    assert.ok(err instanceof sb.ContractError);
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.equal(err.message, 'tcp-listen: contract violation\n  expected: listen-port-number?\n  given: 70000');
    return true;
  });
  // Refused here (code null: it never reached the daemon).
  await assert.rejects(broker.tcpListen('80'), (err) => err instanceof sb.ContractError && err.code === null);
  await assert.rejects(broker.tcpListen(1.5), sb.ContractError);
  await assert.rejects(broker.tcpListen(2 ** 40), sb.ContractError);
  await assert.rejects(broker.tcpConnect('127.0.0.1', 9, null, null, { timout: 1 }), /unknown option\n {2}option: timout/);
  await assert.rejects(broker.call('Tcp.Listen', { prot: 0 }), /unknown argument\n {2}argument: prot/);
  await assert.rejects(broker.call('Tcp.Nope', {}), /no such RPC/);
  await assert.rejects(broker.call('Ports.Stream', {}), /is a stream/);
  await assert.rejects(broker.sync({ tcpAccept: {} }), sb.ContractError);
  await assert.rejects(broker.tcpConnect('127.0.0.1', 9, '127.0.0.1'), (err) =>
    err.message.startsWith('tcp-connect: no local port number supplied when local hostname was supplied'));
});

test('an unknown handle is not-found', async (t) => {
  const broker = await sessions(t)();
  await assert.rejects(broker.describe('lst_nope'), (err) => err instanceof sb.NotFoundError && err.code === 'NOT_FOUND');
  // Another session's handle is not-found too.
  const other = await sessions(t)();
  const listener = await other.tcpListen(0, 4, false, '127.0.0.1');
  await assert.rejects(broker.tcpAcceptReady(listener.handle), sb.NotFoundError);
});

test('a wrong token is unauthenticated; a missing token file is TokenFileError; no daemon is BrokerUnavailableError', async (t) => {
  await assert.rejects(sb.Broker.connect(undefined, { token: 'wrong' }), (err) =>
    err instanceof sb.UnauthenticatedError && err.code === 'UNAUTHENTICATED');
  const missing = path.join(os.tmpdir(), `sockbroker-node-${process.pid}`, 'token');
  await assert.rejects(sb.Broker.connect(undefined, { tokenFile: missing }), (err) => {
    assert.ok(err instanceof sb.TokenFileError && err instanceof sb.UnauthenticatedError);
    assert.equal(err.errno, 2);
    assert.match(err.message, /no such file or directory/);
    return true;
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockbroker-node-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'empty'), '  \n');
  await assert.rejects(sb.Broker.connect(undefined, { tokenFile: path.join(dir, 'empty') }), /is empty/);
  const port = await closedPort();
  await assert.rejects(sb.Broker.connect(`127.0.0.1:${port}`), (err) => {
    assert.ok(err instanceof sb.BrokerUnavailableError);
    assert.equal(err.kind, 'unavailable');
    assert.match(err.message, new RegExp(`^no sockbroker daemon answers at 127\\.0\\.0\\.1:${port}: `));
    return true;
  });
});
