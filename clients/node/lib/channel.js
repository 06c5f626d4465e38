'use strict';
// Redeeming a channel ticket (DESIGN §8, docs/channels.md): the connection's bytes out of band,
// on a plain net.Socket to the daemon's channel listener, relayed (spliced) by the daemon.

const net = require('node:net');
const { ContractError, makeError } = require('./errors');

/** Seconds to connect, send the ticket and read the answer. */
const REDEEM_SECONDS = 10;
const MAX_LINE = 4096;

/** Connect to `address` (HOST:PORT or unix:PATH), present `ticket`, and resolve to the socket
 * once the daemon has answered OK (rejects with the typed error of its ERR line). The socket
 * comes paused, as a server's with pauseOnConnect: pipe it, iterate it, or resume() it. */
function redeem(ticket, address) {
  const target = address.startsWith('unix:')
    ? { path: address.slice('unix:'.length) }
    : { host: address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, ''), port: Number(address.slice(address.lastIndexOf(':') + 1)) };
  return new Promise((resolve, reject) => {
    const socket = net.connect(target);
    let got = Buffer.alloc(0);
    const fail = (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(new ContractError(`channel: no answer from ${address} within ${REDEEM_SECONDS} s`)), REDEEM_SECONDS * 1000);
    const onData = (chunk) => {
      got = Buffer.concat([got, chunk]);
      const end = got.indexOf(10);
      if (end < 0) {
        if (got.length > MAX_LINE) fail(new ContractError('channel: the answer is not one line'));
        return;
      }
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('error', fail);
      socket.removeListener('end', onEnd);
      socket.pause();
      const line = got.subarray(0, end).toString('utf8');
      const rest = got.subarray(end + 1);
      if (line !== 'OK') {
        const refused = /^ERR (\S+) (.*)$/s.exec(line);
        fail(refused ? makeError(refused[1], refused[2]) : new ContractError(`channel: unexpected answer ${JSON.stringify(line)}`));
        return;
      }
      if (rest.length) socket.unshift(rest); // the connection's first bytes came with the answer
      resolve(socket);
    };
    const onEnd = () => fail(new ContractError('channel: the daemon closed before its answer'));
    socket.on('data', onData);
    socket.on('error', fail);
    socket.on('end', onEnd);
    socket.on('connect', () => socket.write(`${ticket}\n`));
  });
}

module.exports = { redeem };
