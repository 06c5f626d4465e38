'use strict';
// The admin API (sockbroker.admin.v1.Admin, docs/admin.md): every client's sessions seen from
// above, for a token of an admin principal (anyone else gets PermissionDeniedError). It opens no
// session: `const admin = await Admin.connect(); … admin.close()`. Replies are the proto's
// messages in camelCase, 64-bit counters as numbers, as everywhere in this client.

const grpc = require('@grpc/grpc-js');
const { ADMIN_METHODS } = require('./proto');
const { Handle, dial, options, request } = require('./broker');
const { BreakError, FailError, contractViolation, errorFromGrpc } = require('./errors');

/** A session or handle id: a non-empty string (a Handle object stands for its handle). Refused
 * here, in the daemon's words, before the wire. */
function named(who, expected, value) {
  const id = value instanceof Handle ? value.handle : value;
  if (typeof id !== 'string' || !id) throw contractViolation(who, expected, value);
  return id;
}

class Admin {
  constructor(client, target, token) {
    this._client = client;
    this.target = target;
    this._token = token;
    this._closed = false;
    /** How to end each event stream under way (close() ends them). */
    this._watches = new Set();
  }

  /**
   * The admin API of the daemon at `target`, found with the token as `Broker.connect` finds them
   * (`token`, `tokenFile`, `credentials`, `channelOptions`). No session is opened and nothing is
   * sent until the first call.
   */
  static async connect(target, opts) {
    const o = options('Admin.connect', opts, ['token', 'tokenFile', 'credentials', 'channelOptions']);
    const { client, address, token } = dial(target, o);
    return new Admin(client, address, token);
  }

  _metadata() {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${this._token}`);
    return md;
  }

  _method(method) {
    if (this._closed) throw new FailError(`${method}: the admin client is closed`);
    return ADMIN_METHODS.get(method);
  }

  async _call(method, args) {
    const def = this._method(method);
    const message = request(method, def, args);
    return new Promise((resolve, reject) => {
      this._client.makeUnaryRequest(
        def.path, def.requestSerialize, def.responseDeserialize, message, this._metadata(), {},
        (err, reply) => (err ? reject(errorFromGrpc(err, this.target)) : resolve(reply)),
      );
    });
  }

  /** Every open session (SessionSummary), oldest first; with `principal`, that principal's
   * (`alice` includes its delegated callers, `alice/dlg_…`). */
  async listSessions(opts) {
    const { principal } = options('admin-list-sessions', opts, ['principal']);
    return (await this._call('Admin.ListSessions', { principal })).sessions;
  }

  /** A session's `summary` and its `custodians`, depth first from the root, each with its `handles`. */
  async describeSession(session) {
    return this._call('Admin.DescribeSession', { session: named('admin-describe-session', 'session-id?', session) });
  }

  /** Drop `session`, any principal's: every socket it holds is closed. {session, closed}. */
  async killSession(session, opts) {
    const who = 'admin-kill-session';
    const { reason } = options(who, opts, ['reason']);
    return this._call('Admin.KillSession', { session: named(who, 'session-id?', session), reason });
  }

  /** Close `handle` (a string, or a Handle object) of any session as a shutdown of its custodian
   * would: a TCP port closes its connection, a custodian its subtree, a root custodian the
   * session. {session, closed}: the handle's session, and how many handles closed. */
  async killHandle(handle, opts) {
    const who = 'admin-kill-handle';
    const { reason } = options(who, opts, ['reason']);
    return this._call('Admin.KillHandle', { handle: named(who, 'handle?', handle), reason });
  }

  /**
   * The daemon's events as they happen (AdminEvent), the first being `events.watch`:
   * `for await (const event of admin.watchEvents())`. Leaving the loop, `return()` or close()
   * ends the stream (the daemon forgets the watcher); `signal` (an AbortSignal) breaks it, and
   * the iterator then fails with BreakError. The call starts with the first `next()`.
   */
  watchEvents(opts) {
    const { signal } = options('admin-watch-events', opts, ['signal']);
    const method = 'Admin.WatchEvents';
    const def = this._method(method);
    const message = request(method, def, {});
    let call = null;
    let stopped = false;
    const stop = () => {
      stopped = true;
      if (call) call.cancel();
    };
    const broken = (code = null) => new BreakError('user break\n  operation: admin-watch-events', { code });
    const admin = this;
    async function* events() {
      if (stopped) return;
      if (signal?.aborted) throw broken();
      admin._method(method);
      call = admin._client.makeServerStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, message, admin._metadata());
      call.on('error', () => {}); // the loop below sees every error; the cancel at the end is expected
      admin._watches.add(stop);
      signal?.addEventListener('abort', stop, { once: true });
      try {
        for await (const event of call) yield event;
      } catch (err) {
        if (signal?.aborted) throw broken('CANCELLED');
        if (!stopped) throw errorFromGrpc(err, admin.target);
      } finally {
        signal?.removeEventListener('abort', stop);
        admin._watches.delete(stop);
        call.cancel();
      }
    }
    const it = events();
    return {
      next: () => it.next(),
      // A pending next() waits for the stream: cancel it first, so it ends now.
      return: (value) => {
        stop();
        return it.return(value);
      },
      throw: (err) => {
        stop();
        return it.throw(err);
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  /** End every event stream under way and close the channel. Idempotent. */
  close() {
    if (!this._closed) {
      this._closed = true;
      for (const stop of this._watches) stop();
      this._client.close();
    }
    return Promise.resolve();
  }
}

if (Symbol.asyncDispose) {
  Admin.prototype[Symbol.asyncDispose] = function () {
    return this.close();
  };
}

module.exports = { Admin };
