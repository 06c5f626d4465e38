'use strict';
// Typed errors, rebuilt from the daemon's gRPC status and its google.rpc.ErrorInfo detail
// (docs/errors.md), in one place: errorFromGrpc.
//
//   BrokerError
//   ├── FailError                exn:fail                 an operation on a closed TCP port
//   ├── ContractError            exn:fail:contract        a bad argument (also refused here, before the wire)
//   ├── NetworkError             exn:fail:network         a handle in the wrong state
//   │   └── NetworkErrnoError    exn:fail:network:errno   the OS refused (.errno, .errnoFamily)
//   ├── NotFoundError            not-found
//   ├── PermissionDeniedError    permission-denied
//   ├── UnauthenticatedError     unauthenticated
//   │   └── TokenFileError       unauthenticated          no token in the token file (client side only)
//   ├── ResourceExhaustedError   resource-exhausted
//   ├── BreakError               exn:break                the call was cancelled (AbortSignal, deadline)
//   └── BrokerUnavailableError   unavailable              no daemon answered (client side only)

const grpc = require('@grpc/grpc-js');
const { Status, ErrorInfo } = require('./proto');

const ERROR_DOMAIN = 'sockbroker';
const UNAVAILABLE = 'unavailable';

class BrokerError extends Error {
  /**
   * @param {string} message the Racket-style message
   * @param {{kind?: string, errno?: number|null, errnoFamily?: string|null, code?: string|null}} [info]
   */
  constructor(message, { kind, errno = null, errnoFamily = null, code = null } = {}) {
    super(message);
    this.name = new.target.name;
    this.message = message;
    if (kind) this.kind = kind;
    /** The OS's errno (posix) or resolver code (gai), or null. */
    this.errno = errno;
    /** 'posix', 'gai' or null. */
    this.errnoFamily = errnoFamily;
    /** The gRPC status name that carried the error ('UNAVAILABLE'…), or null when raised here. */
    this.code = code;
  }
}
BrokerError.prototype.kind = '';

const CLASSES = {};
function kindClass(name, kind, parent = BrokerError) {
  const cls = { [name]: class extends parent {} }[name];
  cls.prototype.kind = kind;
  CLASSES[kind] = cls;
  return cls;
}

const FailError = kindClass('FailError', 'exn:fail');
const ContractError = kindClass('ContractError', 'exn:fail:contract');
const NetworkError = kindClass('NetworkError', 'exn:fail:network');
const NetworkErrnoError = kindClass('NetworkErrnoError', 'exn:fail:network:errno', NetworkError);
const NotFoundError = kindClass('NotFoundError', 'not-found');
const PermissionDeniedError = kindClass('PermissionDeniedError', 'permission-denied');
const UnauthenticatedError = kindClass('UnauthenticatedError', 'unauthenticated');
const ResourceExhaustedError = kindClass('ResourceExhaustedError', 'resource-exhausted');
const BreakError = kindClass('BreakError', 'exn:break');
const BrokerUnavailableError = kindClass('BrokerUnavailableError', UNAVAILABLE);
/** The client found no usable token in its token file (missing, not a regular file, too large, empty). */
class TokenFileError extends UnauthenticatedError {}

/** kind → gRPC status name (DESIGN §4; sockbroker_wire.errors.WIRE_STATUS). */
const WIRE_STATUS = {
  'exn:fail:contract': 'INVALID_ARGUMENT',
  'exn:fail': 'FAILED_PRECONDITION',
  'exn:fail:network': 'FAILED_PRECONDITION',
  'exn:fail:network:errno': 'UNAVAILABLE',
  'not-found': 'NOT_FOUND',
  'permission-denied': 'PERMISSION_DENIED',
  unauthenticated: 'UNAUTHENTICATED',
  'resource-exhausted': 'RESOURCE_EXHAUSTED',
  'exn:break': 'CANCELLED',
};

const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, value]) => [value, name]));

/** The kind a status alone says, when no ErrorInfo names one (a status grpc or a proxy made). */
function kindOfCode(codeName) {
  if (codeName === 'UNAVAILABLE') return UNAVAILABLE;
  if (codeName === 'DEADLINE_EXCEEDED' || codeName === 'CANCELLED') return 'exn:break';
  // Of the kinds sharing one status, the one the others refine (exn:fail over exn:fail:network).
  const kinds = Object.keys(WIRE_STATUS)
    .filter((kind) => WIRE_STATUS[kind] === codeName)
    .sort((a, b) => a.length - b.length);
  return kinds.length && kinds.every((k) => k === kinds[0] || k.startsWith(`${kinds[0]}:`)) ? kinds[0] : '';
}

function errorInfo(metadata) {
  const values = metadata && typeof metadata.get === 'function' ? metadata.get('grpc-status-details-bin') : [];
  for (const value of values) {
    if (!Buffer.isBuffer(value)) continue;
    let status;
    try {
      status = Status.decode(value);
    } catch {
      return null;
    }
    for (const detail of status.details || []) {
      // protobufjs's own google.protobuf.Any keeps the proto's snake_case names
      if (!String(detail.type_url ?? detail.typeUrl).endsWith('/google.rpc.ErrorInfo')) continue;
      try {
        const info = ErrorInfo.decode(detail.value);
        if (info.domain === ERROR_DOMAIN) return { info, message: status.message };
      } catch {
        // a detail that is not an ErrorInfo after all: the status code decides below
      }
    }
  }
  return null;
}

function parseErrno(value) {
  if (value === undefined || value === '') return null;
  const number = Number(value);
  return Number.isInteger(number) ? number : null;
}

/** Make the typed error of `kind` (BrokerError itself for a kind this client does not know). */
function makeError(kind, message, extra = {}) {
  const cls = CLASSES[kind] || BrokerError;
  return new cls(message, { kind, ...extra });
}

/**
 * The one place a failed gRPC call becomes a typed error. `target` names the daemon for the
 * "no daemon answers" message.
 */
function errorFromGrpc(err, target) {
  if (err instanceof BrokerError) return err;
  const code = typeof err.code === 'number' ? CODE_NAMES[err.code] || 'UNKNOWN' : 'UNKNOWN';
  const found = errorInfo(err.metadata);
  if (found) {
    const { info, message } = found;
    const meta = info.metadata || {};
    return makeError(info.reason, message || err.details || '', {
      errno: parseErrno(meta.errno),
      errnoFamily: meta.errnoFamily || meta.errno_family || null,
      code,
    });
  }
  const kind = kindOfCode(code);
  const details = err.details || err.message || code;
  if (kind === UNAVAILABLE) {
    const line = String(details).split('\n')[0].slice(0, 300);
    return makeError(kind, `no sockbroker daemon answers at ${target}: ${line}`, { code });
  }
  return makeError(kind, String(details), { code });
}

/** A contract error raised here, before the wire, in Racket's words. */
function contractViolation(who, expected, given) {
  return new ContractError(`${who}: contract violation\n  expected: ${expected}\n  given: ${show(given)}`);
}

function show(value) {
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (Buffer.isBuffer(value)) return `<Buffer ${value.length} bytes>`;
  try {
    return typeof value === 'object' && value !== null ? JSON.stringify(value) ?? String(value) : String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

module.exports = {
  BrokerError,
  FailError,
  ContractError,
  NetworkError,
  NetworkErrnoError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  TokenFileError,
  ResourceExhaustedError,
  BreakError,
  BrokerUnavailableError,
  errorFromGrpc,
  contractViolation,
  makeError,
};
