// ports.mjs - free ports for tests that start their own `vectron serve`.
import net from 'node:net';

// Resolves with the port when `port` (0: any) can be listened on at
// 127.0.0.1 (the address the server binds, HTTP and Raft), else null.
export function tryListen(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(null));
    s.listen({ port, host: '127.0.0.1', exclusive: true }, () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

// A free HTTP port whose port + 1000 (the server's default Raft port) is free
// too.  A small race remains until the server binds them; a failed start
// shows up as "exited before it was ready" with the server log.
export async function pickPort() {
  for (let i = 0; i < 100; i++) {
    const p = await tryListen(0);
    if (p === null || p + 1000 > 65535) continue;
    if ((await tryListen(p + 1000)) !== null) return p;
  }
  throw new Error('no free port p with p+1000 free after 100 tries');
}
