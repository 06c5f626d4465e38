// Types of sockbroker-client (lib/). Racket's racket/tcp and racket/udp names in camelCase:
// `!` and `?` dropped, `*` written as `Nowait` (docs/naming.md).

import { Duplex } from 'node:stream';
import type { ChannelCredentials, ChannelOptions } from '@grpc/grpc-js';

/** What a read returns at end of file (distinct from zero bytes), as Racket's eof. */
export declare const EOF: unique symbol;
export type Eof = typeof EOF;

/** Bytes in: a Buffer or Uint8Array, or a string (sent as UTF-8). */
export type Bytes = Buffer | Uint8Array | string;

// ── errors ──

export interface BrokerErrorInfo {
  kind?: string;
  errno?: number | null;
  errnoFamily?: 'posix' | 'gai' | string | null;
  code?: string | null;
}

/** An error the broker (or this client) reported. `kind` is Racket's exception kind. */
export declare class BrokerError extends Error {
  constructor(message: string, info?: BrokerErrorInfo);
  /** 'exn:fail:network:errno', 'permission-denied', … */
  readonly kind: string;
  /** The OS's errno (posix) or resolver code (gai), or null. */
  errno: number | null;
  /** 'posix', 'gai' or null. */
  errnoFamily: string | null;
  /** The gRPC status name that carried it ('UNAVAILABLE'…), or null when raised by the client. */
  code: string | null;
}
/** exn:fail: an operation on a closed TCP port. */
export declare class FailError extends BrokerError {}
/** exn:fail:contract: a bad argument. */
export declare class ContractError extends BrokerError {}
/** exn:fail:network: a handle in the wrong state. */
export declare class NetworkError extends BrokerError {}
/** exn:fail:network:errno: the OS refused; errno and errnoFamily say why. */
export declare class NetworkErrnoError extends NetworkError {}
/** not-found: an unknown handle or session. */
export declare class NotFoundError extends BrokerError {}
/** permission-denied: the policy forbids the address, port or group. */
export declare class PermissionDeniedError extends BrokerError {}
/** unauthenticated: a missing or wrong token. */
export declare class UnauthenticatedError extends BrokerError {}
/** No usable token in the token file (raised by the client before any call). */
export declare class TokenFileError extends UnauthenticatedError {}
/** resource-exhausted: a quota would be passed. */
export declare class ResourceExhaustedError extends BrokerError {}
/** exn:break: the call was broken (an AbortSignal, a deadline, Sessions.CancelCall). */
export declare class BreakError extends BrokerError {}
/** unavailable: no daemon answered at the target. */
export declare class BrokerUnavailableError extends BrokerError {}

// ── handles ──

export interface HandleDescription {
  handle: string;
  /** tcp-listener, tcp-input-port, tcp-output-port, udp, custodian */
  kind: string;
  closed: boolean;
  custodian: string;
  bound?: boolean;
  connected?: boolean;
  bufferMode?: 'block' | 'line' | 'none';
  state?: string;
  queueDropped?: number;
  kernelDropped?: number;
  family?: 'inet' | 'inet6';
}

export interface CustodianDescription {
  custodian: string;
  parent: string;
  shutDown: boolean;
  handles: { handle: string; kind: string; closed: boolean }[];
  children: string[];
}

export type Addresses = [localHost: string, remoteHost: string];
export type AddressesWithPorts = [localHost: string, localPort: number, remoteHost: string, remotePort: number];

/** A handle object, or the handle string itself. */
export type HandleLike = Handle | string;

export declare abstract class Handle {
  /** A handle object for a handle string of `broker`'s session (one kept across a resume). */
  constructor(broker: Broker, handle: string);
  readonly broker: Broker;
  readonly handle: string;
  toString(): string;
  describe(): Promise<HandleDescription>;
  addresses(portNumbers?: false): Promise<Addresses>;
  addresses(portNumbers: true): Promise<AddressesWithPorts>;
  /** Close once: later calls return the first call's promise; a handle already closed by its
   * custodian or the session's end counts as closed. */
  close(): Promise<void>;
}

export declare class Custodian extends Handle {
  /** A bearer token for sessions under this custodian (Broker.delegate). */
  delegate(options: DelegateOptions): Promise<string>;
  shutdownAll(): Promise<void>;
}

export interface BlockingOptions {
  /** Seconds; absent waits until done or broken. */
  timeout?: number;
  /** Breaks the call: it then fails with BreakError and performs nothing. */
  signal?: AbortSignal;
}

export interface AcceptOptions extends BlockingOptions {
  custodian?: Custodian | string;
}

export type Connection = [InputPort, OutputPort];

export declare class Listener extends Handle {
  /** tcp-accept; with a timeout, null when no client came in time. */
  accept(options?: AcceptOptions): Promise<Connection | null>;
  acceptReady(): Promise<boolean>;
}

export declare abstract class Port extends Handle {
  setBufferMode(mode: 'block' | 'line' | 'none'): Promise<void>;
  abandon(): Promise<void>;
}

export interface ReadOptions extends BlockingOptions {
  /** avail (read-bytes-avail!), nowait (read-bytes-avail!*), exact (read-bytes). */
  mode?: 'avail' | 'nowait' | 'exact';
  peek?: boolean;
}

export declare class InputPort extends Port {
  read(maxBytes?: number, options?: ReadOptions): Promise<Buffer | Eof>;
  readBytesAvail(maxBytes?: number, options?: BlockingOptions): Promise<Buffer | Eof>;
  readBytesAvailNowait(maxBytes?: number): Promise<Buffer | Eof>;
  readBytes(amount: number, options?: BlockingOptions): Promise<Buffer | Eof>;
  peekBytesAvail(maxBytes?: number, options?: BlockingOptions): Promise<Buffer | Eof>;
  /** The connection out of band (Ports.OpenChannel): a socket carrying its bytes ('relay' only). */
  openChannel(mode?: 'relay'): Promise<import('node:net').Socket>;
}

export declare class OutputPort extends Port {
  /** write-bytes: how many bytes the broker took. */
  write(data: Bytes, options?: { flush?: boolean }): Promise<number>;
  writeBytes(data: Bytes, options?: { flush?: boolean }): Promise<number>;
  flush(): Promise<void>;
  flushOutput(): Promise<void>;
}

export interface ReceivedDatagram {
  count: number;
  host: string;
  port: number;
  data: Buffer;
}

export interface SendOptions extends BlockingOptions {
  /** false: the never-blocking form (udp-send*): resolves false when the queue is full. */
  wait?: boolean;
}

export declare class Datagram {
  constructor(data: Buffer, host: string, port: number);
  data: Buffer;
  host: string;
  port: number;
}

/** A datagram to send; host '' (or absent) means the connected peer. */
export type OutgoingDatagram = { data: Bytes; host?: string; port?: number } | [data: Bytes, host?: string, port?: number];

export declare class UdpSocket extends Handle {
  bind(hostname: string | null, port: number, reuse?: boolean): Promise<void>;
  /** Always rejects with ContractError: a UDP hand-off passes a descriptor, which node:net cannot receive. */
  openChannel(mode?: 'handoff'): Promise<never>;
  connect(hostname: string | null, port: number | null): Promise<void>;
  sendTo(hostname: string, port: number, data: Bytes, start?: number, end?: number, options?: SendOptions): Promise<boolean>;
  sendToNowait(hostname: string, port: number, data: Bytes, start?: number, end?: number): Promise<boolean>;
  send(data: Bytes, start?: number, end?: number, options?: SendOptions): Promise<boolean>;
  sendNowait(data: Bytes, start?: number, end?: number): Promise<boolean>;
  /** udp-receive!: null when nothing came (nowait, timeout). */
  receive(maxBytes?: number, options?: SendOptions): Promise<ReceivedDatagram | null>;
  receiveNowait(maxBytes?: number): Promise<ReceivedDatagram | null>;
  setReceiveBufferSize(size: number): Promise<void>;
  bound(): Promise<boolean>;
  connected(): Promise<boolean>;
  ttl(): Promise<number>;
  setTtl(ttl: number): Promise<void>;
  multicastJoinGroup(group: string, iface?: string | null): Promise<void>;
  multicastLeaveGroup(group: string, iface?: string | null): Promise<void>;
  multicastInterface(): Promise<string>;
  multicastSetInterface(iface: string | null): Promise<void>;
  multicastLoopback(): Promise<boolean>;
  multicastSetLoopback(loopback: boolean): Promise<void>;
  multicastTtl(): Promise<number>;
  multicastSetTtl(ttl: number): Promise<void>;
  /** Datagrams as they arrive; leaving the `for await` loop ends the stream. */
  receiveStream(maxBytes?: number): AsyncGenerator<Datagram, void, undefined>;
  /** Sends every datagram over one stream; resolves to how many were sent. */
  sendStream(datagrams: Iterable<OutgoingDatagram> | AsyncIterable<OutgoingDatagram>): Promise<number>;
}

/** The bytes of one TCP connection both ways. end() sends a FIN; the peer's FIN ends reading. */
export declare class PortStream extends Duplex {}

// ── events ──

export declare class Evt {
  readonly kind: string;
  readonly args: Record<string, unknown>;
}
export declare function tcpAcceptEvt(listener: Listener | string, custodian?: Custodian | string | null): Evt;
export declare function tcpListenerEvt(listener: Listener | string): Evt;
export declare function portReadReadyEvt(port: InputPort | string): Evt;
export declare function portWriteReadyEvt(port: OutputPort | string): Evt;
export declare function udpReceiveReadyEvt(sock: UdpSocket | string): Evt;
export declare function udpSendReadyEvt(sock: UdpSocket | string): Evt;
export declare function udpReceiveEvt(sock: UdpSocket | string, maxBytes?: number | null): Evt;
export declare function udpSendEvt(sock: UdpSocket | string, data: Bytes, start?: number | null, end?: number | null): Evt;
export declare function udpSendToEvt(
  sock: UdpSocket | string, hostname: string, port: number, data: Bytes, start?: number | null, end?: number | null,
): Evt;

/** The performed event's index and result: a Connection (tcpAcceptEvt), a ReceivedDatagram
 * (udpReceiveEvt), true (the send events) or the ready handle (the …ReadyEvt and tcpListenerEvt). */
export interface SyncResult {
  index: number;
  result: Connection | ReceivedDatagram | boolean | string | null;
}

// ── the session ──

export interface ConnectOptions {
  /** Default: $SOCKBROKER_TOKEN, then the token file. */
  token?: string;
  /** Default: $SOCKBROKER_TOKEN_FILE, else the daemon's default path. */
  tokenFile?: string;
  /** Hold the session with an attachment (default true): it drops when this process dies. */
  attach?: boolean;
  leaseSeconds?: number;
  /** Keep the session this long after its attachment breaks or its lease runs out, waiting for a
   * resume (clamped to the daemon's max_grace_seconds; default 0: it drops at once). */
  graceSeconds?: number;
  /** Take back a session in its grace period instead of opening one (not with leaseSeconds or
   * graceSeconds): NotFoundError when the token is wrong or spent, or the grace is over. */
  resume?: Resumption;
  credentials?: ChannelCredentials;
  channelOptions?: ChannelOptions;
}

/** What takes a session back: `broker.resumption`, for `Broker.connect(target, {resume})`. */
export interface Resumption {
  session: string;
  resumeToken: string;
}

/** What a delegated token may do, each within the delegating session's policy. An absent or
 * empty list allows nothing of its kind. */
export interface DelegateOptions {
  /** Required, positive; clamped to the daemon's max_delegation_seconds. */
  expiresSeconds: number;
  /** Networks it may connect and send to ('127.0.0.1/32'). */
  allowConnect?: readonly string[];
  /** Networks it may listen and bind on. */
  allowListen?: readonly string[];
  /** Ports ('80', '8000-8100'; '0-65535' for all; '0' lets it listen or bind on an ephemeral port). */
  allowPorts?: readonly string[];
  /** Multicast groups it may join. */
  allowMulticast?: readonly string[];
  /** Addresses of the interfaces it may send multicast on. */
  allowMulticastInterface?: readonly string[];
  /** May its sessions take a socket's descriptor (an open-channel hand-off). */
  allowHandoff?: boolean;
}

export interface CallOptions {
  signal?: AbortSignal;
  /** Tags the call for Sessions.CancelCall. */
  callId?: string;
}

export declare class Broker {
  /** Open a session; the target defaults to $SOCKBROKER_GRPC, then the daemon's runtime file, then 127.0.0.1:50051. */
  static connect(target?: string | null, options?: ConnectOptions): Promise<Broker>;
  readonly target: string;
  readonly session: string;
  readonly custodian: Custodian;
  readonly leaseSeconds: number;
  /** The grace period the daemon granted (0: none). */
  readonly graceSeconds: number;
  /** The token that takes the session back within its grace ('' without one); each resume gives a new one. */
  readonly resumeToken: string;
  /** {session, resumeToken}: what `Broker.connect(target, {resume})` takes back. */
  readonly resumption: Resumption;
  /** True while an attachment holds the session. */
  readonly attached: boolean;

  /** Any unary RPC by name ("Tcp.Listen") with the proto's field names in camelCase. */
  call(method: string, args?: Record<string, unknown>, options?: CallOptions): Promise<Record<string, any>>;
  keepAlive(): Promise<number>;
  detach(): Promise<void>;
  cancelCall(callId: string): Promise<void>;
  /** Close the session (every handle in it) and the channel. Idempotent. */
  close(): Promise<void>;
  /** Close the attachment and the channel without closing the session, as a crash would: it
   * drops, or waits graceSeconds for a resume. Calls then fail (FailError). Idempotent. */
  abandon(): Promise<void>;

  makeCustodian(parent?: Custodian | string | null): Promise<Custodian>;
  custodianShutdownAll(custodian: Custodian | string): Promise<void>;
  describeCustodian(custodian: Custodian | string): Promise<CustodianDescription>;
  /** Custodians.Delegate: a bearer token for sessions that live under `custodian` with this
   * session's policy narrowed to `options`; it ends after expiresSeconds, with the custodian, or
   * with this session. */
  delegate(custodian: Custodian | string, options: DelegateOptions): Promise<string>;
  describe(handle: HandleLike): Promise<HandleDescription>;
  tcpAddresses(handle: HandleLike, portNumbers?: false): Promise<Addresses>;
  tcpAddresses(handle: HandleLike, portNumbers: true): Promise<AddressesWithPorts>;
  udpAddresses(sock: UdpSocket | string, portNumbers?: false): Promise<Addresses>;
  udpAddresses(sock: UdpSocket | string, portNumbers: true): Promise<AddressesWithPorts>;
  tcpListener(handle: HandleLike): Promise<boolean>;
  tcpPort(handle: HandleLike): Promise<boolean>;
  udp(handle: HandleLike): Promise<boolean>;

  tcpListen(port: number, backlog?: number, reuse?: boolean, hostname?: string | null, options?: { custodian?: Custodian | string }): Promise<Listener>;
  tcpConnect(
    hostname: string, port: number, localHostname?: string | null, localPort?: number | null, options?: AcceptOptions,
  ): Promise<Connection>;
  tcpAccept(listener: Listener | string, options?: AcceptOptions): Promise<Connection | null>;
  tcpAcceptReady(listener: Listener | string): Promise<boolean>;
  /** tcp-close: a second close fails (NetworkError), as in Racket; listener.close() does not. */
  tcpClose(listener: Listener | string): Promise<void>;
  tcpAbandonPort(port: Port | string): Promise<void>;
  /** The connection out of band (Ports.OpenChannel, DESIGN §8): a socket to the daemon's channel
   * listener carrying the connection's bytes both ways ('relay' only: node:net cannot receive a
   * descriptor for a hand-off). */
  openChannel(inputPort: InputPort | string, mode?: 'relay'): Promise<import('node:net').Socket>;
  /** Always rejects with ContractError: a UDP hand-off passes a descriptor, which node:net cannot receive. */
  udpOpenChannel(sock: UdpSocket | string, mode?: 'handoff'): Promise<never>;
  tcpStream(inputPort: InputPort | string): PortStream;

  udpOpenSocket(familyHostname?: string | null, familyPort?: number | null, options?: { custodian?: Custodian | string }): Promise<UdpSocket>;
  /** udp-close: a second close fails (NetworkError), as in Racket; sock.close() does not. */
  udpClose(sock: UdpSocket | string): Promise<void>;
  udpBind(sock: UdpSocket | string, hostname: string | null, port: number, reuse?: boolean): Promise<void>;
  udpConnect(sock: UdpSocket | string, hostname: string | null, port: number | null): Promise<void>;
  udpSendTo(sock: UdpSocket | string, hostname: string, port: number, data: Bytes, start?: number, end?: number, options?: SendOptions): Promise<boolean>;
  udpSendToNowait(sock: UdpSocket | string, hostname: string, port: number, data: Bytes, start?: number, end?: number): Promise<boolean>;
  udpSend(sock: UdpSocket | string, data: Bytes, start?: number, end?: number, options?: SendOptions): Promise<boolean>;
  udpSendNowait(sock: UdpSocket | string, data: Bytes, start?: number, end?: number): Promise<boolean>;
  udpReceive(sock: UdpSocket | string, maxBytes?: number, options?: SendOptions): Promise<ReceivedDatagram | null>;
  udpReceiveNowait(sock: UdpSocket | string, maxBytes?: number): Promise<ReceivedDatagram | null>;
  udpSetReceiveBufferSize(sock: UdpSocket | string, size: number): Promise<void>;
  udpBound(sock: UdpSocket | string): Promise<boolean>;
  udpConnected(sock: UdpSocket | string): Promise<boolean>;
  udpTtl(sock: UdpSocket | string): Promise<number>;
  udpSetTtl(sock: UdpSocket | string, ttl: number): Promise<void>;
  udpMulticastJoinGroup(sock: UdpSocket | string, group: string, iface?: string | null): Promise<void>;
  udpMulticastLeaveGroup(sock: UdpSocket | string, group: string, iface?: string | null): Promise<void>;
  udpMulticastInterface(sock: UdpSocket | string): Promise<string>;
  udpMulticastSetInterface(sock: UdpSocket | string, iface: string | null): Promise<void>;
  udpMulticastLoopback(sock: UdpSocket | string): Promise<boolean>;
  udpMulticastSetLoopback(sock: UdpSocket | string, loopback: boolean): Promise<void>;
  udpMulticastTtl(sock: UdpSocket | string): Promise<number>;
  udpMulticastSetTtl(sock: UdpSocket | string, ttl: number): Promise<void>;

  /** sync: waits until one event is ready and performs exactly that one. */
  sync(...events: Evt[]): Promise<SyncResult>;
  /** sync/timeout: null when `timeout` seconds pass with none ready (0 polls). */
  syncTimeout(timeout: number, ...events: Evt[]): Promise<SyncResult | null>;

  [Symbol.asyncDispose](): Promise<void>;
}

// ── the admin API (sockbroker.admin.v1.Admin, docs/admin.md) ──

/** A session as the admin API lists it (SessionSummary). */
export interface SessionSummary {
  session: string;
  /** Who opened it (a delegated caller is `NAME/dlg_…`). */
  principal: string;
  /** Its root custodian. */
  custodian: string;
  state: 'leased' | 'attached' | string;
  attachments: number;
  leaseSeconds: number;
  /** When it opened, in seconds since the epoch, and how long ago. */
  openedAt: number;
  ageSeconds: number;
  /** Open handles, custodians included. */
  handles: number;
  /** Bytes from and to peers over TCP and UDP, over the session's life. */
  bytesIn: number;
  bytesOut: number;
}

/** A handle in DescribeSession's tree (HandleInfo); a member the handle does not have is absent. */
export interface HandleInfo {
  handle: string;
  /** tcp-listener, tcp-input-port, tcp-output-port, udp */
  kind: string;
  /** A port: open, abandoned; a listener: listening; a UDP socket: unbound, bound, connected. */
  state: string;
  closed: boolean;
  ageSeconds: number;
  localHost?: string;
  localPort?: number;
  remoteHost?: string;
  remotePort?: number;
  /** Ports (their connection's) and UDP sockets. */
  bytesIn?: number;
  bytesOut?: number;
  /** UDP sockets only. */
  datagramsIn?: number;
  datagramsOut?: number;
  /** relay or handoff while a channel carries the handle's socket. */
  channel?: 'relay' | 'handoff' | string;
}

export interface CustodianInfo {
  custodian: string;
  /** '' for the session's root custodian. */
  parent: string;
  /** 0 for the root, 1 for its children… */
  depth: number;
  ageSeconds: number;
  handles: HandleInfo[];
}

export interface SessionDescription {
  summary: SessionSummary;
  /** The custodian tree, depth first from the root: each custodian after its parent. */
  custodians: CustodianInfo[];
}

export interface KillReply {
  /** The session the session or handle belonged to. */
  session: string;
  /** How many handles were closed (custodians included). */
  closed: number;
}

/** One of the daemon's events (AdminEvent); members that do not apply are ''. */
export interface AdminEvent {
  /** events.watch, session.open, session.drop, admin.kill_session, admin.deny, events.lost… */
  event: string;
  /** Who acted (a delegated caller is `NAME/dlg_…`). */
  principal: string;
  session: string;
  operation: string;
  target: string;
  reason: string;
  /** Seconds since the epoch. */
  time: number;
}

export interface AdminConnectOptions {
  /** Default: $SOCKBROKER_TOKEN, then the token file. Its principal must be an admin. */
  token?: string;
  /** Default: $SOCKBROKER_TOKEN_FILE, else the daemon's default path. */
  tokenFile?: string;
  credentials?: ChannelCredentials;
  channelOptions?: ChannelOptions;
}

/** The admin calls, for a token of an admin principal (anyone else: PermissionDeniedError). It
 * opens no session; an unknown session or handle is NotFoundError, an empty id a ContractError. */
export declare class Admin {
  /** Finds the daemon and the token as Broker.connect does; sends nothing until the first call. */
  static connect(target?: string | null, options?: AdminConnectOptions): Promise<Admin>;
  readonly target: string;
  /** Every open session, oldest first; with `principal`, that principal's (and its delegated callers'). */
  listSessions(options?: { principal?: string }): Promise<SessionSummary[]>;
  describeSession(session: string): Promise<SessionDescription>;
  /** Drop a session of any principal: every socket it holds is closed. */
  killSession(session: string, options?: { reason?: string }): Promise<KillReply>;
  /** Close a handle of any session as a shutdown of its custodian would. */
  killHandle(handle: HandleLike, options?: { reason?: string }): Promise<KillReply>;
  /** The daemon's events as they happen, first `events.watch`. Leaving the loop, return() or
   * close() ends the stream; `signal` breaks it (BreakError). */
  watchEvents(options?: { signal?: AbortSignal }): AsyncIterableIterator<AdminEvent>;
  /** End every event stream under way and close the channel. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export declare function defaultTokenFile(): string;
export declare function readTokenFile(file: string): string;
