'use strict';
// The protos, loaded once from the repository's proto/ directory (the single source of truth):
// the broker's services and the admin service for calls, and google.rpc.Status + ErrorInfo to
// read the errors.
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

const FILES = ['sockbroker/v1/broker.proto', 'sockbroker/admin/v1/admin.proto'];

function load() {
  for (const name of FILES) {
    const file = path.join(PROTO_DIR, name);
    if (!fs.existsSync(file)) {
      throw new Error(`sockbroker-client: cannot find ${file} (set SOCKBROKER_PROTO_DIR to the repository's proto/ directory)`);
    }
  }
  return protoLoader.loadSync(FILES, LOADER_OPTIONS);
}

const definition = load();

/** Every RPC of the services of `pkg` by its short name ("Tcp.Listen", "Admin.ListSessions") →
 * its method definition, plus the camelCase names of its request's fields (to refuse unknown
 * arguments before the wire). */
function methods(pkg) {
  const found = new Map();
  for (const [name, service] of Object.entries(definition)) {
    if (!name.startsWith(pkg) || typeof service.format === 'string') continue;
    const serviceName = name.slice(pkg.length);
    for (const [rpc, method] of Object.entries(service)) {
      const fields = new Set(method.requestType.type.field.map((f) => camel(f.name)));
      found.set(`${serviceName}.${rpc}`, { ...method, fields });
    }
  }
  return found;
}

/** The broker's RPCs (sockbroker.v1), and the admin API's (sockbroker.admin.v1). */
const METHODS = methods('sockbroker.v1.');
const ADMIN_METHODS = methods('sockbroker.admin.v1.');

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

module.exports = { PROTO_DIR, METHODS, ADMIN_METHODS, Status, ErrorInfo };
