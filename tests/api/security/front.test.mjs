// front.test.mjs - the HTTP front cannot be starved or flooded (issue 13):
// credentials are checked on the headers before any body is read, one
// address holds a bounded number of connections, and a request's headers
// and body each have a total deadline, so a slowloris is cut off and a
// legitimate client is served meanwhile.  `vectron serve --auth on` with
// --conn-timeout-s 3 --body-timeout-s 4 (short, so the test is quick); the
// attacker speaks from 127.0.0.2, the legitimate client from 127.0.0.1.
//
//   tests/api/durability/run.sh PATH/TO/vectron security
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pickPort } from '../lib/ports.mjs';

const BIN = process.env.VECTRON_BIN;
const log = (m) => console.log(`# [front] ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const HEADERS_S = 3, BODY_S = 4, PER_ADDRESS = 128;
let srv;
after(() => {
  if (srv && srv.proc.exitCode === null) srv.proc.kill('SIGKILL');
  if (srv) {
    fs.rmSync(srv.dir, { recursive: true, force: true });
    fs.rmSync(`${srv.dir}.log`, { force: true });
  }
});

async function start() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vx-front-'));
  const port = await pickPort();
  const adminKey = `adm-${crypto.randomBytes(18).toString('hex')}`;
  const fd = fs.openSync(`${dir}.log`, 'a');
  const proc = spawn(BIN, ['serve', '--auth', 'on', '--data-dir', dir, '--http-port', String(port),
    '--conn-timeout-s', String(HEADERS_S), '--body-timeout-s', String(BODY_S),
    '--max-connections-per-address', String(PER_ADDRESS), '--rate-per-address', '0'], {
    stdio: ['ignore', fd, fd], env: { ...process.env, VECTRON_ADMIN_KEY: adminKey },
  });
  fs.closeSync(fd);
  const s = { dir, port, proc, adminKey, url: `http://127.0.0.1:${port}` };
  for (const t0 = Date.now(); ; await sleep(50)) {
    assert.equal(proc.exitCode, null, fs.readFileSync(`${dir}.log`, 'utf8').slice(-2000));
    try { if ((await fetch(`${s.url}/readyz`)).status === 200) return s; } catch { /* not yet */ }
    assert.ok(Date.now() - t0 < 30000, 'serve not ready in 30 s');
  }
}

const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);

async function call(method, p, body, headers = {}) {
  const r = await fetch(`${srv.url}${p}`, {
    method, headers: { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(30000),
  });
  const text = await r.text();
  return { status: r.status, text };
}

// A raw connection from `local`: sends `head`, then `chunk` every `everyMs`
// (up to `maxBytes`), and reports what came back and when it was closed.
function raw(local, head, { chunk = null, everyMs = 0, maxBytes = Infinity, waitMs = 30000 } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = net.connect({ port: srv.port, host: '127.0.0.1', localAddress: local });
    let data = '', sent = 0, timer = null, done = false;
    const finish = (closed) => {
      if (done) return;
      done = true;
      clearInterval(timer);
      clearTimeout(give);
      resolve({ data, closed, ms: Date.now() - t0, sent });
    };
    const give = setTimeout(() => { s.destroy(); finish(false); }, waitMs);
    s.on('connect', () => {
      s.write(head);
      if (chunk) timer = setInterval(() => {
        if (sent >= maxBytes || s.destroyed) return;
        s.write(chunk, () => {});
        sent += chunk.length;
      }, everyMs);
    });
    s.on('data', (d) => { data += d.toString('latin1'); });
    s.on('error', () => {});
    s.on('close', () => finish(true));
  });
}

test('credentials are checked on the headers: a refused request reads and buffers no body', { timeout: 120000 }, async () => {
  srv = await start();
  const H = { 'api-key': srv.adminKey };
  assert.equal((await call('PUT', '/collections/c', { vectors: { size: 4, distance: 'Dot' } }, H)).status, 200);
  const ro = JSON.parse((await call('POST', '/v1/admin/keys', { role: 'read' }, H)).text).result.key;
  const rss0 = rssKiB(srv.proc.pid);
  // 8 uploads announcing 32 MiB each, streaming 1 MiB every 50 ms: without
  // credentials, and with a read-only key on a write route
  const big = Buffer.alloc(1 << 20, 0x20);
  const head = (extra) => `PUT /collections/c/points?wait=true HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${extra}Content-Length: ${32 << 20}\r\n\r\n`;
  const rs = await Promise.all(Array.from({ length: 8 }, (_, i) =>
    raw('127.0.0.1', head(i % 2 ? `api-key: ${ro}\r\n` : ''), { chunk: big, everyMs: 50, maxBytes: 32 << 20, waitMs: 20000 })));
  const rss1 = rssKiB(srv.proc.pid);
  for (const [i, r] of rs.entries()) {
    assert.match(r.data, i % 2 ? /^HTTP\/1\.1 403 / : /^HTTP\/1\.1 401 /, `upload ${i}: ${r.data.slice(0, 100)}`);
    assert.ok(r.closed, `upload ${i}: the connection is closed (its body is not read)`);
  }
  log(`8 refused 32 MiB uploads: answered in ${Math.max(...rs.map((r) => r.ms))} ms at most; RSS ${rss0} -> ${rss1} KiB`);
  assert.ok(rss1 - rss0 < 16 * 1024, `RSS grew ${rss1 - rss0} KiB (the bodies were buffered?)`);
  // a route that needs no credentials takes a small body only
  const login = await raw('127.0.0.1', `POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${1 << 20}\r\n\r\n`, { waitMs: 10000 });
  assert.match(login.data, /^HTTP\/1\.1 413 /);
  // and a valid key still uploads
  assert.equal((await call('PUT', '/collections/c/points?wait=true', { points: [{ id: 1, vector: [1, 2, 3, 4] }] }, H)).status, 200);
});

test('a slowloris from one address is bounded and cut off; a legitimate client is served within a second', { timeout: 180000 }, async () => {
  const H = { 'api-key': srv.adminKey };
  const rss0 = rssKiB(srv.proc.pid);
  const N = 1000;
  // each sends a request line and then one header byte a second, never finishing
  const loris = Array.from({ length: N }, () => raw('127.0.0.2', 'POST /collections/c/points/search HTTP/1.1\r\nHost: x\r\n',
    { chunk: Buffer.from('X'), everyMs: 1000, waitMs: 60000 }));
  await sleep(500);
  // the legitimate client, meanwhile: every request answered within a second
  let worst = 0;
  const t0 = Date.now();
  while (Date.now() - t0 < (HEADERS_S + 3) * 1000) {
    const t = Date.now();
    const r = await call('POST', '/collections/c/points/search', { vector: [1, 1, 1, 1], limit: 1 }, H);
    assert.equal(r.status, 200, r.text);
    worst = Math.max(worst, Date.now() - t);
    await sleep(100);
  }
  const rss1 = rssKiB(srv.proc.pid);
  const results = await Promise.all(loris);
  const refusedAtOnce = results.filter((r) => r.closed && r.ms < 1000).length;
  const cut = results.filter((r) => r.closed && r.ms >= 1000);
  log(`slowloris: ${N} connections from one address; ${refusedAtOnce} refused at once, ${cut.length} cut off after ${Math.min(...cut.map((r) => r.ms))}..${Math.max(...cut.map((r) => r.ms))} ms; the legitimate client's worst request ${worst} ms; RSS ${rss0} -> ${rss1} KiB`);
  assert.ok(worst < 1000, `a legitimate request took ${worst} ms`);
  assert.ok(results.every((r) => r.closed), 'every slowloris connection was closed');
  assert.ok(cut.length <= PER_ADDRESS, `${cut.length} connections held from one address (limit ${PER_ADDRESS})`);
  assert.ok(refusedAtOnce >= N - PER_ADDRESS, `${refusedAtOnce} refused at once`);
  // cut off by the total deadline (3 s), not left to trickle for ever (each sent a byte a second)
  for (const r of cut) assert.ok(r.ms < (HEADERS_S + 5) * 1000, `a trickling connection lived ${r.ms} ms`);
  assert.ok(rss1 - rss0 < 64 * 1024, `RSS grew ${rss1 - rss0} KiB`);
});

test('a body that trickles in is cut off at its deadline', { timeout: 60000 }, async () => {
  const r = await raw('127.0.0.1', `PUT /collections/c/points?wait=true HTTP/1.1\r\nHost: x\r\napi-key: ${srv.adminKey}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"points":[`,
    { chunk: Buffer.from(' '), everyMs: 500, waitMs: 30000 });
  log(`a trickling body: closed after ${r.ms} ms (deadline ${BODY_S} s)`);
  assert.ok(r.closed, 'closed');
  assert.ok(r.ms >= (BODY_S - 1) * 1000 && r.ms < (BODY_S + 5) * 1000, `closed after ${r.ms} ms`);
  assert.equal(srv.proc.exitCode, null);
});
