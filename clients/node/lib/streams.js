'use strict';
// The streaming paths: a TCP connection's bytes as a Node Duplex (Ports.Stream), and UDP
// datagrams as async iterators (Udp.ReceiveStream) or from any iterable (Udp.SendStream).

const { Duplex } = require('node:stream');
const { NetworkError } = require('./errors');

/** Largest data frame sent on a byte stream; the daemon's own frames are at most 256 KiB. */
const FRAME = 256 * 1024;

/**
 * The bytes of one TCP connection both ways, over a Ports.Stream call.
 *
 * Writing sends data frames, each written only when the previous one was taken by the HTTP/2
 * stream (backpressure); end() sends an eof frame, which closes the connection's output port
 * (a FIN), while reading goes on. The peer's FIN ends the readable side. Reading pauses the
 * gRPC call while the readable buffer is full, so HTTP/2 flow control holds the daemon back.
 * destroy() cancels the call. grpc-js sends END_STREAM at once and the RST_STREAM a few ms
 * later; until the reset arrives the daemon sees a half-close: it sends the peer a FIN and goes
 * on delivering the peer's bytes to this stream, where grpc-js drops them. Bytes the peer sends
 * after the daemon has the reset stay in the port. The input port stays open.
 */
class PortStream extends Duplex {
  constructor(call, translate) {
    super({ allowHalfOpen: true });
    this._call = call;
    this._ended = false;
    call.on('data', (frame) => {
      if (frame.eof) return this._end();
      if (frame.data.length && !this.push(frame.data)) call.pause();
    });
    call.on('end', () => this._end());
    call.on('error', (err) => {
      if (!this.destroyed) this.destroy(translate(err));
    });
    call.pause();
  }

  _end() {
    if (!this._ended) {
      this._ended = true;
      this.push(null);
    }
  }

  _read() {
    this._call.resume();
  }

  _write(chunk, _encoding, callback) {
    let offset = 0;
    const next = (err) => {
      if (err || offset >= chunk.length) return callback(err);
      const piece = chunk.subarray(offset, offset + FRAME);
      offset += piece.length;
      this._call.write({ data: piece }, next);
    };
    next();
  }

  _final(callback) {
    this._call.write({ eof: true }, (err) => {
      if (!err) this._call.end();
      callback(err);
    });
  }

  _destroy(err, callback) {
    this._call.cancel();
    callback(err);
  }
}

/** A datagram as it arrived: its bytes and its source. */
class Datagram {
  constructor(data, host, port) {
    this.data = data;
    this.host = host;
    this.port = port;
  }
}

const PRINTABLE_ASCII = /^[\x21-\x7e]*$/;

/**
 * The datagrams of DatagramBatch.packed (docs/wire.md): records back to back, each a data
 * length (uint32, big-endian), a host length (uint8), the host (printable ASCII), a port
 * (uint16, big-endian) and the data. A malformed record is a NetworkError (the daemon sent it).
 */
function unpackDatagrams(packed) {
  const out = [];
  const end = packed.length;
  let offset = 0;
  while (offset < end) {
    const at = `udp-receive-stream: malformed packed datagrams: record at byte ${offset}`;
    if (offset + 5 > end) throw new NetworkError(`${at}: truncated header`);
    const size = packed.readUInt32BE(offset);
    const hostEnd = offset + 5 + packed[offset + 4];
    if (hostEnd + 2 > end) throw new NetworkError(`${at}: truncated host or port`);
    const host = packed.toString('latin1', offset + 5, hostEnd);
    if (!PRINTABLE_ASCII.test(host)) throw new NetworkError(`${at}: the host is not printable ASCII`);
    const port = packed.readUInt16BE(hostEnd);
    offset = hostEnd + 2 + size;
    if (offset > end) throw new NetworkError(`${at}: ${size} bytes of data, ${end - hostEnd - 2} left`);
    out.push(new Datagram(packed.subarray(hostEnd + 2, offset), host, port));
  }
  return out;
}

/** Datagrams of a Udp.ReceiveStream call (asked for packed batches), one at a time; leaving the
 * loop cancels the call. A batch's `datagrams` come first, then its `packed` ones. */
async function* receiveDatagrams(call, translate) {
  call.on('error', () => {}); // the iterator below sees every error; the cancel at the end is expected
  try {
    for await (const batch of call) {
      for (const d of batch.datagrams) yield new Datagram(d.data, d.host, d.port);
      if (batch.packed && batch.packed.length) yield* unpackDatagrams(batch.packed);
    }
  } catch (err) {
    throw translate(err);
  } finally {
    call.cancel();
  }
}

/** One datagram to send, from a Datagram-like object or a [data, host, port] array. */
function outgoing(item) {
  if (Array.isArray(item)) {
    const [data, host = '', port = 0] = item;
    return { data, host, port };
  }
  return { data: item.data, host: item.host || '', port: item.port || 0 };
}

module.exports = { PortStream, Datagram, receiveDatagrams, unpackDatagrams, outgoing, FRAME };
