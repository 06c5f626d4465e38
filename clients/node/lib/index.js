'use strict';
// sockbroker-client: Racket's racket/tcp and racket/udp on a sockbroker daemon's sockets, over gRPC.

const broker = require('./broker');
const { Admin } = require('./admin');
const errors = require('./errors');
const { PortStream, Datagram } = require('./streams');
const { defaultTokenFile, readTokenFile } = require('./files');

module.exports = {
  Broker: broker.Broker,
  Admin,
  Handle: broker.Handle,
  Port: broker.Port,
  Custodian: broker.Custodian,
  Listener: broker.Listener,
  InputPort: broker.InputPort,
  OutputPort: broker.OutputPort,
  UdpSocket: broker.UdpSocket,
  Evt: broker.Evt,
  EOF: broker.EOF,
  PortStream,
  Datagram,
  ...broker.events,
  BrokerError: errors.BrokerError,
  FailError: errors.FailError,
  ContractError: errors.ContractError,
  NetworkError: errors.NetworkError,
  NetworkErrnoError: errors.NetworkErrnoError,
  NotFoundError: errors.NotFoundError,
  PermissionDeniedError: errors.PermissionDeniedError,
  UnauthenticatedError: errors.UnauthenticatedError,
  TokenFileError: errors.TokenFileError,
  ResourceExhaustedError: errors.ResourceExhaustedError,
  BreakError: errors.BreakError,
  BrokerUnavailableError: errors.BrokerUnavailableError,
  defaultTokenFile,
  readTokenFile,
};
