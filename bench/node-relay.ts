/**
 * The dataplane bench's baseline: the simplest UDP hop Node can do. One socket receives on
 * 127.0.0.1:<listen-port>, one connected socket sends each datagram on, unchanged, to
 * <dest-host>:<dest-port>. No state, no parsing, no threads: what an NF instance costs is measured
 * against this, in the same run, with the same packets.
 *
 *   node dist/bench/node-relay.js 0 127.0.0.1 9001    # stdout: {"port":40123}
 *
 * It exits on SIGTERM or SIGINT, or when its stdin closes, so a parent that dies does not leave it
 * running. This file is its own entry point, so it reads process globals itself.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';

// The same receive buffer an NF instance asks for, so neither side of the comparison drops more.
const SOCKET_BUFFER = 8 * 1024 * 1024;

function port(text: string | undefined, min: number): number {
  const n = Number(text);
  if (text === undefined || !/^\d+$/.test(text) || n < min || n > 65535) {
    process.stderr.write('usage: node-relay <listen-port> <dest-host> <dest-port>\n');
    process.exit(2);
  }
  return n;
}

const [listenArg, destHost, destArg] = process.argv.slice(2);
const listenPort = port(listenArg, 0);
const destPort = port(destArg, 1);
if (destHost === undefined) process.exit(2);

const rx = dgram.createSocket({ type: 'udp4', recvBufferSize: SOCKET_BUFFER });
const tx = dgram.createSocket({ type: 'udp4', sendBufferSize: SOCKET_BUFFER });
let received = 0;
let sendErrors = 0;
// A refused send (the destination not yet or no longer listening) is the destination's loss, not ours.
tx.on('error', () => {
  sendErrors++;
});
rx.on('error', (err) => {
  process.stderr.write(`node-relay: ${err.message}\n`);
  process.exit(1);
});

tx.connect(destPort, destHost);
await once(tx, 'connect');
rx.on('message', (msg) => {
  received++;
  tx.send(msg);
});
rx.bind(listenPort, '127.0.0.1');
await once(rx, 'listening');

let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  rx.close();
  tx.close();
  process.stdout.write(JSON.stringify({ received, sendErrors }) + '\n');
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
process.stdout.write(JSON.stringify({ port: rx.address().port }) + '\n');
