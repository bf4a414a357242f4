// tls.test.mjs - HTTPS on the API (issue 13): `vectron serve --tls-cert
// --tls-key` with a certificate this test makes (OpenSSL from Debian).  A
// client that trusts it is served (raw fetch, and the real Qdrant client in
// a child process that trusts it through NODE_EXTRA_CA_CERTS); plain HTTP on
// the port gets no HTTP answer; a client that does not trust it refuses the
// connection; a key without its certificate, or one that does not match,
// stops the server at start with a reason.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, fetch as ufetch } from 'undici';
import { pickPort } from '../lib/ports.mjs';

const BIN = process.env.VECTRON_BIN;
const API = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const log = (m) => console.log(`# [tls] ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vx-tls-'));
const procs = [];
after(() => {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

function makeCert(name) {
  const key = path.join(dir, `${name}.key`), cert = path.join(dir, `${name}.crt`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
  return { key, cert, pem: fs.readFileSync(cert, 'utf8') };
}

test('serve speaks HTTPS with a certificate made here; plain HTTP and untrusting clients get nothing', { timeout: 120000 }, async () => {
  const c = makeCert('vectron-test');
  const port = await pickPort();
  const adminKey = `adm-${crypto.randomBytes(18).toString('hex')}`;
  const logPath = path.join(dir, 'serve.log');
  const fd = fs.openSync(logPath, 'a');
  const proc = spawn(BIN, ['serve', '--auth', 'on', '--data-dir', path.join(dir, 'data'), '--http-port', String(port),
    '--tls-cert', c.cert, '--tls-key', c.key], { stdio: ['ignore', fd, fd], env: { ...process.env, VECTRON_ADMIN_KEY: adminKey } });
  fs.closeSync(fd);
  procs.push(proc);
  const url = `https://127.0.0.1:${port}`;
  const trusting = new Agent({ connect: { ca: c.pem } });
  const get = (p, headers = {}) => ufetch(`${url}${p}`, { headers, dispatcher: trusting });
  for (const t0 = Date.now(); ; await sleep(100)) {
    assert.equal(proc.exitCode, null, fs.readFileSync(logPath, 'utf8').slice(-2000));
    try { if ((await get('/readyz')).status === 200) break; } catch { /* not yet */ }
    assert.ok(Date.now() - t0 < 30000, 'not ready over https in 30 s');
  }
  assert.match(fs.readFileSync(logPath, 'utf8'), /"scheme":"https"|scheme=https/);
  // authenticated requests over TLS
  const r = await get('/collections', { 'api-key': adminKey });
  assert.equal(r.status, 200);
  assert.equal((await get('/collections')).status, 401);

  // the real Qdrant client, trusting the certificate as a user would
  const script = `
    import { QdrantClient } from '@qdrant/js-client-rest';
    const c = new QdrantClient({ url: ${JSON.stringify(url)}, apiKey: ${JSON.stringify(adminKey)}, checkCompatibility: false });
    await c.createCollection('tls', { vectors: { size: 4, distance: 'Dot' } });
    await c.upsert('tls', { wait: true, points: [{ id: 1, vector: [1, 0, 0, 0], payload: { over: 'tls' } }] });
    const hits = await c.search('tls', { vector: [1, 0, 0, 0], limit: 1, with_payload: true });
    if (hits[0]?.id !== 1 || hits[0]?.payload?.over !== 'tls') throw new Error(JSON.stringify(hits));
    console.log('qdrant client over https: ok');`;
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: API, encoding: 'utf8', env: { ...process.env, NODE_EXTRA_CA_CERTS: c.cert }, timeout: 60000,
  });
  assert.equal(child.status, 0, `${child.stdout}\n${child.stderr}`);
  assert.match(child.stdout, /qdrant client over https: ok/);

  // a client that does not trust the certificate: the handshake fails
  await assert.rejects(ufetch(`${url}/readyz`, { dispatcher: new Agent() }), (e) => /certificate|self.signed|unable to verify/i.test(`${e.cause?.code} ${e.cause?.message}`));
  // plain HTTP on the TLS port: no HTTP answer comes back
  const plain = await new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    const t = setTimeout(() => { s.destroy(); resolve(data); }, 5000);
    s.on('connect', () => s.write('GET /collections HTTP/1.1\r\nHost: x\r\n\r\n'));
    s.on('data', (d) => { data = Buffer.concat([data, d]); });
    s.on('error', () => {});
    s.on('close', () => { clearTimeout(t); resolve(data); });
  });
  assert.ok(!plain.toString('latin1').startsWith('HTTP/'), `plain HTTP answered: ${plain.toString('latin1').slice(0, 80)}`);
  log(`https on ${port}: served with the certificate; plain HTTP got ${plain.length} bytes and no HTTP answer`);
  proc.kill('SIGTERM');
  await new Promise((res) => proc.once('exit', res));
});

test('a certificate without its key, or a key that does not match, stops serve at start', { timeout: 60000 }, async () => {
  const a = makeCert('a'), b = makeCert('b');
  const run = (...args) => spawnSync(BIN, ['serve', '--data-dir', path.join(dir, 'bad'), '--http-port', '1', ...args], { encoding: 'utf8', timeout: 30000 });
  const only = run('--tls-cert', a.cert);
  assert.notEqual(only.status, 0);
  assert.match(only.stderr, /both tls_cert and tls_key/);
  const mismatch = run('--tls-cert', a.cert, '--tls-key', b.key, '--http-port', String(await pickPort()));
  assert.notEqual(mismatch.status, 0, 'a key that is not the certificate\'s');
  assert.match(mismatch.stderr, /TLS certificate and key/);
  const missing = run('--tls-cert', path.join(dir, 'nope.crt'), '--tls-key', a.key);
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /cannot be read/);
});
