'use strict';
// The session object and the handle objects: Racket's racket/tcp and racket/udp, named by one
// rule (docs/naming.md): the Racket name in camelCase, `!` and `?` dropped, `*` written as
// `Nowait`. So tcp-accept-ready? → tcpAcceptReady, udp-receive!* → udpReceiveNowait,
// read-bytes-avail!* → readBytesAvailNowait. A handle has the same methods without the
// tcp/udp prefix its type already says (listener.acceptReady(), sock.sendTo(…)). Racket's
// positional arguments stay positional; the daemon's extras (custodian, timeout, and an
// AbortSignal to break a blocking call) come last in an options object.

const grpc = require('@grpc/grpc-js');
const { METHODS } = require('./proto');
const errors = require('./errors');
const { PortStream, receiveDatagrams, outgoing } = require('./streams');
const files = require('./files');
const { redeem } = require('./channel');

const { BreakError, ContractError, FailError, NetworkError, NotFoundError, contractViolation, errorFromGrpc } = errors;

/** What a read returns at end of file (distinct from zero bytes), as Racket's eof. */
const EOF = Symbol.for('sockbroker.eof');

function checkRelay(who, mode) {
  if (mode !== 'relay') {
    throw new ContractError(`${who}: mode ${JSON.stringify(mode)}: this client opens relays only (a hand-off passes a descriptor over SCM_RIGHTS, which node:net cannot receive)`);
  }
}

const INT32 = 2 ** 31;
const CHECKS = {
  TYPE_STRING: ['a string', (v) => typeof v === 'string'],
  TYPE_BOOL: ['a boolean', (v) => typeof v === 'boolean'],
  TYPE_DOUBLE: ['a finite number', (v) => typeof v === 'number' && Number.isFinite(v)],
  TYPE_INT32: ['an integer (32 bits)', (v) => Number.isInteger(v) && v >= -INT32 && v < INT32],
  TYPE_UINT32: ['an integer (32 bits)', (v) => Number.isInteger(v) && v >= 0 && v < 2 * INT32],
  TYPE_INT64: ['a safe integer', (v) => Number.isSafeInteger(v)],
  TYPE_BYTES: ['a Buffer, Uint8Array or string', (v) => typeof v === 'string' || v instanceof Uint8Array],
};

/** A handle object as its handle string. */
function h(value) {
  return value instanceof Handle ? value.handle : value;
}

/** The request of `method` from `args`: handle objects as strings, strings as UTF-8 bytes where
 * the proto wants bytes; an unknown argument or a value of the wrong type is a ContractError
 * here, before the wire. Absent (undefined or null) means the proto's default. */
function request(method, def, args) {
  if (args === null || typeof args !== 'object' || Array.isArray(args)) {
    throw contractViolation(method, 'an object of arguments', args);
  }
  const out = {};
  for (const [key, raw] of Object.entries(args)) {
    if (!def.fields.has(key)) {
      throw new ContractError(`${method}: unknown argument\n  argument: ${key}\n  expected one of: ${[...def.fields].join(', ')}`);
    }
    const value = h(raw);
    if (value === undefined || value === null) continue;
    const field = def.requestType.type.field.find((f) => camel(f.name) === key);
    const check = CHECKS[field.type];
    if (field.label === 'LABEL_REPEATED') {
      if (!Array.isArray(value)) throw contractViolation(method, `an array for ${key}`, raw);
      if (check && !value.every(check[1])) throw contractViolation(method, `${check[0]} for each item of ${key}`, raw);
    } else if (check && !check[1](value)) {
      throw contractViolation(method, `${check[0]} for ${key}`, raw);
    }
    out[key] = field.type === 'TYPE_BYTES' && typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  }
  return out;
}

function camel(name) {
  return name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

/** Refuse an options object with a key that is not one of `allowed` (a typo like `timout`). */
function options(who, opts, allowed) {
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== 'object' || Array.isArray(opts)) throw contractViolation(who, 'an options object', opts);
  for (const key of Object.keys(opts)) {
    if (!allowed.includes(key)) {
      throw new ContractError(`${who}: unknown option\n  option: ${key}\n  expected one of: ${allowed.join(', ')}`);
    }
  }
  return opts;
}

const BLOCKING = ['custodian', 'timeout', 'signal'];

/** What a delegated token may do (Custodians.Delegate), each within the delegating session's policy. */
const DELEGATION = [
  'expiresSeconds', 'allowConnect', 'allowListen', 'allowPorts', 'allowMulticast', 'allowMulticastInterface',
  'allowHandoff',
];

/** Sessions.Resume's arguments from connect's `resume` option: {session, resumeToken}, as
 * `broker.resumption` gives them. */
function resumeArgs(resume) {
  const valid = typeof resume === 'object' && !Array.isArray(resume)
    && Object.keys(resume).every((key) => key === 'session' || key === 'resumeToken')
    && typeof resume.session === 'string' && typeof resume.resumeToken === 'string';
  if (!valid) throw contractViolation('Broker.connect', '{session, resumeToken} (strings, as broker.resumption) for resume', resume);
  return { session: resume.session, resumeToken: resume.resumeToken };
}

/**
 * The daemon and the token as every connect finds them: `target`, else $SOCKBROKER_GRPC, else the
 * running daemon's runtime file, else 127.0.0.1:50051; `token`, else $SOCKBROKER_TOKEN, else the
 * token file (`tokenFile`, else $SOCKBROKER_TOKEN_FILE or the daemon's default path). Returns
 * {client, address, token}: a gRPC client for that address (`credentials`, insecure by
 * default, and `channelOptions`), which connects on its first call.
 */
function dial(target, o) {
  const tokenFile = o.tokenFile || files.defaultTokenFile();
  const token = o.token ?? process.env.SOCKBROKER_TOKEN ?? files.readTokenFile(tokenFile);
  const address = target || files.defaultTarget(tokenFile);
  const client = new grpc.Client(address, o.credentials || grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': 32 * 1024 * 1024,
    'grpc.max_send_message_length': 32 * 1024 * 1024,
    ...o.channelOptions,
  });
  return { client, address, token };
}

function datagram(reply) {
  if (reply.count === undefined) return null;
  return { count: reply.count, host: reply.host, port: reply.port, data: reply.data || Buffer.alloc(0) };
}

// ─────────────────────────────── handles ───────────────────────────────

class Handle {
  constructor(broker, handle) {
    this.broker = broker;
    this.handle = handle;
  }

  toString() {
    return this.handle;
  }

  [Symbol.for('nodejs.util.inspect.custom')]() {
    return `<${this.constructor.name} ${this.handle}>`;
  }

  describe() {
    return this.broker.describe(this);
  }

  addresses(portNumbers = false) {
    return this.broker.tcpAddresses(this, portNumbers);
  }

  /** Close once: later calls return the first call's promise, and a handle the daemon already
   * closed (by its custodian, or the session's end) counts as closed. */
  close() {
    if (!this._closing) {
      this._closing = this._close().catch((err) => {
        if ((err instanceof NetworkError && !(err instanceof errors.NetworkErrnoError)) || err instanceof NotFoundError) return;
        this._closing = undefined;
        throw err;
      });
    }
    return this._closing;
  }
}

class Custodian extends Handle {
  /** A bearer token for sessions under this custodian (Broker#delegate). */
  delegate(opts) {
    return this.broker.delegate(this, opts);
  }

  shutdownAll() {
    return this.broker.custodianShutdownAll(this);
  }

  _close() {
    return this.shutdownAll();
  }
}

class Listener extends Handle {
  accept(opts) {
    return this.broker.tcpAccept(this, opts);
  }

  acceptReady() {
    return this.broker.tcpAcceptReady(this);
  }

  _close() {
    return this.broker.tcpClose(this);
  }
}

class Port extends Handle {
  async setBufferMode(mode) {
    await this.broker.call('Ports.SetBufferMode', { port: this, mode });
  }

  abandon() {
    return this.broker.tcpAbandonPort(this);
  }

  async _close() {
    await this.broker.call('Ports.Close', { port: this });
  }
}

class InputPort extends Port {
  /** read-bytes-avail! (mode 'avail'), read-bytes-avail!* ('nowait'), read-bytes ('exact');
   * peek-… with peek. A Buffer, or EOF at end of file. */
  async read(maxBytes = 65536, opts) {
    const { mode = 'avail', peek = false, timeout, signal } = options('read', opts, ['mode', 'peek', 'timeout', 'signal']);
    const reply = await this.broker.call('Ports.Read', { port: this, max: maxBytes, mode, peek, timeout }, { signal });
    return reply.eof ? EOF : reply.data;
  }

  async readBytesAvail(maxBytes = 65536, opts) {
    return InputPort.prototype.read.call(this, maxBytes, { ...options('read-bytes-avail!', opts, ['timeout', 'signal']) });
  }

  readBytesAvailNowait(maxBytes = 65536) {
    return InputPort.prototype.read.call(this, maxBytes, { mode: 'nowait' });
  }

  async readBytes(amount, opts) {
    return InputPort.prototype.read.call(this, amount, { ...options('read-bytes', opts, ['timeout', 'signal']), mode: 'exact' });
  }

  async peekBytesAvail(maxBytes = 65536, opts) {
    return InputPort.prototype.read.call(this, maxBytes, { ...options('peek-bytes-avail!', opts, ['timeout', 'signal']), peek: true });
  }

  /** The connection out of band (Ports.OpenChannel): a net.Socket carrying its bytes. */
  openChannel(mode = 'relay') {
    return this.broker.openChannel(this, mode);
  }
}

class OutputPort extends Port {
  /** write-bytes (+ flush-output with flush): how many bytes the broker took. */
  async write(data, opts) {
    const { flush = false } = options('write-bytes', opts, ['flush']);
    return (await this.broker.call('Ports.Write', { port: this, data, flush })).written;
  }

  writeBytes(data, opts) {
    return OutputPort.prototype.write.call(this, data, opts);
  }

  async flush() {
    await this.broker.call('Ports.Flush', { port: this });
  }

  flushOutput() {
    return OutputPort.prototype.flush.call(this);
  }
}

/** A UDP socket; every udp-… function of the broker is also a method here, prefix dropped. */
class UdpSocket extends Handle {
  _call(method, args = {}, opts = {}) {
    return this.broker.call(method, { udp: this, ...args }, opts);
  }

  async bind(hostname, port, reuse = false) {
    await this._call('Udp.Bind', { hostname, port, reuse });
  }

  /** Udp.OpenChannel: a hand-off, which Node cannot take (see Broker.udpOpenChannel). */
  openChannel(mode = 'handoff') {
    return this.broker.udpOpenChannel(this, mode);
  }

  async connect(hostname, port) {
    await this._call('Udp.Connect', { hostname, port });
  }

  async sendTo(hostname, port, data, start, end, opts) {
    const { wait = true, timeout, signal } = options('udp-send-to', opts, ['wait', 'timeout', 'signal']);
    return (await this._call('Udp.SendTo', { hostname, port, data, start, end, wait, timeout }, { signal })).sent;
  }

  sendToNowait(hostname, port, data, start, end) {
    return this.sendTo(hostname, port, data, start, end, { wait: false });
  }

  async send(data, start, end, opts) {
    const { wait = true, timeout, signal } = options('udp-send', opts, ['wait', 'timeout', 'signal']);
    return (await this._call('Udp.Send', { data, start, end, wait, timeout }, { signal })).sent;
  }

  sendNowait(data, start, end) {
    return this.send(data, start, end, { wait: false });
  }

  /** udp-receive!: {count, host, port, data}, or null when nothing came (nowait, timeout). */
  async receive(maxBytes = 65535, opts) {
    const { wait = true, timeout, signal } = options('udp-receive!', opts, ['wait', 'timeout', 'signal']);
    return datagram(await this._call('Udp.Receive', { max: maxBytes, wait, timeout }, { signal }));
  }

  receiveNowait(maxBytes = 65535) {
    return this.receive(maxBytes, { wait: false });
  }

  async setReceiveBufferSize(size) {
    await this._call('Udp.SetReceiveBufferSize', { size });
  }

  async _close() {
    await this._call('Udp.Close');
  }

  async bound() {
    return Boolean((await this.describe()).bound);
  }

  async connected() {
    return Boolean((await this.describe()).connected);
  }

  async ttl() {
    return (await this._call('Udp.GetTtl')).ttl;
  }

  async setTtl(ttl) {
    await this._call('Udp.SetTtl', { ttl });
  }

  async multicastJoinGroup(group, iface = null) {
    await this._call('Udp.MulticastJoin', { group, interface: iface });
  }

  async multicastLeaveGroup(group, iface = null) {
    await this._call('Udp.MulticastLeave', { group, interface: iface });
  }

  async multicastInterface() {
    return (await this._call('Udp.GetMulticastInterface')).interface;
  }

  async multicastSetInterface(iface) {
    await this._call('Udp.SetMulticastInterface', { interface: iface });
  }

  async multicastLoopback() {
    return (await this._call('Udp.GetMulticastLoopback')).loopback;
  }

  async multicastSetLoopback(loopback) {
    await this._call('Udp.SetMulticastLoopback', { loopback });
  }

  async multicastTtl() {
    return (await this._call('Udp.GetMulticastTtl')).ttl;
  }

  async multicastSetTtl(ttl) {
    await this._call('Udp.SetMulticastTtl', { ttl });
  }

  /** Datagrams as they arrive (Udp.ReceiveStream): `for await (const d of sock.receiveStream())`;
   * leaving the loop ends the stream. */
  receiveStream(maxBytes) {
    return this.broker._receiveStream(this, maxBytes);
  }

  /** Send datagrams ({data, host, port} or [data, host, port]; host '' = the connected peer)
   * from an iterable or async iterable over one Udp.SendStream call; resolves to how many. */
  sendStream(datagrams) {
    return this.broker._sendStream(this, datagrams);
  }
}

// ─────────────────────────────── events ───────────────────────────────

/** An event for sync / syncTimeout (Events.Sync): one member of the proto's Event oneof. */
class Evt {
  constructor(kind, args) {
    this.kind = kind;
    this.args = Object.fromEntries(Object.entries(args).filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => [k, h(v)]));
  }
}

const events = {
  tcpAcceptEvt: (listener, custodian) => new Evt('tcpAccept', { listener, custodian }),
  tcpListenerEvt: (listener) => new Evt('listenerReady', { listener }),
  portReadReadyEvt: (port) => new Evt('portReadReady', { port }),
  portWriteReadyEvt: (port) => new Evt('portWriteReady', { port }),
  udpReceiveReadyEvt: (udp) => new Evt('udpReceiveReady', { udp }),
  udpSendReadyEvt: (udp) => new Evt('udpSendReady', { udp }),
  udpReceiveEvt: (udp, max) => new Evt('udpReceive', { udp, max }),
  udpSendEvt: (udp, data, start, end) => new Evt('udpSend', { udp, data: bytes(data), start, end }),
  udpSendToEvt: (udp, hostname, port, data, start, end) =>
    new Evt('udpSendTo', { udp, hostname, port, data: bytes(data), start, end }),
};

function bytes(data) {
  return typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
}

// ─────────────────────────────── the session ───────────────────────────────

/** A session with the broker: `const broker = await Broker.connect(); … await broker.close()`. */
class Broker {
  constructor(client, target, token, session, custodian, leaseSeconds) {
    this._client = client;
    this.target = target;
    this._token = token;
    this.session = session;
    this.custodian = new Custodian(this, custodian);
    this.leaseSeconds = leaseSeconds;
    /** The grace period the daemon granted (0: none), and the token that takes the session back
     * within it; each resume gives a new token. */
    this.graceSeconds = 0;
    this.resumeToken = '';
    this._attachment = null;
    this._closing = undefined;
    this._channelClosed = false;
    /** The calls and streams under way (abandon() cancels them). */
    this._calls = new Set();
  }

  /**
   * Open a session. `target` is HOST:PORT; it defaults to $SOCKBROKER_GRPC, then the running
   * daemon's runtime file ($SOCKBROKER_RUNTIME_FILE, or runtime.json beside the token file), then
   * 127.0.0.1:50051. The token defaults to $SOCKBROKER_TOKEN, then the token file
   * ($SOCKBROKER_TOKEN_FILE or the daemon's default path). With `attach` (the default) a
   * Sessions.Attach stream holds the session, so it drops the moment this process dies.
   *
   * `graceSeconds` asks the daemon to keep the session that long after its attachment breaks or
   * its lease runs out (bounded by its max_grace_seconds); `resume: {session, resumeToken}` (an
   * earlier broker's `resumption`) takes such a session back instead of opening one, every
   * handle intact: NotFoundError when the token is wrong or spent, or the grace period is over.
   */
  static async connect(target, opts) {
    const o = options('Broker.connect', opts, [
      'token', 'tokenFile', 'attach', 'leaseSeconds', 'graceSeconds', 'resume', 'credentials', 'channelOptions',
    ]);
    let rpc = 'Sessions.Open';
    let args = { leaseSeconds: o.leaseSeconds, graceSeconds: o.graceSeconds };
    if (o.resume !== undefined && o.resume !== null) {
      const given = ['leaseSeconds', 'graceSeconds'].filter((key) => o[key] !== undefined && o[key] !== null);
      if (given.length) {
        const why = 'resume takes the session back with the lease and grace it was opened with';
        throw new ContractError(`Broker.connect: ${why}\n  options: ${given.join(', ')}`);
      }
      rpc = 'Sessions.Resume';
      args = resumeArgs(o.resume);
    }
    const { client, address, token } = dial(target, o);
    const broker = new Broker(client, address, token, null, '', 0);
    try {
      const reply = await broker.call(rpc, args);
      broker.session = reply.session;
      broker.custodian = new Custodian(broker, reply.custodian);
      broker.leaseSeconds = reply.leaseSeconds;
      broker.graceSeconds = reply.graceSeconds;
      broker.resumeToken = reply.resumeToken;
      if (o.attach !== false) await broker._attach();
    } catch (err) {
      client.close();
      throw err;
    }
    return broker;
  }

  _metadata(callId) {
    const md = new grpc.Metadata();
    if (this._token) md.set('authorization', `Bearer ${this._token}`);
    if (this.session) md.set('sockbroker-session', this.session);
    if (callId) md.set('sockbroker-call', callId);
    return md;
  }

  /** Count `call` as under way until its status arrives. */
  _track(call) {
    this._calls.add(call);
    call.on('status', () => this._calls.delete(call));
    return call;
  }

  _translate(err) {
    return errorFromGrpc(err, this.target);
  }

  _method(method, kind) {
    const def = METHODS.get(method);
    if (!def) throw new ContractError(`call: no such RPC\n  method: ${JSON.stringify(method)}`);
    if (this._channelClosed) throw new FailError(`${method}: the broker is closed (close() or abandon())\n  session: ${this.session}`);
    const streaming = def.requestStream || def.responseStream;
    if (kind === 'unary' && streaming) {
      throw new ContractError(`call: ${method} is a stream: use its method (tcpStream, receiveStream, sendStream, attach)`);
    }
    return def;
  }

  /**
   * Any unary RPC by name ("Tcp.Listen") with the proto's field names in camelCase; handle
   * objects may stand for handles. `signal` (an AbortSignal) breaks the call: the daemon then
   * either performs nothing or gives back what it had obtained, and the call fails with a
   * BreakError. `callId` tags the call for Sessions.CancelCall.
   */
  call(method, args = {}, opts) {
    let signal, callId, def, message;
    try {
      ({ signal, callId } = options('call', opts, ['signal', 'callId']));
      def = this._method(method, 'unary');
      message = request(method, def, args);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(new BreakError(`user break\n  operation: ${method}`));
      const onAbort = () => call.cancel();
      const call = this._client.makeUnaryRequest(
        def.path, def.requestSerialize, def.responseDeserialize, message, this._metadata(callId), {},
        (err, reply) => {
          signal?.removeEventListener('abort', onAbort);
          if (!err) return resolve(reply);
          if (signal?.aborted && err.code === grpc.status.CANCELLED) {
            return reject(new BreakError(`user break\n  operation: ${method}`, { code: 'CANCELLED' }));
          }
          reject(this._translate(err));
        },
      );
      this._track(call);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  _attach() {
    const def = this._method('Sessions.Attach');
    const call = this._track(this._client.makeBidiStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, this._metadata()));
    return new Promise((resolve, reject) => {
      const failed = (err) => {
        this._attachment = null;
        reject(this._translate(err));
      };
      call.once('data', () => {
        call.off('error', failed);
        call.on('error', () => {
          this._attachment = null; // the daemon went away or the call was cancelled: the lease holds now
        });
        call.on('data', () => {});
        this._attachment = call;
        resolve();
      });
      call.once('error', failed);
      call.on('end', () => {
        if (this._attachment === call) this._attachment = null;
      });
    });
  }

  /** True while an attachment holds the session. */
  get attached() {
    return this._attachment !== null;
  }

  /** {session, resumeToken}: what `Broker.connect(target, {resume})` takes back. */
  get resumption() {
    return { session: this.session, resumeToken: this.resumeToken };
  }

  async keepAlive() {
    return (await this.call('Sessions.KeepAlive')).leaseSeconds;
  }

  /** End the attachment without dropping the session (the lease holds it from now on). */
  async detach() {
    const call = this._attachment;
    if (!call) return;
    await new Promise((resolve) => {
      const done = () => resolve();
      call.on('data', (event) => event.event === 'detached' && done());
      call.on('end', done);
      call.on('error', done);
      call.write({ detach: true });
    });
    this._attachment = null;
    call.cancel();
  }

  /** Break the call tagged `callId` (Sessions.CancelCall). */
  async cancelCall(callId) {
    await this.call('Sessions.CancelCall', { call: callId });
  }

  /** Close the session (every handle in it) and the channel. Idempotent. */
  close() {
    if (!this._closing) {
      this._closing = (async () => {
        try {
          await this.call('Sessions.Close');
        } catch (err) {
          if (!(err instanceof NotFoundError || err instanceof errors.BrokerUnavailableError)) throw err;
        } finally {
          if (this._attachment) this._attachment.cancel();
          this._shutDown();
        }
      })();
    }
    return this._closing;
  }

  /** Let the session go as a crash would: the attachment, every call and stream under way
   * (they fail with BreakError) and the channel close, and no Sessions.Close is sent. The
   * session then drops, or, opened with graceSeconds, waits that long for
   * `Broker.connect(target, {resume: broker.resumption})`. Calls on this broker fail from here
   * (FailError); close() does nothing more. Idempotent. */
  abandon() {
    if (!this._closing) {
      for (const call of this._calls) call.cancel();
      this._shutDown();
      this._closing = Promise.resolve();
    }
    return this._closing;
  }

  _shutDown() {
    this._attachment = null;
    this._channelClosed = true;
    this._client.close();
  }

  // ── custodians and handles ──
  async makeCustodian(parent) {
    return new Custodian(this, (await this.call('Custodians.Create', { parent })).custodian);
  }

  async custodianShutdownAll(custodian) {
    await this.call('Custodians.Shutdown', { custodian });
  }

  describeCustodian(custodian) {
    return this.call('Custodians.Describe', { custodian });
  }

  /**
   * Custodians.Delegate: a bearer token for a sandboxed child. Sessions opened with it
   * (`Broker.connect(target, {token})`) live under `custodian`, with this session's policy
   * narrowed to the lists given: allowConnect, allowListen (networks), allowPorts ("80",
   * "8000-8100"; "0-65535" for all), allowMulticast (groups), allowMulticastInterface, and
   * allowHandoff. An absent or empty list allows nothing of its kind. The token ends after
   * `expiresSeconds` (required; clamped to the daemon's max_delegation_seconds), when `custodian`
   * is shut down, or when this session drops, and every session opened with it drops then.
   */
  async delegate(custodian, opts) {
    const o = options('custodian-delegate', opts, DELEGATION);
    if (o.expiresSeconds === undefined || o.expiresSeconds === null) {
      throw contractViolation('custodian-delegate', 'a positive number of seconds for expiresSeconds', o.expiresSeconds);
    }
    return (await this.call('Custodians.Delegate', { ...o, custodian })).token;
  }

  describe(handle) {
    return this.call('Handles.Describe', { handle });
  }

  /** tcp-addresses: [localHost, remoteHost], or with portNumbers [localHost, localPort, remoteHost, remotePort]. */
  async tcpAddresses(handle, portNumbers = false) {
    const r = await this.call('Handles.Addresses', { handle, portNumbers });
    return portNumbers ? [r.localHost, r.localPort, r.remoteHost, r.remotePort] : [r.localHost, r.remoteHost];
  }

  udpAddresses(sock, portNumbers = false) {
    return this.tcpAddresses(sock, portNumbers);
  }

  async tcpListener(handle) {
    return (await this.describe(handle)).kind === 'tcp-listener';
  }

  async tcpPort(handle) {
    return ['tcp-input-port', 'tcp-output-port'].includes((await this.describe(handle)).kind);
  }

  async udp(handle) {
    return (await this.describe(handle)).kind === 'udp';
  }

  // ── tcp ──
  async tcpListen(port, backlog = 4, reuse = false, hostname = null, opts) {
    const { custodian } = options('tcp-listen', opts, ['custodian']);
    return new Listener(this, (await this.call('Tcp.Listen', { port, backlog, reuse, hostname, custodian })).listener);
  }

  _ports(reply) {
    return reply.in === undefined ? null : [new InputPort(this, reply.in), new OutputPort(this, reply.out)];
  }

  /** tcp-connect: [inputPort, outputPort]. */
  async tcpConnect(hostname, port, localHostname = null, localPort = null, opts) {
    const { custodian, timeout, signal } = options('tcp-connect', opts, BLOCKING);
    const args = { hostname, port, localHostname, localPort, custodian, timeout };
    return this._ports(await this.call('Tcp.Connect', args, { signal }));
  }

  /** tcp-accept: [inputPort, outputPort]; with a timeout, null when no client came in time. */
  async tcpAccept(listener, opts) {
    const { custodian, timeout, signal } = options('tcp-accept', opts, BLOCKING);
    return this._ports(await this.call('Tcp.Accept', { listener, custodian, timeout }, { signal }));
  }

  async tcpAcceptReady(listener) {
    return (await this.call('Tcp.AcceptReady', { listener })).ready;
  }

  async tcpClose(listener) {
    await this.call('Tcp.Close', { listener });
  }

  async tcpAbandonPort(port) {
    await this.call('Tcp.AbandonPort', { port });
  }

  /** The connection of `inputPort` out of band (Ports.OpenChannel, DESIGN §8): a net.Socket to
   * the daemon's channel listener that carries the connection's bytes both ways, spliced by the
   * daemon, half-close included; the ports then only close. Only 'relay': a hand-off passes a
   * descriptor over a Unix socket (SCM_RIGHTS), which node:net cannot receive. */
  async openChannel(inputPort, mode = 'relay') {
    checkRelay('open-channel', mode);
    const reply = await this.call('Ports.OpenChannel', { port: inputPort, mode });
    return redeem(reply.ticket, reply.address);
  }

  /** Udp.OpenChannel hands a UDP socket's descriptor off (SCM_RIGHTS), which node:net cannot
   * receive: always a ContractError here, before anything is asked of the daemon. */
  async udpOpenChannel(sock, mode = 'handoff') {
    throw new ContractError(`udp-open-channel: ${h(sock)}: mode ${mode}: a UDP socket is handed off, and node:net cannot receive a descriptor (SCM_RIGHTS); use receiveStream and sendStream`);
  }

  /** The bytes of the connection of `inputPort` as a Duplex stream (Ports.Stream). */
  tcpStream(inputPort) {
    const port = h(inputPort);
    if (typeof port !== 'string') throw contractViolation('tcp-stream', 'an InputPort or its handle', inputPort);
    const def = this._method('Ports.Stream');
    const call = this._track(this._client.makeBidiStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, this._metadata()));
    call.write({ port });
    return new PortStream(call, (err) => this._translate(err));
  }

  // ── udp ──
  async udpOpenSocket(familyHostname = null, familyPort = null, opts) {
    const { custodian } = options('udp-open-socket', opts, ['custodian']);
    return new UdpSocket(this, (await this.call('Udp.Open', { familyHostname, familyPort, custodian })).udp);
  }

  async udpClose(sock) {
    await this.call('Udp.Close', { udp: sock });
  }

  _receiveStream(sock, maxBytes) {
    const def = this._method('Udp.ReceiveStream');
    const message = request('Udp.ReceiveStream', def, { udp: sock, max: maxBytes, packed: true });
    const call = this._track(this._client.makeServerStreamRequest(
      def.path, def.requestSerialize, def.responseDeserialize, message, this._metadata(),
    ));
    return receiveDatagrams(call, (err) => this._translate(err));
  }

  _sendStream(sock, datagrams) {
    let def;
    try {
      def = this._method('Udp.SendStream');
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      let failed = null;
      const call = this._client.makeClientStreamRequest(
        def.path, def.requestSerialize, def.responseDeserialize, this._metadata(), {},
        (err, reply) => (err ? reject(failed || this._translate(err)) : resolve(reply.sent)),
      );
      this._track(call);
      const write = (batch) => new Promise((done) => call.write(batch, () => done()));
      (async () => {
        let first = true;
        for await (const item of datagrams) {
          const d = outgoing(item);
          const batch = request('Udp.SendStream', def, { udp: first ? sock : '', datagrams: [] });
          batch.datagrams = [{ ...d, data: bytes(d.data) }];
          first = false;
          await write(batch);
        }
        if (first) await write(request('Udp.SendStream', def, { udp: sock }));
        call.end();
      })().catch((err) => {
        failed = err instanceof errors.BrokerError ? err : new ContractError(`udp-send-stream: ${err.message}`);
        call.cancel();
      });
    });
  }

  // ── events ──
  /** sync: waits until one event is ready and performs exactly that one: {index, result}. */
  sync(...evts) {
    return this._sync(evts, undefined);
  }

  /** sync/timeout: as sync, or null when `timeout` seconds pass with no event ready (0 polls). */
  syncTimeout(timeout, ...evts) {
    return this._sync(evts, timeout);
  }

  async _sync(evts, timeout, signal) {
    for (const evt of evts) {
      if (!(evt instanceof Evt)) throw contractViolation('sync', 'an event made by one of the …Evt functions', evt);
    }
    const reply = await this.call(
      'Events.Sync', { events: evts.map((e) => ({ [e.kind]: e.args })), timeout }, { signal },
    );
    if (reply.index === undefined) return null;
    const r = reply.result || {};
    let result = r.ready ?? r.sent ?? null;
    if (r.connection) result = this._ports(r.connection);
    if (r.datagram) result = datagram(r.datagram);
    return { index: reply.index, result };
  }
}

// udp-<verb> on the broker is <verb> on the socket (the naming rule), except udp-close, which
// keeps Racket's "a second close fails" where the socket's close() is idempotent.
const UDP_METHODS = [
  'bind', 'connect', 'sendTo', 'sendToNowait', 'send', 'sendNowait', 'receive', 'receiveNowait',
  'setReceiveBufferSize', 'bound', 'connected', 'ttl', 'setTtl', 'multicastJoinGroup',
  'multicastLeaveGroup', 'multicastInterface', 'multicastSetInterface', 'multicastLoopback',
  'multicastSetLoopback', 'multicastTtl', 'multicastSetTtl',
];
for (const name of UDP_METHODS) {
  const brokerName = `udp${name[0].toUpperCase()}${name.slice(1)}`;
  Object.defineProperty(Broker.prototype, brokerName, {
    value: function (sock, ...args) {
      return new UdpSocket(this, h(sock))[name](...args);
    },
    writable: true,
    configurable: true,
  });
}

if (Symbol.asyncDispose) {
  Broker.prototype[Symbol.asyncDispose] = function () {
    return this.close();
  };
}

module.exports = {
  Broker, Handle, Port, Custodian, Listener, InputPort, OutputPort, UdpSocket, Evt, EOF, events, UDP_METHODS,
  dial, options, request,
};
