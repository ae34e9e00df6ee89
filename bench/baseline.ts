// The baseline: the least a Node UDP server can do per request (read a datagram, send two
// fixed bytes). qgreyd's throughput is reported as a share of this, measured in the same run.
import dgram from 'node:dgram';

const port = Number(process.argv[2] ?? 0);
const reply = Buffer.from([1, 3]);
const socket = dgram.createSocket('udp4');
socket.on('message', (_msg, rinfo) => socket.send(reply, rinfo.port, rinfo.address));
socket.bind(port, '127.0.0.1', () => {
  process.stdout.write(`listen=127.0.0.1:${socket.address().port}\n`);
});
process.on('SIGTERM', () => socket.close(() => process.exit(0)));
