'use strict';
// The Node driver of the conformance scenarios (tests/conformance/README.md is the contract):
// every scenario of scenarios.json through this client over gRPC, one test per scenario,
// named by its id. This client has every capability, so nothing is unsupported.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const sb = require('..');
const { within } = require('./helpers');

const FILE = process.env.SOCKBROKER_CONFORMANCE
  || path.resolve(__dirname, '..', '..', '..', 'tests', 'conformance', 'scenarios.json');
const spec = JSON.parse(fs.readFileSync(FILE, 'utf8'));
assert.equal(spec.version, 1, `${FILE}: version ${spec.version} is not 1`);
const UNSUPPORTED = [];

const pair = (ports) => ports && [ports[0], ports[1]];
const done = async (promise) => { await promise; return null; };
const udpGot = (d) => (d ? [d.count, d.host, d.port, d.data] : [false, false, false, false]);

// The port functions are methods of the port classes; called on whatever handle the scenario
// passes (an input port to write-bytes), so the daemon answers a wrong kind with its contract error.
const IN = sb.InputPort.prototype;
const OUT = sb.OutputPort.prototype;

/** Operation → client call, arguments in Racket's order (README "Operations"). */
const OPS = {
  'tcp-listen': (b, o, port, backlog = 4, reuse = false, hostname = null) => b.tcpListen(port, backlog, reuse, hostname, o),
  'tcp-connect': async (b, o, host, port, lh = null, lp = null) => pair(await b.tcpConnect(host, port, lh, lp, o)),
  'tcp-accept': async (b, o, l) => pair(await b.tcpAccept(l, o)),
  'tcp-accept-ready?': (b, o, l) => b.tcpAcceptReady(l),
  'tcp-close': (b, o, l) => done(b.tcpClose(l)),
  'tcp-addresses': (b, o, h, portNumbers = false) => b.tcpAddresses(h, portNumbers),
  'tcp-listener?': (b, o, h) => b.tcpListener(h),
  'tcp-port?': (b, o, h) => b.tcpPort(h),
  'read-bytes': (b, o, n, p) => IN.readBytes.call(p, n),
  'read-bytes-avail!': (b, o, n, p) => IN.readBytesAvail.call(p, n),
  'read-bytes-avail!*': (b, o, n, p) => IN.readBytesAvailNowait.call(p, n),
  'peek-bytes-avail!': (b, o, n, p) => IN.peekBytesAvail.call(p, n),
  'write-bytes': (b, o, data, p) => OUT.writeBytes.call(p, data),
  'flush-output': (b, o, p) => done(OUT.flushOutput.call(p)),
  'close-input-port': (b, o, p) => done(sb.Port.prototype.close.call(p)),
  'close-output-port': (b, o, p) => done(sb.Port.prototype.close.call(p)),
  'udp-open-socket': (b, o, host = null, port = null) => b.udpOpenSocket(host, port, o),
  'udp-bind!': (b, o, s, host, port, reuse = false) => done(b.udpBind(s, host, port, reuse)),
  'udp-connect!': (b, o, s, host, port) => done(b.udpConnect(s, host, port)),
  'udp-send-to': (b, o, s, host, port, data) => done(b.udpSendTo(s, host, port, data)),
  'udp-send': (b, o, s, data) => done(b.udpSend(s, data)),
  'udp-receive!': async (b, o, s, max) => udpGot(await b.udpReceive(s, max)),
  'udp-receive!*': async (b, o, s, max) => udpGot(await b.udpReceiveNowait(s, max)),
  'udp-close': (b, o, s) => done(b.udpClose(s)),
  'udp-bound?': (b, o, s) => b.udpBound(s),
  'udp-connected?': (b, o, s) => b.udpConnected(s),
  'udp-addresses': (b, o, s, portNumbers = false) => b.udpAddresses(s, portNumbers),
  'make-custodian': (b, o, parent = null) => b.makeCustodian(parent),
  'custodian-shutdown-all': (b, o, c) => done(b.custodianShutdownAll(c)),
  'tcp-accept-evt': (b, o, l) => sb.tcpAcceptEvt(l),
  'udp-receive-ready-evt': (b, o, s) => sb.udpReceiveReadyEvt(s),
  'sync/timeout': async (b, o, seconds, ...evts) => {
    const chosen = await b.syncTimeout(seconds, ...evts);
    if (chosen === null) return false;
    return typeof chosen.result === 'string' ? true : chosen.result; // a ready event syncs to true
  },
};

const TYPES = {
  listener: (v) => v instanceof sb.Listener,
  'input-port': (v) => v instanceof sb.InputPort,
  'output-port': (v) => v instanceof sb.OutputPort,
  udp: (v) => v instanceof sb.UdpSocket,
  custodian: (v) => v instanceof sb.Custodian,
  event: (v) => v instanceof sb.Evt,
  boolean: (v) => typeof v === 'boolean',
  integer: (v) => Number.isInteger(v),
  string: (v) => typeof v === 'string',
  bytes: (v) => Buffer.isBuffer(v),
  'port-number': (v) => Number.isInteger(v) && v >= 1 && v <= 65535,
};

function show(v) {
  if (v === sb.EOF) return 'eof';
  if (Buffer.isBuffer(v)) return `bytes ${JSON.stringify(v.toString('latin1'))}`;
  if (v instanceof sb.Handle) return `${v.constructor.name} ${v.handle}`;
  if (Array.isArray(v)) return `[${v.map(show).join(', ')}]`;
  return JSON.stringify(v);
}

async function localPort(broker, env, name) {
  if (!(name in env)) throw new Error(`unbound name ${name}`);
  return (await broker.tcpAddresses(env[name], true))[1];
}

async function evaluate(broker, env, expr) {
  if (expr === null || typeof expr !== 'object') return expr;
  if ('ref' in expr) {
    if (!(expr.ref in env)) throw new Error(`unbound name ${expr.ref}`);
    return env[expr.ref];
  }
  if ('port-of' in expr) return localPort(broker, env, expr['port-of']);
  if ('bytes' in expr) return Buffer.from(expr.bytes, 'utf8');
  if ('hex' in expr) return Buffer.from(expr.hex, 'hex');
  if ('random' in expr) {
    const bytes = crypto.randomBytes(expr.random);
    if (expr.as) env[expr.as] = bytes;
    return bytes;
  }
  throw new Error(`unknown expression ${JSON.stringify(expr)}`);
}

function equal(a, b) {
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  if (a instanceof sb.Handle && b instanceof sb.Handle) return a.handle === b.handle;
  return a === b;
}

/** Why `value` does not match `expect`, or null when it does. */
async function mismatch(broker, env, expect, value) {
  if (expect === null) return value === null ? null : `expected null, got ${show(value)}`;
  if (typeof expect !== 'object') return value === expect ? null : `expected ${JSON.stringify(expect)}, got ${show(value)}`;
  if (Array.isArray(expect)) {
    if (!Array.isArray(value) || value.length !== expect.length) return `expected a list of ${expect.length}, got ${show(value)}`;
    for (let i = 0; i < expect.length; i += 1) {
      const why = await mismatch(broker, env, expect[i], value[i]);
      if (why) return `[${i}]: ${why}`;
    }
    return null;
  }
  if ('eof' in expect) return value === sb.EOF ? null : `expected eof, got ${show(value)}`;
  if ('type' in expect) return TYPES[expect.type](value) ? null : `expected a ${expect.type}, got ${show(value)}`;
  const wanted = await evaluate(broker, env, expect);
  return equal(wanted, value) ? null : `expected ${show(wanted)}, got ${show(value)}`;
}

function errorMismatch(expected, err) {
  if (!(err instanceof sb.BrokerError)) return `expected error ${expected.kind}, got ${err}`;
  const got = `${err.kind}: ${err.message.split('\n')[0]}`;
  if (err.kind !== expected.kind) return `expected error ${expected.kind}, got ${got}`;
  if (expected.errno && (err.errno !== expected.errno[0] || err.errnoFamily !== expected.errno[1])) {
    return `expected errno ${expected.errno}, got ${err.errno} ${err.errnoFamily}`;
  }
  if (expected.message !== undefined && err.message.split('\n')[0] !== expected.message) {
    return `expected message ${JSON.stringify(expected.message)}, got ${JSON.stringify(err.message.split('\n')[0])}`;
  }
  return null;
}

async function runStep(broker, env, step) {
  const op = OPS[step.op];
  if (!op) throw new Error(`unknown op ${step.op}`);
  const args = [];
  for (const expr of step.args || []) args.push(await evaluate(broker, env, expr));
  const opts = step.custodian === undefined ? undefined : { custodian: await evaluate(broker, env, step.custodian) };
  const expectError = step.expect && typeof step.expect === 'object' && 'error' in step.expect;
  let value;
  try {
    value = await op(broker, opts, ...args);
  } catch (err) {
    if (expectError) return errorMismatch(step.expect.error, err);
    return `raised ${err.kind || err.name}: ${err.message}`;
  }
  if (expectError) return `expected error ${step.expect.error.kind}, got ${show(value)}`;
  if (Array.isArray(step.as)) step.as.forEach((name, i) => { if (name !== null) env[name] = value[i]; });
  else if (step.as) env[step.as] = value;
  return step.expect === undefined ? null : mismatch(broker, env, step.expect, value);
}

for (const scenario of spec.scenarios) {
  const missing = scenario.needs.filter((n) => UNSUPPORTED.includes(n));
  test(scenario.id, { skip: missing.length && !scenario.required ? `unsupported: ${missing.join(', ')}` : false }, async () => {
    assert.equal(missing.length, 0, `unsupported but required: ${missing.join(', ')}`);
    const broker = await sb.Broker.connect();
    try {
      const env = {};
      for (const [index, step] of scenario.steps.entries()) {
        const why = await within(spec.step_timeout_seconds * 1000, runStep(broker, env, step), `step ${index}`)
          .catch((err) => `${err.message}`);
        assert.equal(why, null, `step ${index} (${step.op}): ${why}`);
      }
    } finally {
      await broker.close().catch(() => {});
    }
  });
}
