// cluster.test.mjs - authentication through `vectron gateway --auth on` in
// front of a local cluster (scripts/cluster.sh: 3 placement drivers, 3
// workers): credentials are kept by the placement driver, so they survive
// the loss of its leader and a gateway that starts afresh fetches them; a
// change made through a gateway holds there as soon as it is answered.
//
//   tests/api/durability/run.sh PATH/TO/vectron auth
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { QdrantClient } from '@qdrant/js-client-rest';

const BIN = process.env.VECTRON_BIN;
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..');
const CLUSTER = path.join(ROOT, 'scripts/cluster.sh');
const SEED = Number(process.env.VX_SEED || crypto.randomBytes(4).readUInt32LE(0));
const log = (m) => console.log(`# [auth-cluster] ${m}`);
log(`VX_SEED=${SEED}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const UNAUTHORIZED = '{"status":{"error":"Unauthorized: missing or invalid credentials"},"time":0}';

const dirs = [];
after(() => {
  for (const d of dirs) {
    try {
      execFileSync('bash', [CLUSTER, 'down', '--dir', d], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
    if (!process.env.VX_KEEP_DATA) fs.rmSync(d, { recursive: true, force: true });
  }
});

async function call(url, method, p, body, headers = {}) {
  const r = await fetch(`${url}${p}`, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30000),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, text, json };
}

// What a port answers to an HTTP API request within 1.5 s (as text).
function rawAsk(port, req) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let got = '';
    const done = () => {
      sock.destroy();
      resolve(got);
    };
    sock.on('connect', () => sock.write(req));
    sock.on('data', (d) => {
      got += d.toString('latin1');
    });
    sock.on('error', done);
    sock.on('close', done);
    setTimeout(done, 1500);
  });
}

async function until(what, fn, ms = 20000) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn().catch(() => false);
    if (v) return Date.now() - t0;
    assert.ok(Date.now() - t0 < ms, `${what}: not within ${ms} ms`);
    await sleep(100);
  }
}

test('credentials live in the placement driver: they survive its leader and reach a new gateway', { timeout: 240000 }, async () => {
  const base = 20000 + (SEED % 200) * 50;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vx-auth-cluster-'));
  dirs.push(dir);
  const adminKey = `adm-${crypto.randomBytes(16).toString('hex')}`;
  const env = { ...process.env, VECTRON_ADMIN_KEY: adminKey, GW_FLAGS: '--auth on --rate-per-address 0 --auth-poll-ms 200 --shard-timeout-ms 2000' };
  const out = execFileSync('bash', [CLUSTER, 'up', '--dir', dir, '--base-port', String(base), '--bin', BIN], { env, encoding: 'utf8' });
  const url = out.trim().split('\n').pop();
  const node = (cmd, n) => execFileSync('bash', [CLUSTER, cmd, n, '--dir', dir], { env, encoding: 'utf8' });
  const pds = [10, 11, 12].map((o) => `127.0.0.1:${base + o}`).join(',');
  const adminH = { 'api-key': adminKey };
  log(`cluster up, gateway ${url} with --auth on`);

  assert.equal((await call(url, 'GET', '/collections')).text, UNAUTHORIZED);
  const adminClient = new QdrantClient({ url, apiKey: adminKey, checkCompatibility: false });
  await adminClient.createCollection('a', { vectors: { size: 4, distance: 'Dot' }, shard_number: 2, replication_factor: 3 });
  await adminClient.createCollection('b', { vectors: { size: 4, distance: 'Dot' } });
  const k = (await call(url, 'POST', '/v1/admin/keys', { role: 'write', collections: ['a'] }, adminH)).json.result;
  assert.ok(k.key.startsWith('vx_'));
  assert.equal((await call(url, 'POST', '/v1/admin/users', { username: 'ann', password: 'correct horse battery', role: 'read' }, adminH)).status, 200);
  // the key works on this gateway at once
  const client = new QdrantClient({ url, apiKey: k.key, checkCompatibility: false });
  await client.upsert('a', { wait: true, points: [{ id: 1, vector: [1, 0, 0, 0] }, { id: 2, vector: [0, 1, 0, 0] }] });
  assert.equal((await client.count('a', { exact: true })).count, 2);
  await assert.rejects(client.getCollection('b'), (e) => e.status === 403);
  await assert.rejects(client.upsert('b', { wait: true, points: [{ id: 1, vector: [1, 0, 0, 0] }] }), (e) => e.status === 403);
  const login = (await call(url, 'POST', '/v1/auth/login', { username: 'ann', password: 'correct horse battery' })).json.result;

  // kill -9 the PD leader, and restart the gateway: it has nothing but what a PD gives it
  const secretEnv = { ...env, VECTRON_CLUSTER_SECRET: fs.readFileSync(path.join(dir, 'cluster.secret'), 'utf8').trim() };
  const status = JSON.parse(execFileSync(BIN, ['admin', '--pd', pds, 'status'], { encoding: 'utf8', env: secretEnv }));
  const leader = status.leader_id;
  assert.ok(leader >= 1 && leader <= 3, `PD leader ${leader}`);
  node('kill', `pd${leader}`);
  node('stop', 'gw');
  node('start', 'gw');
  log(`killed PD leader pd${leader} and restarted the gateway`);
  const took = await until('the key works through the new gateway', async () =>
    (await call(url, 'POST', '/collections/a/points/count', { exact: true }, { 'api-key': k.key })).status === 200, 30000);
  log(`the key works through the restarted gateway after ${took} ms`);
  assert.equal((await call(url, 'POST', '/collections/b/points/count', {}, { 'api-key': k.key })).status, 403);
  // a token issued before is accepted by the new gateway (same derived keys), a login works
  assert.equal((await call(url, 'GET', '/collections/a', undefined, { authorization: `Bearer ${login.access_token}` })).status, 200);
  assert.equal((await call(url, 'POST', '/v1/auth/login', { username: 'ann', password: 'correct horse battery' })).status, 200);
  // revocation through the gateway holds there at once, and with the old leader back
  node('start', `pd${leader}`);
  assert.equal((await call(url, 'DELETE', `/v1/admin/keys/${k.id}`, undefined, adminH)).status, 200);
  assert.equal((await call(url, 'POST', '/collections/a/points/count', {}, { 'api-key': k.key })).text, UNAUTHORIZED);
  const listed = (await call(url, 'GET', '/v1/admin/keys', undefined, adminH)).json.result;
  assert.ok(!listed.some((x) => x.id === k.id));
  // internal ports (Raft, internal RPC) do not serve the API, even with the admin key
  const ask = `GET /collections HTTP/1.1\r\nHost: x\r\napi-key: ${adminKey}\r\n\r\n`;
  for (const [what, off] of [['PD raft', 0], ['PD rpc', 10], ['worker raft', 20], ['worker rpc', 30]]) {
    const got = await rawAsk(base + off + (off === 0 || off === 10 ? leader % 3 : 0), ask);
    assert.ok(!got.startsWith('HTTP/'), `${what} port answered HTTP: ${got.slice(0, 80)}`);
    assert.ok(!got.includes('"collections"'), `${what} port served the API`);
  }
  // workers' and PDs' logs and data hold no secret (stopped first: Raft
  // renames its segments while it runs)
  execFileSync('bash', [CLUSTER, 'down', '--dir', dir], { env, stdio: 'ignore' });
  const secrets = [adminKey, k.key.slice(16), 'correct horse battery', login.access_token.split('.')[2]];
  const walk = (d) => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));
  let files = 0;
  for (const f of walk(dir)) {
    const buf = fs.readFileSync(f);
    files++;
    for (const sct of secrets) assert.equal(buf.indexOf(sct), -1, `a secret in ${f}`);
  }
  log(`no secret in ${files} files of the cluster's data dirs and logs`);
});
