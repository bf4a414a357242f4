// ports.test.mjs - every internal port attacked the way an outsider would
// (issue 13): raw sockets to the Raft, snapshot and RPC ports of `vectron
// serve` and of a local cluster (scripts/cluster.sh, with the secret it
// makes), without credentials, with a wrong secret, with the old
// unauthenticated handshakes (a VXSN request once streamed a shard's
// snapshot; a VXRH one handed the socket to libraft, where two forged
// AppendEntries made an attacker's key an admin and one with a high term
// crashed serve).  Each must be closed having sent nothing but its
// challenge, and the server must go on unharmed.  And no role starts
// beyond loopback without a cluster secret.
//
//   tests/api/durability/run.sh PATH/TO/vectron security
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pickPort } from '../lib/ports.mjs';

const BIN = process.env.VECTRON_BIN;
const SEED = Number(process.env.VX_SEED || crypto.randomBytes(4).readUInt32LE(0));
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const CLUSTER = path.join(ROOT, 'scripts/cluster.sh');
const log = (m) => console.log(`# [security] ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
log(`VX_SEED=${SEED} VECTRON_BIN=${BIN}`);

const cleanups = [];
after(async () => {
  for (const f of cleanups.reverse()) {
    try {
      await f();
    } catch {
      /* best effort */
    }
  }
});

// ---- the handshake, as src/base/handshake.c and src/raft/node.h define it ----------------

const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
const u64 = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return b; };
function hsTag(secret, label, na, nc, claim) {
  const h = crypto.createHmac('sha256', Buffer.from(secret));
  for (const part of [Buffer.from(label), na, nc ?? Buffer.alloc(0), claim]) {
    h.update(u64(part.length));
    h.update(part);
  }
  return h.digest();
}
// the connector's message for challenge ch, signed with `secret`
function raftHello(ch, { secret, magic = 'VXRH', gid = 1, id = 1, arg = 0, address = '127.0.0.1:1' }) {
  const fixed = Buffer.concat([Buffer.from(magic), u32(2), u64(gid), u64(id), u64(arg), u32(address.length), u32(0)]);
  const claim = Buffer.concat([fixed, Buffer.from(address)]);
  const nc = crypto.randomBytes(32);
  return Buffer.concat([claim, nc, hsTag(secret, 'vectron-raft-v2 connector', ch.subarray(8, 40), nc, claim)]);
}
// the version-1 handshakes (no authentication): what the attacks used
function v1Hello(magic, gid, idOrIndex, address = '127.0.0.1:1') {
  return Buffer.concat([Buffer.from(magic), u32(1), u64(gid), u64(idOrIndex), u32(address.length), u32(0), Buffer.from(address)]);
}
// bytes shaped like libraft messages: an AppendEntries-sized preamble and a
// high term, then more
const forgedRaft = () => Buffer.concat([u64(3), u64(48), u64(1e9), u64(0), u64(0), u64(0), u64(0), u64(0), crypto.randomBytes(256)]);

// Connect, optionally read the first `first` bytes, send `send(first)`, then
// read until the server closes (deadline ms).  Returns everything read.
function attack(port, { first = 40, send = () => null, deadline = 20000 } = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    let sent = false;
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`port ${port}: not closed within ${deadline} ms (read ${data.length} bytes)`)); }, deadline);
    s.on('data', (d) => {
      data = Buffer.concat([data, d]);
      if (!sent && data.length >= first) {
        sent = true;
        const out = send(data.subarray(0, first));
        if (out) s.write(out);
      }
    });
    s.on('connect', () => {
      if (first === 0) {
        sent = true;
        const out = send(Buffer.alloc(0));
        if (out) s.write(out);
      }
    });
    s.on('error', () => {}); // a reset is a close too
    s.on('close', () => { clearTimeout(timer); resolve(data); });
  });
}

// every attack on a Raft port: each is closed after the 40-byte challenge
async function attackRaftPort(port, what, { gids = [0, 1, 2, 3] } = {}) {
  const wrong = crypto.randomBytes(32).toString('hex');
  const cases = [
    ['nothing sent (deadline)', () => null],
    ['garbage', () => crypto.randomBytes(4096)],
    ...gids.flatMap((gid) => [
      [`v1 VXRH group ${gid} + forged AppendEntries`, () => Buffer.concat([v1Hello('VXRH', gid, 77), forgedRaft()])],
      [`v1 VXSN group ${gid} (snapshot request)`, () => v1Hello('VXSN', gid, 0)],
      [`v2 VXRH group ${gid}, wrong secret, + forged AppendEntries`, (ch) => Buffer.concat([raftHello(ch, { secret: wrong, gid, id: 77 }), forgedRaft()])],
      [`v2 VXSN group ${gid}, wrong secret`, (ch) => raftHello(ch, { secret: wrong, magic: 'VXSN', gid, id: 2 })],
      [`v2 VXRH group ${gid}, no secret`, (ch) => raftHello(ch, { secret: '', gid, id: 2 })],
    ]),
  ];
  // in waves of 12: a node takes at most 64 pending handshakes from one
  // address, and its own peers share 127.0.0.1 here
  const results = [];
  for (let i = 0; i < cases.length; i += 12)
    results.push(...await Promise.all(cases.slice(i, i + 12).map(async ([name, send]) => ({ name, got: await attack(port, { send }) }))));
  for (const { name, got } of results) {
    assert.equal(got.length, 40, `${what} port ${port}, ${name}: read ${got.length} bytes, want only the 40-byte challenge`);
    assert.equal(got.subarray(0, 4).toString(), 'VXCH', `${what}: a challenge`);
  }
  log(`${what} port ${port}: ${cases.length} attacks, each closed after the challenge`);
}

// every attack on an RPC port: each is closed, having read at most the hello
// and an error frame, never data
async function attackRpcPort(port, what) {
  const wrong = crypto.randomBytes(32).toString('hex');
  const cases = [
    ['garbage', () => crypto.randomBytes(4096)],
    ['wrong secret', (hello) => Buffer.concat([hello.subarray(0, 8), hsTag(wrong, 'vectron-rpc-v1 client', hello.subarray(8, 40), null, Buffer.alloc(0))])],
    ['no secret', (hello) => Buffer.concat([hello.subarray(0, 8), hsTag('', 'vectron-rpc-v1 client', hello.subarray(8, 40), null, Buffer.alloc(0))])],
    ['a call without a handshake', () => Buffer.concat([u32(20 + 2), u32(1), u64(1), u32(0), Buffer.from('{}')])],
  ];
  for (const [name, send] of cases) {
    const got = await attack(port, { send });
    assert.equal(got.subarray(0, 4).toString(), 'VXRP', `${what} ${name}: the hello`);
    assert.ok(got.length <= 40 + 84, `${what} port ${port}, ${name}: read ${got.length} bytes (hello ${40}, at most an error frame after)`);
  }
  log(`${what} port ${port}: ${cases.length} attacks refused`);
}

async function call(url, method, p, body, headers = {}) {
  const r = await fetch(`${url}${p}`, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30000),
  });
  const text = await r.text();
  return { status: r.status, text, json: text ? JSON.parse(text) : null };
}

test('serve: its Raft port refuses every unauthenticated handshake, and serve is unharmed', { timeout: 180000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vx-sec-serve-'));
  const port = await pickPort();
  const adminKey = `adm-${crypto.randomBytes(18).toString('hex')}`;
  const logPath = `${dir}.log`;
  const fd = fs.openSync(logPath, 'a');
  const proc = spawn(BIN, ['serve', '--auth', 'on', '--data-dir', dir, '--http-port', String(port)], {
    stdio: ['ignore', fd, fd], env: { ...process.env, VECTRON_ADMIN_KEY: adminKey },
  });
  fs.closeSync(fd);
  cleanups.push(async () => { if (proc.exitCode === null) proc.kill('SIGKILL'); fs.rmSync(dir, { recursive: true, force: true }); fs.rmSync(logPath, { force: true }); });
  const url = `http://127.0.0.1:${port}`;
  const H = { 'api-key': adminKey };
  for (const t0 = Date.now(); ; await sleep(50)) {
    assert.equal(proc.exitCode, null, fs.readFileSync(logPath, 'utf8').slice(-2000));
    try { if ((await fetch(`${url}/readyz`)).status === 200) break; } catch { /* not yet */ }
    assert.ok(Date.now() - t0 < 30000, 'serve not ready in 30 s');
  }
  assert.equal(fs.readFileSync(`/proc/${proc.pid}/environ`).indexOf(adminKey), -1, 'the admin key is wiped from /proc/PID/environ');
  assert.equal((await call(url, 'PUT', '/collections/c', { vectors: { size: 4, distance: 'Dot' } }, H)).status, 200);
  assert.equal((await call(url, 'PUT', '/collections/c/points?wait=true', { points: [{ id: 1, vector: [1, 2, 3, 4], payload: { s: 'secret payload' } }] }, H)).status, 200);
  const keysBefore = (await call(url, 'GET', '/v1/admin/keys', undefined, H)).text;

  // the challenge comes at once, with a fresh nonce each time
  const a = await attack(port + 1000, { send: () => Buffer.from('x') });
  const b = await attack(port + 1000, { send: () => Buffer.from('x') });
  assert.notDeepEqual(a.subarray(8), b.subarray(8), 'a fresh nonce per connection');
  await attackRaftPort(port + 1000, 'serve Raft');

  // unharmed: alive, ready, same data, no new credential
  assert.equal(proc.exitCode, null, 'serve is still running');
  assert.equal((await fetch(`${url}/readyz`)).status, 200);
  const cnt = await call(url, 'POST', '/collections/c/points/count', { exact: true }, H);
  assert.equal(cnt.json.result.count, 1);
  assert.equal((await call(url, 'GET', '/v1/admin/keys', undefined, H)).text, keysBefore);
  assert.equal((await call(url, 'GET', '/collections', undefined, { 'api-key': 'vx_000000000000_' + 'A'.repeat(43) })).status, 401);
  // the secret payload never crossed the Raft port (each attack read 40 bytes)
  proc.kill('SIGTERM');
  await new Promise((r) => proc.once('exit', r));
});

test('cluster: Raft, snapshot and RPC ports of placement drivers and workers refuse outsiders', { timeout: 300000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vx-sec-cluster-'));
  const base = 30000 + (SEED % 200) * 50;
  const env = { ...process.env, VECTRON_ADMIN_KEY: `adm-${crypto.randomBytes(16).toString('hex')}` };
  delete env.VECTRON_CLUSTER_SECRET;
  cleanups.push(async () => { execFileSync('bash', [CLUSTER, 'down', '--dir', dir], { stdio: 'ignore' }); fs.rmSync(dir, { recursive: true, force: true }); });
  const out = execFileSync('bash', [CLUSTER, 'up', '--dir', dir, '--base-port', String(base), '--bin', BIN], { env, encoding: 'utf8' });
  const url = out.trim().split('\n').pop();
  const secret = fs.readFileSync(path.join(dir, 'cluster.secret'), 'utf8').trim();
  assert.ok(/^[0-9a-f]{64}$/.test(secret), 'cluster.sh made a 32-byte secret');
  assert.equal(fs.statSync(path.join(dir, 'cluster.secret')).mode & 0o077, 0, 'readable by its owner only');
  // the secret is not left in any node's environment
  for (const n of ['pd1', 'w1', 'gw']) {
    const pid = fs.readFileSync(path.join(dir, `${n}.pid`), 'utf8').trim();
    const environ = fs.readFileSync(`/proc/${pid}/environ`);
    assert.equal(environ.indexOf(secret), -1, `${n}: the cluster secret is wiped from /proc/PID/environ`);
    if (n === 'gw') assert.equal(environ.indexOf(env.VECTRON_ADMIN_KEY), -1, 'gw: the admin key is wiped too');
  }
  const H = { 'api-key': env.VECTRON_ADMIN_KEY };
  const put = await call(url, 'PUT', '/collections/c', { vectors: { size: 4, distance: 'Dot' }, shard_number: 2, replication_factor: 3 }, H);
  assert.equal(put.status, 200, put.text);
  assert.equal((await call(url, 'PUT', '/collections/c/points?wait=true', { points: [{ id: 1, vector: [1, 2, 3, 4] }] }, H)).status, 200);

  for (const i of [0, 1, 2]) await attackRaftPort(base + i, `pd${i + 1} Raft`);
  for (const i of [0, 1, 2]) await attackRaftPort(base + 20 + i, `w${i + 1} Raft`, { gids: [1, 2, 3, 4, 5, 6, 7, 8] });
  for (const i of [0, 1, 2]) await attackRpcPort(base + 10 + i, `pd${i + 1} RPC`);
  for (const i of [0, 1, 2]) await attackRpcPort(base + 30 + i, `w${i + 1} RPC`);

  // the cluster is unharmed: every process runs, writes and reads work
  const status = execFileSync('bash', [CLUSTER, 'status', '--dir', dir], { encoding: 'utf8' });
  assert.doesNotMatch(status, /not running|dead/i, status);
  assert.equal((await call(url, 'PUT', '/collections/c/points?wait=true', { points: [{ id: 2, vector: [4, 3, 2, 1] }] }, H)).status, 200);
  assert.equal((await call(url, 'POST', '/collections/c/points/count', { exact: true }, H)).json.result.count, 2);
});

test('no open default: pd, worker and gateway refuse a non-loopback address without a cluster secret', { timeout: 60000 }, async () => {
  const env = { ...process.env };
  delete env.VECTRON_CLUSTER_SECRET;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vx-sec-open-'));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  const runs = {
    pd: ['pd', '--id', '1', '--data-dir', path.join(dir, 'pd'), '--peers', '1@0.0.0.0:1/0.0.0.0:2'],
    worker: ['worker', '--data-dir', path.join(dir, 'w'), '--pd', '127.0.0.1:2', '--raft', '0.0.0.0:3', '--rpc', '0.0.0.0:4'],
    gateway: ['gateway', '--pd', '127.0.0.1:2', '--host', '0.0.0.0', '--port', '5', '--auth', 'on'],
  };
  for (const [role, args] of Object.entries(runs)) {
    const r = spawnSync(BIN, args, { env: { ...env, VECTRON_ADMIN_KEY: 'adm-0123456789abcdef0123' }, encoding: 'utf8', timeout: 20000 });
    assert.equal(r.status, 2, `${role}: exit ${r.status} ${r.stderr}`);
    assert.match(r.stderr, /without a cluster secret/, `${role} says why: ${r.stderr}`);
  }
  log('pd, worker and gateway each refused to start beyond loopback without a secret');
});
