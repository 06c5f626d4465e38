'use strict';
// The protos, loaded once from the repository's proto/ directory (the single source of truth):
// the broker's services for calls, and google.rpc.Status + ErrorInfo to read the errors.
//
// Field names are camelCase, as JavaScript writes them (`localHostname`, `portNumbers`): the one
// choice for every message in and out. Messages come back with every plain field filled in
// (false, 0, ""), while an `optional` field and a member of a oneof are present only when the
// daemon set them; no `_field` oneof members are added.

const path = require('node:path');
const fs = require('node:fs');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

/** The repository's proto/ directory: SOCKBROKER_PROTO_DIR, else ../../proto from this package. */
const PROTO_DIR = process.env.SOCKBROKER_PROTO_DIR || path.resolve(__dirname, '..', '..', '..', 'proto');

const LOADER_OPTIONS = {
  includeDirs: [PROTO_DIR],
  keepCase: false,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: false,
};

function load() {
  const file = path.join(PROTO_DIR, 'sockbroker', 'v1', 'broker.proto');
  if (!fs.existsSync(file)) {
    throw new Error(`sockbroker-client: cannot find ${file} (set SOCKBROKER_PROTO_DIR to the repository's proto/ directory)`);
  }
  return protoLoader.loadSync('sockbroker/v1/broker.proto', LOADER_OPTIONS);
}

const definition = load();

/** Every RPC of the broker by its short name ("Tcp.Listen") → its method definition, plus the
 * camelCase names of its request's fields (to refuse unknown arguments before the wire). */
const METHODS = new Map();
for (const [name, service] of Object.entries(definition)) {
  if (!name.startsWith('sockbroker.v1.') || typeof service.format === 'string') continue;
  const serviceName = name.slice('sockbroker.v1.'.length);
  for (const [rpc, method] of Object.entries(service)) {
    const fields = new Set(method.requestType.type.field.map((f) => camel(f.name)));
    METHODS.set(`${serviceName}.${rpc}`, { ...method, fields });
  }
}

function camel(name) {
  return name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

// google.rpc.Status and ErrorInfo from the repository's copies; google/protobuf/any.proto is
// one of the well-known types protobufjs carries itself.
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (origin, target) =>
  target.startsWith('google/protobuf/') ? target : path.join(PROTO_DIR, target);
rpcRoot.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: false });
const Status = rpcRoot.lookupType('google.rpc.Status');
const ErrorInfo = rpcRoot.lookupType('google.rpc.ErrorInfo');

module.exports = { PROTO_DIR, METHODS, Status, ErrorInfo };
