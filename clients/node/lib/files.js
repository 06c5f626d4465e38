'use strict';
// The client's local files: the token file, and the daemon's runtime file that says where it
// listens (the same rules as the Python client's _files.py).
//
// A path from the environment may name anything: a named pipe (an open that waits forever), a
// device, a huge file. So both are read one careful way: refused unless stat says regular
// file, opened with O_NONBLOCK, checked again with fstat, and read up to a byte limit.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { TokenFileError } = require('./errors');

const MAX_TOKEN_BYTES = 4096;
const MAX_RUNTIME_FILE_BYTES = 64 * 1024;
const DEFAULT_TARGET = '127.0.0.1:50051';
/** A daemon listening on every address is reached on loopback. */
const WILDCARDS = { '0.0.0.0': '127.0.0.1', '[::]': '[::1]' };

class Unreadable extends Error {
  constructor(reason, errno = null) {
    super(reason);
    this.errno = errno;
  }
}

function kindOf(st) {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a named pipe';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'of an unknown kind';
}

function osReason(err) {
  const text = String(err.message || err).replace(/^[A-Z]+: /, '').replace(/, \w+ '.*'$/, '');
  return new Unreadable(text, typeof err.errno === 'number' ? -err.errno : null);
}

/** At most `limit` bytes of the regular file at `file`; Unreadable for anything else. */
function readRegular(file, limit) {
  let fd;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new Unreadable(`is ${kindOf(st)}, not a regular file`);
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
  } catch (err) {
    throw err instanceof Unreadable ? err : osReason(err);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Unreadable(`is ${kindOf(st)}, not a regular file`);
    const buffer = Buffer.alloc(limit + 1);
    let length = 0;
    while (length <= limit) {
      const n = fs.readSync(fd, buffer, length, limit + 1 - length, null);
      if (n === 0) break;
      length += n;
    }
    if (length > limit) throw new Unreadable(`is larger than ${limit} bytes`);
    return buffer.subarray(0, length);
  } catch (err) {
    throw err instanceof Unreadable ? err : osReason(err);
  } finally {
    fs.closeSync(fd);
  }
}

/** $SOCKBROKER_TOKEN_FILE, else $XDG_RUNTIME_DIR/sockbroker/token, else ~/.local/share/sockbroker/token. */
function defaultTokenFile() {
  if (process.env.SOCKBROKER_TOKEN_FILE) return process.env.SOCKBROKER_TOKEN_FILE;
  const base = process.env.XDG_RUNTIME_DIR || path.join(os.homedir(), '.local', 'share');
  return path.join(base, 'sockbroker', 'token');
}

/** The token in `file`: surrounding whitespace stripped, visible ASCII only. */
function readTokenFile(file) {
  const where = `token file ${file}`;
  let data;
  try {
    data = readRegular(file, MAX_TOKEN_BYTES);
  } catch (err) {
    const errno = err.errno ?? null;
    throw new TokenFileError(`${where}: ${err.message}`, { errno, errnoFamily: errno === null ? null : 'posix' });
  }
  if (data.some((byte) => byte > 0x7e)) throw new TokenFileError(`${where}: holds non-ASCII bytes, so it holds no token`);
  const token = data.toString('ascii').trim();
  if (!token) throw new TokenFileError(`${where}: is empty`);
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new TokenFileError(`${where}: holds spaces or control characters, so it holds no token`);
  }
  return token;
}

/** $SOCKBROKER_RUNTIME_FILE, else runtime.json beside the token file. */
function runtimeFile(tokenFile) {
  return process.env.SOCKBROKER_RUNTIME_FILE || path.join(path.dirname(tokenFile), 'runtime.json');
}

function alive(pid) {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM'; // another user's process: a daemon run as a service user
  }
}

/** The gRPC address the running daemon's runtime file names, or null (no file, not the
 * daemon's, or its daemon no longer runs). */
function runtimeTarget(file) {
  let content;
  try {
    content = JSON.parse(readRegular(file, MAX_RUNTIME_FILE_BYTES).toString('utf8'));
  } catch {
    return null;
  }
  if (!content || typeof content !== 'object' || !alive(content.pid)) return null;
  const address = content.grpc_address;
  if (typeof address !== 'string' || !address) return null;
  const colon = address.lastIndexOf(':');
  if (colon < 0) return address;
  const host = address.slice(0, colon);
  return `${WILDCARDS[host] || host}${address.slice(colon)}`;
}

/** $SOCKBROKER_GRPC, else the runtime file's address, else 127.0.0.1:50051. */
function defaultTarget(tokenFile) {
  return process.env.SOCKBROKER_GRPC || runtimeTarget(runtimeFile(tokenFile)) || DEFAULT_TARGET;
}

module.exports = { defaultTokenFile, readTokenFile, runtimeFile, runtimeTarget, defaultTarget, MAX_TOKEN_BYTES };
