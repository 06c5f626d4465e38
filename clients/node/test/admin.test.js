'use strict';
// The admin API (docs/admin.md) against the wrapper's daemon: its token file's principal is an
// admin; SOCKBROKER_TEST_VIEWER_TOKEN is the token of one that is not.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const sb = require('..');
const { sessions, within, readAll } = require('./helpers');

if (!process.env.SOCKBROKER_TEST_VIEWER_TOKEN) {
  throw new Error('set SOCKBROKER_TEST_VIEWER_TOKEN to a non-admin principal\'s token (tests/node/test_node_client.py does)');
}

/** An admin client, closed after the test. */
async function admin(t, options) {
  const made = await sb.Admin.connect(undefined, options);
  t.after(() => made.close());
  return made;
}

/** A connection of `broker` to its own listener on 127.0.0.1, with 5 bytes sent one way and 3
 * the other, every one of them read: {listener, port, client: [in, out], server: [in, out]}. */
async function traffic(broker) {
  const listener = await broker.tcpListen(0, 4, false, '127.0.0.1');
  const [, port] = await listener.addresses(true);
  const [ci, co] = await broker.tcpConnect('127.0.0.1', port, null, null, { timeout: 5 });
  const [si, so] = await listener.accept({ timeout: 5 });
  await co.write('hello', { flush: true });
  assert.equal((await si.readBytes(5, { timeout: 5 })).toString(), 'hello');
  await so.write('hi!', { flush: true });
  assert.equal((await ci.readBytes(3, { timeout: 5 })).toString(), 'hi!');
  return { listener, port, client: [ci, co], server: [si, so] };
}

/** The next event of `events` whose `session` is `session`, bounded in time. */
async function nextOf(events, session) {
  return within(10000, (async () => {
    for (;;) {
      const { value, done } = await events.next();
      if (done) throw new Error('the event stream ended');
      if (value.session === session) return value;
    }
  })(), `an event of ${session}`);
}

test('listSessions shows a session opened with Broker.connect: its principal, state and handles', async (t) => {
  const broker = await sessions(t)();
  const a = await admin(t);
  const find = async (options) => (await a.listSessions(options)).find((s) => s.session === broker.session);
  const before = await find();
  assert.ok(before, 'the session is listed');
  assert.equal(before.principal, 'default');
  assert.equal(before.custodian, broker.custodian.handle);
  assert.equal(before.state, 'attached');
  assert.equal(before.attachments, 1);
  assert.equal(before.handles, 1, 'the root custodian');
  assert.equal(before.bytesIn, 0);
  assert.ok(before.openedAt > 0 && before.ageSeconds >= 0 && before.leaseSeconds > 0);
  await broker.tcpListen(0, 4, false, '127.0.0.1');
  await broker.makeCustodian();
  assert.equal((await find({ principal: 'default' })).handles, 3);
  assert.equal(await find({ principal: 'viewer' }), undefined);
});

test('describeSession shows the custodian tree, each handle with its kind, addresses and bytes', async (t) => {
  const broker = await sessions(t)();
  const a = await admin(t);
  const { listener, port, client: [ci, co], server: [si, so] } = await traffic(broker);
  const child = await broker.makeCustodian();
  const sock = await broker.udpOpenSocket('127.0.0.1', null, { custodian: child });
  await sock.bind('127.0.0.1', 0);

  const { summary, custodians } = await a.describeSession(broker.session);
  assert.equal(summary.session, broker.session);
  assert.equal(summary.handles, 8); // two custodians, a listener, four ports, a UDP socket
  assert.equal(summary.bytesIn, 8);
  assert.equal(summary.bytesOut, 8);
  assert.deepEqual(custodians.map((c) => [c.custodian, c.parent, c.depth]), [
    [broker.custodian.handle, '', 0], [child.handle, broker.custodian.handle, 1],
  ]);
  const info = Object.fromEntries(custodians.flatMap((c) => c.handles).map((h) => [h.handle, h]));
  assert.equal(Object.keys(info).length, 6);

  const l = info[listener.handle];
  assert.deepEqual([l.kind, l.state, l.closed, l.localHost, l.localPort], ['tcp-listener', 'listening', false, '127.0.0.1', port]);
  assert.ok(!('remoteHost' in l) && !('bytesIn' in l) && !('channel' in l), 'members a listener does not have are absent');

  for (const [handle, kind, bytesIn, bytesOut] of [
    [ci, 'tcp-input-port', 3, 5], [co, 'tcp-output-port', 3, 5], [si, 'tcp-input-port', 5, 3], [so, 'tcp-output-port', 5, 3],
  ]) {
    const h = info[handle.handle];
    assert.equal(h.kind, kind);
    assert.equal(h.state, 'open');
    assert.equal(typeof h.bytesIn, 'number');
    assert.deepEqual([h.bytesIn, h.bytesOut], [bytesIn, bytesOut], `${kind} ${handle}`);
    assert.ok(!('datagramsIn' in h));
  }
  const [, clientPort, , serverPort] = await ci.addresses(true);
  assert.deepEqual([info[ci.handle].localPort, info[ci.handle].remoteHost, info[ci.handle].remotePort], [clientPort, '127.0.0.1', port]);
  assert.equal(serverPort, port);
  assert.deepEqual([info[si.handle].localPort, info[si.handle].remotePort], [port, clientPort]);

  const u = info[sock.handle];
  assert.deepEqual([u.kind, u.state, u.localHost, u.datagramsIn, u.datagramsOut, u.bytesIn], ['udp', 'bound', '127.0.0.1', 0, 0, 0]);
  assert.ok(!('remoteHost' in u));
});

test('killHandle closes a port\'s connection as its custodian\'s shutdown would; the peer sees EOF', async (t) => {
  const broker = await sessions(t)();
  const a = await admin(t);
  const { client: [ci, co], server: [si] } = await traffic(broker);
  assert.deepEqual(await a.killHandle(co, { reason: 'stuck peer' }), { session: broker.session, closed: 2 });
  assert.equal(await si.readBytesAvail(10, { timeout: 5 }), sb.EOF, 'the other end sees EOF');
  assert.equal((await ci.describe()).closed, true);
  await assert.rejects(co.write('x'), sb.FailError, 'a write on the killed port fails');
  const left = (await a.describeSession(broker.session)).custodians[0].handles.map((h) => h.handle);
  assert.ok(!left.includes(ci.handle) && !left.includes(co.handle), 'the killed connection is no longer held');
  assert.ok(left.includes(si.handle));
  assert.deepEqual(await a.killHandle(co.handle), { session: broker.session, closed: 0 }, 'again: nothing left to close');
  await broker.keepAlive(); // the session lives on
});

test('killSession drops the session: its sockets close, and its next call is NotFoundError', async (t) => {
  const broker = await sessions(t)();
  const a = await admin(t);
  const listener = await broker.tcpListen(0, 4, false, '127.0.0.1');
  const [, port] = await listener.addresses(true);
  const net = require('node:net');
  const socket = net.connect(port, '127.0.0.1');
  await within(5000, new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject)), 'connect');
  await listener.accept({ timeout: 5 });
  const eof = readAll(socket);
  assert.deepEqual(await a.killSession(broker.session, { reason: 'runaway client' }), { session: broker.session, closed: 4 });
  await eof;
  await assert.rejects(broker.keepAlive(), sb.NotFoundError);
  await assert.rejects(broker.tcpListen(0, 4, false, '127.0.0.1'), sb.NotFoundError);
  assert.equal((await a.listSessions()).find((s) => s.session === broker.session), undefined);
  await assert.rejects(a.describeSession(broker.session), sb.NotFoundError);
  await assert.rejects(a.killHandle(listener), sb.NotFoundError, 'its handles are gone with it');
});

test('watchEvents sees a later session open and drop, in order, and ends when the loop breaks', async (t) => {
  const a = await admin(t);
  const events = a.watchEvents();
  const first = await within(10000, events.next(), 'events.watch');
  assert.equal(first.value.event, 'events.watch');
  assert.equal(first.value.principal, 'default');
  const broker = await sb.Broker.connect();
  const opened = await nextOf(events, broker.session);
  assert.deepEqual([opened.event, opened.principal, opened.target], ['session.open', 'default', broker.custodian.handle]);
  assert.ok(opened.time > 0);
  await a.killSession(broker.session, { reason: 'watched' });
  const kill = await nextOf(events, broker.session);
  assert.deepEqual([kill.event, kill.target, kill.reason], ['admin.kill_session', broker.session, 'watched']);
  const drop = await nextOf(events, broker.session);
  assert.deepEqual([drop.event, drop.reason], ['session.drop', 'killed by admin default: watched']);
  await broker.close();

  // for await … break: the stream ends, and the loop is left at once.
  const other = await sb.Broker.connect();
  let seen = null;
  for await (const event of a.watchEvents()) {
    if (event.event === 'events.watch') await other.close();
    if (event.session === other.session && event.event === 'session.drop') {
      seen = event;
      break;
    }
  }
  assert.equal(seen.reason, 'closed by the client');
});

test('return(), close() and an AbortSignal end a watch whose next() is waiting', async (t) => {
  const a = await admin(t);
  // return() while next() waits for an event that may never come: both settle at once.
  const events = a.watchEvents();
  assert.equal((await within(10000, events.next())).value.event, 'events.watch');
  const pending = events.next();
  assert.deepEqual(await within(5000, events.return()), { value: undefined, done: true });
  assert.deepEqual(await within(5000, pending), { value: undefined, done: true });
  assert.deepEqual(await events.next(), { value: undefined, done: true });

  // An abort breaks it: BreakError.
  const controller = new AbortController();
  const broken = a.watchEvents({ signal: controller.signal });
  await within(10000, broken.next());
  const waiting = broken.next();
  controller.abort();
  await within(5000, assert.rejects(waiting, (err) => err instanceof sb.BreakError && err.code === 'CANCELLED'));
  const aborted = a.watchEvents({ signal: controller.signal });
  await assert.rejects(aborted.next(), (err) => err instanceof sb.BreakError && err.code === null, 'already aborted: not started');

  // A watch never started sends nothing and ends at return().
  assert.deepEqual(await a.watchEvents().return(), { value: undefined, done: true });

  // close() ends the watches under way, and later calls fail.
  const closing = await admin(t);
  const watched = closing.watchEvents();
  await within(10000, watched.next());
  const last = watched.next();
  await closing.close();
  assert.deepEqual(await within(5000, last), { value: undefined, done: true });
  await closing.close();
  await assert.rejects(closing.listSessions(), sb.FailError);
  assert.throws(() => closing.watchEvents(), sb.FailError);
});

test('unknown ids are NotFoundError; empty ids, unknown options and wrong types are ContractError', async (t) => {
  const broker = await sessions(t)();
  const a = await admin(t);
  for (const [call, id, message] of [
    [(x) => a.describeSession(x), 'ses_nothing', 'admin-describe-session: no such session'],
    [(x) => a.killSession(x), 'ses_nothing', 'admin-kill-session: no such session'],
    [(x) => a.killHandle(x), 'tin_nothing', 'admin-kill-handle: no such handle'],
  ]) {
    await assert.rejects(call(id), (err) => {
      assert.ok(err instanceof sb.NotFoundError);
      assert.equal(err.code, 'NOT_FOUND');
      assert.equal(err.message.split('\n')[0], message);
      return true;
    });
  }
  // Refused here, before the wire (code null).
  const here = (err) => err instanceof sb.ContractError && err.code === null;
  for (const call of [
    () => a.describeSession(''), () => a.killSession(''), () => a.killHandle(''), () => a.describeSession(),
    () => a.killSession(42), () => a.killHandle(null), () => a.listSessions({ princpal: 'default' }),
    () => a.listSessions({ principal: 5 }), () => a.killSession(broker.session, { reason: 7 }),
    () => a.killHandle(broker.custodian, { why: 'x' }), () => a.listSessions('default'),
    () => sb.Admin.connect(undefined, { attach: true }),
  ]) {
    await assert.rejects(call(), here, String(call));
  }
  await assert.rejects(a.describeSession(''), (err) => {
    assert.equal(err.message, 'admin-describe-session: contract violation\n  expected: session-id?\n  given: ""');
    return true;
  });
  assert.throws(() => a.watchEvents({ signl: null }), here);
  // Refused by the daemon: a reason over 1,000 characters; nothing was killed.
  await assert.rejects(a.killSession(broker.session, { reason: 'x'.repeat(1001) }), (err) => err instanceof sb.ContractError && err.code === 'INVALID_ARGUMENT');
  await broker.keepAlive();
});

test('a principal that is not an admin gets PermissionDeniedError on every admin call', async (t) => {
  const token = process.env.SOCKBROKER_TEST_VIEWER_TOKEN;
  const mine = await sessions(t)({ token });
  const a = await admin(t);
  const listed = (await a.listSessions({ principal: 'viewer' })).map((s) => [s.session, s.principal]);
  assert.deepEqual(listed, [[mine.session, 'viewer']]);

  const denied = await admin(t, { token });
  const watch = a.watchEvents();
  await within(10000, watch.next());
  for (const call of [
    () => denied.listSessions(), () => denied.describeSession(mine.session), () => denied.killSession(mine.session),
    () => denied.killHandle(mine.custodian), () => denied.watchEvents().next(),
  ]) {
    await assert.rejects(call(), (err) => {
      assert.ok(err instanceof sb.PermissionDeniedError, String(err));
      assert.equal(err.code, 'PERMISSION_DENIED');
      return true;
    }, String(call));
  }
  const deny = await within(10000, (async () => {
    for (;;) {
      const { value } = await watch.next();
      if (value.event === 'admin.deny') return value;
    }
  })(), 'the admin.deny event');
  assert.deepEqual([deny.principal, deny.operation], ['viewer', 'admin-list-sessions']);
  await watch.return();
  await mine.keepAlive(); // nothing was killed
});

test('Admin.connect finds the token file as Broker.connect does; a wrong token is UnauthenticatedError', async (t) => {
  const a = await admin(t, { tokenFile: process.env.SOCKBROKER_TOKEN_FILE });
  assert.equal(a.target, process.env.SOCKBROKER_GRPC);
  assert.ok(Array.isArray(await a.listSessions()));
  const wrong = await admin(t, { token: 'not-a-token' });
  await assert.rejects(wrong.listSessions(), sb.UnauthenticatedError);
  await assert.rejects(sb.Admin.connect(undefined, { tokenFile: '/nonexistent/token' }), sb.TokenFileError);
  if (Symbol.asyncDispose) {
    const disposed = await sb.Admin.connect();
    await disposed[Symbol.asyncDispose]();
    await assert.rejects(disposed.listSessions(), sb.FailError);
  }
});
