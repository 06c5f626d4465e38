// A first session in TypeScript: checked with `tsc --noEmit -p test/tsconfig.json` (the pytest
// wrapper runs it), so the shipped index.d.ts must describe what lib/ exports.
import {
  Admin, AdminEvent, Broker, BrokerError, DelegateOptions, HandleInfo, KillReply, PermissionDeniedError, SessionSummary, EOF, InputPort, Listener, NetworkErrnoError, NotFoundError, OutputPort,
  PortStream, Resumption, UdpSocket, ReceivedDatagram, tcpAcceptEvt, udpReceiveEvt,
} from '..';

async function main(): Promise<void> {
  const broker: Broker = await Broker.connect(undefined, { attach: true });
  const listener = await broker.tcpListen(0, 4, false, '127.0.0.1');
  const [, port] = await listener.addresses(true);
  const [ci, co]: [InputPort, OutputPort] = await broker.tcpConnect('127.0.0.1', port, null, null, { timeout: 5 });
  const accepted = await listener.accept({ timeout: 5 });
  if (accepted === null) throw new Error('no client');
  const [si, so] = accepted;
  const written: number = await co.write('hello', { flush: true });
  const data = await si.readBytes(written);
  if (data !== EOF) console.log(data.toString('utf8'));
  await so.close();
  const stream: PortStream = broker.tcpStream(ci);
  stream.end(Buffer.from('bye'));

  const sock: UdpSocket = await broker.udpOpenSocket();
  await sock.bind('127.0.0.1', 0);
  const sent: boolean = await sock.sendTo('127.0.0.1', 9, 'x', 0, 1, { wait: false });
  const got: ReceivedDatagram | null = await sock.receive(100, { timeout: 0.1 });
  for await (const d of sock.receiveStream(1500)) {
    console.log(d.host, d.port, d.data.length, sent, got?.count);
    break;
  }
  const count: number = await sock.sendStream([['a', '127.0.0.1', 9], { data: Buffer.from('b'), host: '127.0.0.1', port: 9 }]);
  const chosen = await broker.syncTimeout(0, tcpAcceptEvt(listener), udpReceiveEvt(sock, 10));
  if (chosen) console.log(chosen.index, chosen.result, count);

  try {
    await broker.tcpConnect('127.0.0.1', 1);
  } catch (err) {
    if (err instanceof NetworkErrnoError) console.log(err.kind, err.errno, err.errnoFamily, err.code);
    else if (err instanceof BrokerError) console.log(err.kind);
  }
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 10);
  await listener.accept({ signal: controller.signal }).catch(() => null);
  await listener.close();
  const description = await sock.describe();
  console.log(description.kind, description.bound, description.family);
  await broker.close();

  // A session that survives a crash, and a sandboxed child's token.
  const graced = await Broker.connect(null, { graceSeconds: 30 });
  const sandbox = await graced.makeCustodian();
  const narrow: DelegateOptions = { expiresSeconds: 60, allowConnect: ['127.0.0.1/32'], allowPorts: ['8000-8100'] };
  const token: string = await sandbox.delegate(narrow);
  const child = await Broker.connect(null, { token });
  console.log(child.session, await graced.delegate(graced.custodian, { expiresSeconds: 1, allowHandoff: false }));
  const resumption: Resumption = graced.resumption;
  const kept: string = (await graced.tcpListen(0, 4, false, '127.0.0.1')).handle;
  await graced.abandon();
  try {
    const back = await Broker.connect(null, { resume: resumption });
    console.log(back.graceSeconds, back.resumeToken, await new Listener(back, kept).acceptReady());
  } catch (err) {
    if (err instanceof NotFoundError) console.log('too late');
  }

  // The admin API: no session of its own, only an admin principal's token.
  await using admin = await Admin.connect(null, { tokenFile: process.env.SOCKBROKER_TOKEN_FILE });
  const sessions: SessionSummary[] = await admin.listSessions({ principal: 'default' });
  for (const summary of sessions) {
    const { custodians } = await admin.describeSession(summary.session);
    const handles: HandleInfo[] = custodians.flatMap((c) => c.handles);
    const moved: number = handles.reduce((sum, info) => sum + (info.bytesIn ?? 0), 0);
    console.log(summary.principal, summary.bytesIn + summary.bytesOut, moved, handles[0]?.remotePort);
  }
  const killed: KillReply = await admin.killHandle(kept, { reason: 'stuck peer' });
  console.log(killed.session, killed.closed, (await admin.killSession(child.session)).closed);
  const stop = new AbortController();
  try {
    for await (const event of admin.watchEvents({ signal: stop.signal })) {
      const seen: AdminEvent = event;
      if (seen.event === 'session.drop') break;
    }
  } catch (err) {
    if (err instanceof PermissionDeniedError) console.log('not an admin');
  }
}

void main();
