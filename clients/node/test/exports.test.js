'use strict';
// The shipped types and the JavaScript agree on what exists, and every RPC of broker.proto and
// admin.proto is reachable through a named method (docs/naming.md).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const sb = require('..');
const { METHODS, ADMIN_METHODS } = require('../lib/proto');

const dts = fs.readFileSync(path.join(__dirname, '..', 'index.d.ts'), 'utf8');

test('index.d.ts declares exactly what lib/index.js exports', () => {
  const declared = [...dts.matchAll(/^export declare (?:abstract )?(?:class|function|const) (\w+)/gm)].map((m) => m[1]);
  assert.deepEqual([...declared].sort(), Object.keys(sb).sort());
});

for (const cls of ['Broker', 'Admin']) {
  test(`index.d.ts declares ${cls}'s methods, and each exists`, () => {
    const start = dts.indexOf(`export declare class ${cls} {`);
    const body = dts.slice(start, dts.indexOf('\n}\n', start));
    const declared = new Set([...body.matchAll(/^ {2}(\w+)\(/gm)].map((m) => m[1]));
    const { prototype } = sb[cls];
    const actual = Object.getOwnPropertyNames(prototype).filter((n) => n !== 'constructor' && !n.startsWith('_'));
    assert.ok(declared.size > 0);
    for (const name of declared) assert.equal(typeof prototype[name], 'function', name);
    for (const name of actual) {
      if (typeof Object.getOwnPropertyDescriptor(prototype, name).value === 'function') {
        assert.ok(declared.has(name), `${name} is not in index.d.ts`);
      }
    }
  });
}

// RPC → the method that makes it (on the broker, or on a handle class).
const REACHED_BY = {
  'Sessions.Open': 'Broker.connect', 'Sessions.Attach': 'Broker.connect', 'Sessions.KeepAlive': 'keepAlive',
  'Sessions.Close': 'close', 'Sessions.CancelCall': 'cancelCall', 'Sessions.Resume': 'Broker.connect',
  'Custodians.Create': 'makeCustodian', 'Custodians.Shutdown': 'custodianShutdownAll',
  'Custodians.Describe': 'describeCustodian', 'Custodians.Delegate': 'delegate',
  'Tcp.Listen': 'tcpListen', 'Tcp.Connect': 'tcpConnect', 'Tcp.Accept': 'tcpAccept',
  'Tcp.AcceptReady': 'tcpAcceptReady', 'Tcp.Close': 'tcpClose', 'Tcp.AbandonPort': 'tcpAbandonPort',
  'Handles.Addresses': 'tcpAddresses', 'Handles.Describe': 'describe',
  'Ports.Read': 'InputPort.read', 'Ports.Write': 'OutputPort.write', 'Ports.Flush': 'OutputPort.flush',
  'Ports.SetBufferMode': 'Port.setBufferMode', 'Ports.Close': 'Port.close', 'Ports.Stream': 'tcpStream',
  'Ports.OpenChannel': 'openChannel', 'Udp.OpenChannel': 'udpOpenChannel',
  'Udp.Open': 'udpOpenSocket', 'Udp.Bind': 'udpBind', 'Udp.Connect': 'udpConnect', 'Udp.SendTo': 'udpSendTo',
  'Udp.Send': 'udpSend', 'Udp.Receive': 'udpReceive', 'Udp.SetReceiveBufferSize': 'udpSetReceiveBufferSize',
  'Udp.Close': 'udpClose', 'Udp.SetTtl': 'udpSetTtl', 'Udp.GetTtl': 'udpTtl',
  'Udp.MulticastJoin': 'udpMulticastJoinGroup', 'Udp.MulticastLeave': 'udpMulticastLeaveGroup',
  'Udp.GetMulticastInterface': 'udpMulticastInterface', 'Udp.SetMulticastInterface': 'udpMulticastSetInterface',
  'Udp.GetMulticastLoopback': 'udpMulticastLoopback', 'Udp.SetMulticastLoopback': 'udpMulticastSetLoopback',
  'Udp.GetMulticastTtl': 'udpMulticastTtl', 'Udp.SetMulticastTtl': 'udpMulticastSetTtl',
  'Udp.ReceiveStream': 'UdpSocket.receiveStream', 'Udp.SendStream': 'UdpSocket.sendStream',
  'Events.Sync': 'sync',
};

test('every RPC of broker.proto has a method', () => {
  assert.deepEqual(Object.keys(REACHED_BY).sort(), [...METHODS.keys()].sort());
  for (const [rpc, where] of Object.entries(REACHED_BY)) {
    const [owner, name] = where.includes('.') ? where.split('.') : ['Broker', where];
    const cls = sb[owner];
    const found = owner === 'Broker' && name === 'connect' ? cls.connect : cls.prototype[name];
    assert.equal(typeof found, 'function', `${rpc}: ${where}`);
  }
});

test('every RPC of admin.proto has a method of Admin', () => {
  const reachedBy = {
    'Admin.ListSessions': 'listSessions', 'Admin.DescribeSession': 'describeSession',
    'Admin.KillSession': 'killSession', 'Admin.KillHandle': 'killHandle', 'Admin.WatchEvents': 'watchEvents',
  };
  assert.deepEqual(Object.keys(reachedBy).sort(), [...ADMIN_METHODS.keys()].sort());
  for (const name of Object.values(reachedBy)) assert.equal(typeof sb.Admin.prototype[name], 'function', name);
});

test('events are Evt objects naming one member of the proto Event oneof', () => {
  const evt = sb.udpSendToEvt('udp_x', '127.0.0.1', 9, 'hi', null, undefined);
  assert.ok(evt instanceof sb.Evt);
  assert.equal(evt.kind, 'udpSendTo');
  assert.deepEqual(evt.args, { udp: 'udp_x', hostname: '127.0.0.1', port: 9, data: Buffer.from('hi') });
});
