// auth.test.mjs - authentication, authorization and rate limits of
// `vectron serve --auth on` (issue 7), end to end over HTTP, with the Qdrant
// JS client where a client is the point.
//
//   tests/api/durability/run.sh PATH/TO/vectron auth
//
// Each scenario starts its own server (fresh data dir, free ports, a random
// admin key in VECTRON_ADMIN_KEY).  Forged tokens are made here: with no
// algorithm, with HMAC keyed by our published public key, and -- to test
// each claim check on its own -- properly signed with the server's signing
// key, derived here the way src/auth/token.c derives it (BLAKE2b-256 keyed
// with the admin key over "vectron-jwt-v1:" + kid, the Ed25519 seed).
//
// What must hold:
//   - every forged or broken credential gets 401 with one and the same body,
//     on every endpoint;
//   - the authorization matrix (endpoint x role x scope x collection) has 0
//     mismatches; a scoped credential gets the same 403 body for another
//     collection whether it exists or not;
//   - a key's rate under 3x load is at most rate x time + burst (+10 %)
//     and at least 80 % of it, and
//     another key's requests meanwhile are not refused;
//   - logins are limited by count, per address and per account: a flood
//     meets 429 after exactly the limit's number of failed attempts, however
//     long each password check takes, and successful logins do not count;
//   - no admin key, password, API key or token appears in the data dir, the
//     log or an error body;
//   - the Qdrant client authenticates with apiKey.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pickPort } from '../lib/ports.mjs';
import blake from 'blakejs';
import { QdrantClient } from '@qdrant/js-client-rest';
import { Agent, fetch as ufetch } from 'undici';

const BIN = process.env.VECTRON_BIN;
const SEED = Number(process.env.VX_SEED || crypto.randomBytes(4).readUInt32LE(0));
const log = (m) => console.log(`# [auth] ${m}`);
log(`VX_SEED=${SEED} VECTRON_BIN=${BIN}`);
const UNAUTHORIZED = '{"status":{"error":"Unauthorized: missing or invalid credentials"},"time":0}';
const FORBIDDEN = '{"status":{"error":"Forbidden: this credential may not do that on this collection"},"time":0}';
const FORBIDDEN_GLOBAL = '{"status":{"error":"Forbidden: this needs a global admin credential"},"time":0}';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64u = (buf) => Buffer.from(buf).toString('base64url');

const servers = [];
after(async () => {
  for (const s of servers) {
    if (s.proc.exitCode === null) s.proc.kill('SIGKILL');
    if (!process.env.VX_KEEP_DATA) {
      await fsp.rm(s.dir, { recursive: true, force: true });
      await fsp.rm(s.logPath, { force: true });
    }
  }
});

async function startServer(tag, flags = []) {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `vectron-auth-${tag}-`));
  const port = await pickPort();
  const adminKey = `adm-${crypto.randomBytes(18).toString('hex')}`; // 40 bytes: a keyed BLAKE2b key as is
  const logPath = `${dir}.log`;
  const fd = fs.openSync(logPath, 'a');
  const proc = spawn(BIN, ['serve', '--auth', 'on', '--data-dir', dir, '--http-port', String(port), ...flags], {
    stdio: ['ignore', fd, fd],
    env: { ...process.env, VECTRON_ADMIN_KEY: adminKey },
  });
  fs.closeSync(fd);
  const s = { tag, dir, port, url: `http://127.0.0.1:${port}`, adminKey, logPath, proc };
  servers.push(s);
  const deadline = Date.now() + 30000;
  for (;;) {
    assert.equal(proc.exitCode, null, `${tag}: the server exited: ${fs.readFileSync(logPath, 'utf8').slice(-2000)}`);
    try {
      const r = await fetch(`${s.url}/readyz`);
      await r.arrayBuffer();
      if (r.status === 200) break;
    } catch {
      /* not yet */
    }
    assert.ok(Date.now() < deadline, `${tag}: not ready in 30 s`);
    await sleep(50);
  }
  log(`${tag}: serve --auth on at ${s.url}, data ${dir}`);
  return s;
}

// One request; returns {status, text, json, headers}.
async function call(s, method, p, body, headers = {}) {
  const r = await fetch(`${s.url}${p}`, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(30000),
  });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, text, json, headers: r.headers };
}

const asAdmin = (s) => ({ 'api-key': s.adminKey });

async function ok(s, method, p, body, headers) {
  const r = await call(s, method, p, body, headers ?? asAdmin(s));
  assert.equal(r.status, 200, `${method} ${p}: ${r.status} ${r.text}`);
  return r.json.result;
}

async function newKey(s, role, collections, extra = {}) {
  const body = { role, ...extra };
  if (collections) body.collections = collections;
  return ok(s, 'POST', '/v1/admin/keys', body);
}

// ---- tokens made here --------------------------------------------------------------------------

function signingKey(secret, kid) {
  const seed = blake.blake2b(Buffer.from(`vectron-jwt-v1:${kid}`), Buffer.from(secret), 32);
  const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), Buffer.from(seed)]);
  const priv = crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  const x = crypto.createPublicKey(priv).export({ format: 'jwk' }).x;
  return { priv, x };
}

function jwt(header, payload, signer) {
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
  const sig = signer ? signer(Buffer.from(input)) : Buffer.alloc(0);
  return `${input}.${b64u(sig)}`;
}

const edSigner = (key) => (data) => crypto.sign(null, data, key.priv);

function claims(over = {}) {
  const now = Math.floor(Date.now() / 1000);
  return { iss: 'vectron', aud: 'vectron-api', sub: 'ann', typ: 'access', gen: 1, iat: now, nbf: now, exp: now + 600, ...over };
}

// ---- the routes ---------------------------------------------------------------------------------

const V = [0.1, 0.2, 0.3, 0.4];
// need: 'any' (any valid credential), 'read'/'write'/'admin' on the path's collection, 'global' (global admin)
const ROUTES = [
  { m: 'GET', p: '/', need: 'any' },
  { m: 'GET', p: '/collections', need: 'any' },
  { m: 'GET', p: '/collections/{c}', need: 'read' },
  { m: 'GET', p: '/collections/{c}/exists', need: 'read' },
  { m: 'PUT', p: '/collections/{c}', body: { vectors: { size: 0, distance: 'Dot' } }, need: 'admin' },
  { m: 'PATCH', p: '/collections/{c}', body: {}, need: 'admin' },
  { m: 'PUT', p: '/collections/{c}/index?wait=true', body: { field_name: 'k', field_schema: 'keyword' }, need: 'write' },
  { m: 'DELETE', p: '/collections/{c}/index/k?wait=true', need: 'write' },
  { m: 'PUT', p: '/collections/{c}/points?wait=true', body: { points: [{ id: 1, vector: V, payload: { k: 'a' } }] }, need: 'write' },
  { m: 'POST', p: '/collections/{c}/points', body: { ids: [1] }, need: 'read' },
  { m: 'POST', p: '/collections/{c}/points/search', body: { vector: V, limit: 1 }, need: 'read' },
  { m: 'POST', p: '/collections/{c}/points/query', body: { query: V, limit: 1 }, need: 'read' },
  { m: 'POST', p: '/collections/{c}/points/scroll', body: { limit: 1 }, need: 'read' },
  { m: 'POST', p: '/collections/{c}/points/count', body: {}, need: 'read' },
  { m: 'GET', p: '/collections/{c}/points/1', need: 'read' },
  { m: 'POST', p: '/collections/{c}/points/delete?wait=true', body: { points: [999] }, need: 'write' },
  { m: 'POST', p: '/collections/{c}/points/payload?wait=true', body: { payload: { x: 1 }, points: [1] }, need: 'write' },
  { m: 'PUT', p: '/collections/{c}/points/payload?wait=true', body: { payload: { k: 'a' }, points: [1] }, need: 'write' },
  { m: 'POST', p: '/collections/{c}/points/payload/delete?wait=true', body: { keys: ['x'], points: [1] }, need: 'write' },
  { m: 'POST', p: '/collections/{c}/points/payload/clear?wait=true', body: { points: [999] }, need: 'write' },
  { m: 'POST', p: '/v1/collections/{c}/points', body: { points: [{ id: 1, vector: V }] }, need: 'write' },
  { m: 'POST', p: '/v1/collections/{c}/points/search', body: { vector: V, top_k: 1 }, need: 'read' },
  { m: 'DELETE', p: '/collections/{c}', need: 'admin', onlyMissing: true }, // never drops A or B here
  { m: 'GET', p: '/metrics', need: 'global' },
  { m: 'GET', p: '/v1/admin/users', need: 'global' },
  { m: 'GET', p: '/v1/admin/keys', need: 'global' },
  { m: 'POST', p: '/v1/admin/keys', body: { role: 'nope' }, need: 'global' },
  { m: 'DELETE', p: '/v1/admin/keys/000000000000', need: 'global' },
  { m: 'POST', p: '/v1/admin/users', body: { username: 'x', password: 'short', role: 'read' }, need: 'global' },
  { m: 'PUT', p: '/v1/admin/users/nobody', body: { role: 'nope' }, need: 'global' },
  { m: 'DELETE', p: '/v1/admin/users/nobody', need: 'global' },
  { m: 'POST', p: '/v1/admin/users/nobody/revoke', need: 'global' },
];
const RANK = { read: 1, write: 2, admin: 3 };

async function setupCollections(s, names) {
  for (const c of names) {
    await ok(s, 'PUT', `/collections/${c}`, { vectors: { size: 4, distance: 'Dot' } });
    await ok(s, 'PUT', `/collections/${c}/points?wait=true`, { points: [{ id: 1, vector: V, payload: { k: 'a' } }] });
  }
}

// ---- scenarios ------------------------------------------------------------------------------------

test('forged and broken credentials: 401 with one body on every endpoint', { timeout: 180000 }, async () => {
  const s = await startServer('forged', ['--rate-per-address', '0']);
  await setupCollections(s, ['a']);
  await ok(s, 'POST', '/v1/admin/users', { username: 'ann', password: 'correct horse battery', role: 'admin' });
  const login = await ok(s, 'POST', '/v1/auth/login', { username: 'ann', password: 'correct horse battery' }, {});
  // the genuine article works
  assert.equal((await call(s, 'GET', '/collections/a', undefined, { authorization: `Bearer ${login.access_token}` })).status, 200);
  const key = signingKey(s.adminKey, 'k1');
  const jwks = (await call(s, 'GET', '/v1/auth/jwks')).json;
  assert.equal(jwks.keys[0].x, key.x, 'the published key is the derived one');
  assert.equal(jwks.keys[0].alg, 'EdDSA');
  const good = (over) => jwt({ alg: 'EdDSA', typ: 'JWT', kid: 'k1' }, claims(over), edSigner(key));
  assert.equal((await call(s, 'GET', '/collections/a', undefined, { authorization: `Bearer ${good()}` })).status, 200,
    'a token signed here with the derived key is accepted (so the refusals below test one claim each)');
  const revoked = await newKey(s, 'admin');
  await ok(s, 'DELETE', `/v1/admin/keys/${revoked.id}`);
  const live = await newKey(s, 'admin');
  const wrongSecret = live.key.slice(0, -2) + (live.key.endsWith('A') ? 'BB' : 'AA');
  const [h, p] = login.access_token.split('.');
  const tampered = JSON.parse(Buffer.from(p, 'base64url'));
  tampered.sub = 'root';
  const hmac = (k) => (data) => crypto.createHmac('sha256', k).update(data).digest();
  await ok(s, 'POST', '/v1/admin/users', { username: 'gone', password: 'correct horse battery', role: 'admin' });
  const goneTok = (await ok(s, 'POST', '/v1/auth/login', { username: 'gone', password: 'correct horse battery' }, {})).access_token;
  await ok(s, 'DELETE', '/v1/admin/users/gone');
  const now = Math.floor(Date.now() / 1000);
  const bearer = (t) => ({ authorization: `Bearer ${t}` });
  const BAD = {
    'no credentials': {},
    'garbage api-key': { 'api-key': 'nope' },
    'revoked key': { 'api-key': revoked.key },
    'unknown key': { 'api-key': 'vx_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' },
    'right id, wrong secret': { 'api-key': wrongSecret },
    'Basic auth': { authorization: `Basic ${Buffer.from('ann:correct horse battery').toString('base64')}` },
    'alg none, no signature': bearer(jwt({ alg: 'none', typ: 'JWT', kid: 'k1' }, claims())),
    'alg none with a signature': bearer(jwt({ alg: 'none', kid: 'k1' }, claims(), edSigner(key))),
    'HS256 keyed with the public key': bearer(jwt({ alg: 'HS256', typ: 'JWT', kid: 'k1' }, claims(), hmac(Buffer.from(key.x, 'base64url')))),
    'HS256 keyed with the public key text': bearer(jwt({ alg: 'HS256', typ: 'JWT', kid: 'k1' }, claims(), hmac(key.x))),
    'HS256 keyed with the JWKS': bearer(jwt({ alg: 'HS256', typ: 'JWT', kid: 'k1' }, claims(), hmac(JSON.stringify(jwks)))),
    'tampered payload': bearer(`${h}.${b64u(JSON.stringify(tampered))}.${login.access_token.split('.')[2]}`),
    'expired': bearer(good({ exp: now - 3600, iat: now - 7200, nbf: now - 7200 })),
    'not yet valid': bearer(good({ nbf: now + 3600 })),
    'wrong issuer': bearer(good({ iss: 'evil' })),
    'wrong audience': bearer(good({ aud: 'other-api' })),
    'unknown kid': bearer(jwt({ alg: 'EdDSA', typ: 'JWT', kid: 'k9' }, claims(), edSigner(signingKey(s.adminKey, 'k9')))),
    'signed by another secret': bearer(jwt({ alg: 'EdDSA', typ: 'JWT', kid: 'k1' }, claims(), edSigner(signingKey('another-secret-0123456789', 'k1')))),
    'refresh token as access': bearer(login.refresh_token),
    'oversized token': bearer(`${'a'.repeat(3000)}.${'b'.repeat(3000)}.${'c'.repeat(100)}`),
    'old generation': bearer(good({ gen: 0 })),
    'deleted user': bearer(goneTok),
  };
  let checked = 0;
  const wrong = [];
  for (const [what, hdrs] of Object.entries(BAD)) {
    for (const r of ROUTES) {
      const res = await call(s, r.m, r.p.replace('{c}', 'a'), r.body, hdrs);
      checked++;
      if (res.status !== 401 || res.text !== UNAUTHORIZED) wrong.push(`${what}: ${r.m} ${r.p} -> ${res.status} ${res.text.slice(0, 120)}`);
    }
  }
  log(`forged: ${checked} requests with ${Object.keys(BAD).length} bad credentials, ${wrong.length} not refused as they should be`);
  assert.deepEqual(wrong, []);
  // open routes stay open
  assert.equal((await call(s, 'GET', '/healthz')).status, 200);
  assert.equal((await call(s, 'GET', '/readyz')).status, 200);
});

test('authorization matrix: endpoint x role x scope x collection, 0 mismatches', { timeout: 180000 }, async () => {
  const s = await startServer('matrix', ['--rate-per-address', '0']);
  await setupCollections(s, ['a', 'b']);
  const principals = [];
  for (const role of ['read', 'write', 'admin'])
    for (const scope of [null, ['a']]) {
      const k = await newKey(s, role, scope);
      principals.push({ name: `key ${role} ${scope ? 'a' : 'global'}`, role, scope, hdr: { 'api-key': k.key } });
    }
  await ok(s, 'POST', '/v1/admin/users', { username: 'wa', password: 'correct horse battery', role: 'write', collections: ['a'] });
  const t = await ok(s, 'POST', '/v1/auth/login', { username: 'wa', password: 'correct horse battery' }, {});
  principals.push({ name: 'user write a', role: 'write', scope: ['a'], hdr: { authorization: `Bearer ${t.access_token}` } });
  principals.push({ name: 'bootstrap admin', role: 'admin', scope: null, hdr: asAdmin(s) });
  let checked = 0;
  const mismatches = [];
  for (const pr of principals) {
    for (const r of ROUTES) {
      const colls = r.p.includes('{c}') ? (r.onlyMissing ? ['c'] : ['a', 'b', 'c']) : [null];
      for (const c of colls) {
        const allowed = r.need === 'any' ? true
          : r.need === 'global' ? pr.role === 'admin' && pr.scope === null
          : RANK[pr.role] >= RANK[r.need] && (pr.scope === null || pr.scope.includes(c));
        const res = await call(s, r.m, c ? r.p.replace('{c}', c) : r.p, r.body, pr.hdr);
        checked++;
        const denied = res.status === 403;
        if (res.status === 401) mismatches.push(`${pr.name}: ${r.m} ${r.p} ${c}: 401`);
        else if (allowed === denied) mismatches.push(`${pr.name}: ${r.m} ${r.p} ${c}: ${res.status} ${res.text.slice(0, 100)}`);
        else if (denied && res.text !== (r.need === 'global' ? FORBIDDEN_GLOBAL : FORBIDDEN))
          mismatches.push(`${pr.name}: ${r.m} ${r.p} ${c}: 403 body differs: ${res.text}`);
      }
    }
    // listing shows only what the credential may read
    const names = (await ok(s, 'GET', '/collections', undefined, pr.hdr)).collections.map((x) => x.name).sort();
    assert.deepEqual(names, pr.scope ? ['a'] : ['a', 'b'], `${pr.name}: collections listed`);
  }
  log(`matrix: ${checked} requests by ${principals.length} principals, ${mismatches.length} mismatches`);
  assert.deepEqual(mismatches, []);
  // deleting: a scoped admin may drop its own collection, not another
  const aAdmin = principals.find((x) => x.name === 'key admin a');
  assert.equal((await call(s, 'DELETE', '/collections/b', undefined, aAdmin.hdr)).status, 403);
  assert.equal((await call(s, 'DELETE', '/collections/a', undefined, principals[1].hdr)).status, 403);
  assert.equal((await call(s, 'DELETE', '/collections/a', undefined, aAdmin.hdr)).status, 200);
  assert.equal((await call(s, 'GET', '/collections/a/exists', undefined, asAdmin(s))).json.result.exists, false);
});

test('sessions: refresh, logout, password change, revocation, key revocation', { timeout: 120000 }, async () => {
  const s = await startServer('sessions', ['--rate-per-address', '0']);
  await setupCollections(s, ['a']);
  await ok(s, 'POST', '/v1/admin/users', { username: 'bo', password: 'first password', role: 'read' });
  assert.equal((await call(s, 'POST', '/v1/admin/users', { username: 'bo', password: 'first password', role: 'read' }, asAdmin(s))).status, 409);
  assert.equal((await call(s, 'POST', '/v1/admin/users', { username: 'cy', password: 'short', role: 'read' }, asAdmin(s))).status, 400);
  assert.equal((await call(s, 'POST', '/v1/auth/login', { username: 'bo', password: 'wrong password' })).text, UNAUTHORIZED);
  assert.equal((await call(s, 'POST', '/v1/auth/login', { username: 'nobody', password: 'first password' })).text, UNAUTHORIZED);
  const t1 = await ok(s, 'POST', '/v1/auth/login', { username: 'bo', password: 'first password' }, {});
  assert.equal(t1.token_type, 'Bearer');
  assert.equal(t1.expires_in, 900);
  const auth = (tok) => ({ authorization: `Bearer ${tok}` });
  assert.equal((await call(s, 'GET', '/collections/a', undefined, auth(t1.access_token))).status, 200);
  const r1 = await ok(s, 'POST', '/v1/auth/refresh', { refresh_token: t1.refresh_token }, {});
  assert.equal((await call(s, 'GET', '/collections/a', undefined, auth(r1.access_token))).status, 200);
  // logout revokes that refresh token
  await ok(s, 'POST', '/v1/auth/logout', { refresh_token: t1.refresh_token }, {});
  assert.equal((await call(s, 'POST', '/v1/auth/refresh', { refresh_token: t1.refresh_token })).text, UNAUTHORIZED);
  // a password change ends every session
  const t2 = await ok(s, 'POST', '/v1/auth/login', { username: 'bo', password: 'first password' }, {});
  await ok(s, 'PUT', '/v1/admin/users/bo', { password: 'second password', role: 'read' });
  assert.equal((await call(s, 'GET', '/collections/a', undefined, auth(t2.access_token))).text, UNAUTHORIZED);
  assert.equal((await call(s, 'POST', '/v1/auth/refresh', { refresh_token: t2.refresh_token })).text, UNAUTHORIZED);
  assert.equal((await call(s, 'POST', '/v1/auth/login', { username: 'bo', password: 'first password' })).status, 401);
  // revoking the user's tokens, and a role change that applies at once
  const t3 = await ok(s, 'POST', '/v1/auth/login', { username: 'bo', password: 'second password' }, {});
  assert.equal((await call(s, 'PUT', '/collections/a/points?wait=true', { points: [{ id: 2, vector: V }] }, auth(t3.access_token))).status, 403);
  await ok(s, 'PUT', '/v1/admin/users/bo', { role: 'write' });
  assert.equal((await call(s, 'PUT', '/collections/a/points?wait=true', { points: [{ id: 2, vector: V }] }, auth(t3.access_token))).status, 200);
  await ok(s, 'POST', '/v1/admin/users/bo/revoke');
  assert.equal((await call(s, 'GET', '/collections/a', undefined, auth(t3.access_token))).text, UNAUTHORIZED);
  // a key works until it is deleted
  const k = await newKey(s, 'read', ['a'], { name: 'ci' });
  assert.equal((await call(s, 'GET', '/collections/a', undefined, { 'api-key': k.key })).status, 200);
  const listed = await ok(s, 'GET', '/v1/admin/keys');
  assert.ok(listed.some((x) => x.id === k.id && x.name === 'ci' && x.role === 'read'));
  assert.ok(!JSON.stringify(listed).includes(k.key.slice(16)), 'the listing shows no secret');
  await ok(s, 'DELETE', `/v1/admin/keys/${k.id}`);
  assert.equal((await call(s, 'GET', '/collections/a', undefined, { 'api-key': k.key })).text, UNAUTHORIZED);
  assert.equal((await call(s, 'DELETE', `/v1/admin/keys/${k.id}`, undefined, asAdmin(s))).status, 404);
  // credentials survive a restart (they are in the catalog's Raft log); key
  // rotation: signing with k2 while k1 is still accepted, then k1 retired
  const t4 = await ok(s, 'POST', '/v1/auth/login', { username: 'bo', password: 'second password' }, {});
  const kidOf = (tok) => JSON.parse(Buffer.from(tok.split('.')[0], 'base64url')).kid;
  assert.equal(kidOf(t4.access_token), 'k1');
  const restart = async (flags) => {
    s.proc.kill('SIGTERM');
    await new Promise((r) => s.proc.once('exit', r));
    return restartOn(s, flags);
  };
  await restart(['--jwt-kid', 'k2', '--jwt-accept', 'k1']);
  const t5 = await ok(s, 'POST', '/v1/auth/login', { username: 'bo', password: 'second password' }, {});
  assert.equal(kidOf(t5.access_token), 'k2');
  assert.equal((await call(s, 'GET', '/collections/a', undefined, auth(t4.access_token))).status, 200, 'k1 still accepted');
  assert.equal((await call(s, 'GET', '/collections/a', undefined, auth(t5.access_token))).status, 200);
  assert.equal((await call(s, 'GET', '/v1/auth/jwks')).json.keys.map((x) => x.kid).join(','), 'k2,k1');
  await restart(['--jwt-kid', 'k2']);
  assert.equal((await call(s, 'GET', '/collections/a', undefined, auth(t4.access_token))).text, UNAUTHORIZED, 'k1 retired');
  assert.equal((await call(s, 'GET', '/collections/a', undefined, auth(t5.access_token))).status, 200);
  assert.equal((await call(s, 'POST', '/v1/auth/refresh', { refresh_token: t4.refresh_token })).text, UNAUTHORIZED);
});

async function restartOn(s, flags = []) {
  const fd = fs.openSync(s.logPath, 'a');
  const proc = spawn(BIN, ['serve', '--auth', 'on', '--data-dir', s.dir, '--http-port', String(s.port), '--rate-per-address', '0', ...flags], {
    stdio: ['ignore', fd, fd],
    env: { ...process.env, VECTRON_ADMIN_KEY: s.adminKey },
  });
  fs.closeSync(fd);
  s.proc = proc;
  const deadline = Date.now() + 30000;
  for (;;) {
    try {
      const r = await fetch(`${s.url}/readyz`);
      await r.arrayBuffer();
      if (r.status === 200) return s;
    } catch {
      /* not yet */
    }
    assert.ok(Date.now() < deadline && proc.exitCode === null, 'restart: not ready');
    await sleep(50);
  }
}

test('rate limits: a key held to its rate under 3x load, others unaffected', { timeout: 120000 }, async () => {
  const s = await startServer('rate', ['--rate-per-address', '5', '--burst-per-address', '10']);
  await setupCollections(s, ['a']);
  const noisy = await newKey(s, 'read', null, { rate: 40, burst: 10 });
  const quiet = await newKey(s, 'read', null);
  const durS = 4;
  const t0 = Date.now();
  let allowed = 0, limited = 0, quietBad = 0, quietSent = 0, retryAfterOk = true;
  const tasks = [];
  // 3x the rate: 120 requests/s for the noisy key, paced; 10/s for the quiet one
  for (let i = 0; i < 120 * durS; i++) {
    tasks.push((async () => {
      await sleep(Math.max(0, t0 + (i * 1000) / 120 - Date.now()));
      const r = await call(s, 'POST', '/collections/a/points/count', {}, { 'api-key': noisy.key });
      if (r.status === 200) allowed++;
      else if (r.status === 429) {
        limited++;
        const ra = Number(r.headers.get('retry-after'));
        if (!(ra >= 1)) retryAfterOk = false;
      } else throw new Error(`noisy: ${r.status} ${r.text}`);
    })());
  }
  for (let i = 0; i < 10 * durS; i++) {
    tasks.push((async () => {
      await sleep(Math.max(0, t0 + i * 100 - Date.now()));
      quietSent++;
      const r = await call(s, 'POST', '/collections/a/points/count', {}, { 'api-key': quiet.key });
      if (r.status !== 200) quietBad++;
    })());
  }
  await Promise.all(tasks);
  const elapsed = (Date.now() - t0) / 1000;
  const expected = 40 * elapsed + 10;
  log(`rate: noisy key ${allowed} allowed, ${limited} refused in ${elapsed.toFixed(2)} s at 3x 40/s (expected ${expected.toFixed(0)} +-10 %); quiet key ${quietSent - quietBad}/${quietSent} allowed`);
  // never more than rate x time + burst (+10 %: the client's window holds the
  // server's); at least 80 % of it (a stalled client sends late, on a busy machine)
  assert.ok(allowed <= 1.1 * expected && allowed >= 0.8 * expected, `allowed ${allowed}, expected ${expected.toFixed(0)} -20 %..+10 %`);
  assert.ok(retryAfterOk, 'every 429 carries Retry-After >= 1');
  assert.equal(quietBad, 0, 'the quiet key was not slowed');
});

// A login from a given source address (127.0.0.0/8 is all loopback): the
// server tells clients apart by address.
async function loginFrom(s, agent, username, password) {
  const r = await ufetch(`${s.url}/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
    dispatcher: agent,
    signal: AbortSignal.timeout(60000),
  });
  return { status: r.status, text: await r.text(), retryAfter: r.headers.get('retry-after') };
}

test('logins limited by count per address and per account, counted when received', { timeout: 180000 }, async () => {
  const PER_ADDR = 8, PER_ACCT = 5, WINDOW = 120;
  const s = await startServer('logins', ['--login-attempts-per-address', String(PER_ADDR),
    '--login-attempts-per-account', String(PER_ACCT), '--login-window-s', String(WINDOW)]);
  const from = (ip) => new Agent({ localAddress: ip });
  const a1 = from('127.0.0.1'), a2 = from('127.0.0.2'), a3 = from('127.0.0.3'), a4 = from('127.0.0.4');
  try {
    const count = (rs, st) => rs.filter((r) => r.status === st).length;
    const t0 = Date.now();
    // one address, a different (unknown) account each time, all at once:
    // every attempt is counted when it arrives, while the hashes still run
    const flood = await Promise.all(Array.from({ length: PER_ADDR + 4 }, (_, i) =>
      loginFrom(s, a1, `nobody${i}`, 'a guess')));
    log(`address flood: ${count(flood, 401)} x 401, ${count(flood, 429)} x 429 in ${Date.now() - t0} ms`);
    assert.equal(count(flood, 401), PER_ADDR, `exactly ${PER_ADDR} password checks: ${flood.map((r) => r.status)}`);
    assert.equal(count(flood, 429), 4, flood.map((r) => r.status).join(','));
    for (const r of flood.filter((x) => x.status === 429)) {
      const ra = Number(r.retryAfter);
      assert.ok(ra >= 1 && ra <= WINDOW, `Retry-After ${r.retryAfter}`);
      assert.match(r.text, /"error"/);
    }
    // the same flood one at a time: no refill however slow the checks
    assert.equal((await loginFrom(s, a1, 'nobody-late', 'a guess')).status, 429);

    // one account from two addresses: the account's own limit holds across them
    await ok(s, 'POST', '/v1/admin/users', { username: 'victim', password: 'the real password', role: 'read' });
    const acct = await Promise.all(Array.from({ length: PER_ACCT + 2 }, () => loginFrom(s, a2, 'victim', 'wrong guess')));
    log(`account flood: ${count(acct, 401)} x 401, ${count(acct, 429)} x 429`);
    assert.equal(count(acct, 401), PER_ACCT, acct.map((r) => r.status).join(','));
    assert.equal(count(acct, 429), 2);
    const other = await loginFrom(s, a3, 'victim', 'another guess');
    assert.equal(other.status, 429, 'a locked account is locked from every address');
    assert.equal((await loginFrom(s, a3, 'victim', 'the real password')).status, 429, 'even with its password, until the window passes');
    // and that address's own budget was not charged by the refusals
    assert.equal((await loginFrom(s, a3, 'nobody-else', 'x')).status, 401);

    // successful logins are given back: a user who logs in often is never limited
    await ok(s, 'POST', '/v1/admin/users', { username: 'often', password: 'correct horse battery', role: 'read' });
    for (let i = 0; i < PER_ACCT + PER_ADDR; i++) {
      const r = await loginFrom(s, a4, 'often', 'correct horse battery');
      assert.equal(r.status, 200, `login ${i + 1}: ${r.status} ${r.text}`);
    }
    // one failure then a success: still only the failure counts
    assert.equal((await loginFrom(s, a4, 'often', 'typo')).status, 401);
    assert.equal((await loginFrom(s, a4, 'often', 'correct horse battery')).status, 200);
  } finally {
    await Promise.all([a1, a2, a3, a4].map((a) => a.close()));
  }
});

test('a deleted and re-created user gets a fresh identity: no token of the old one verifies', { timeout: 120000 }, async () => {
  const s = await startServer('recreate');
  await setupCollections(s, ['a']);
  const pw = 'correct horse battery';
  await ok(s, 'POST', '/v1/admin/users', { username: 'phoenix', password: pw, role: 'admin' });
  const t1 = await ok(s, 'POST', '/v1/auth/login', { username: 'phoenix', password: pw }, {});
  const t2 = await ok(s, 'POST', '/v1/auth/login', { username: 'phoenix', password: pw }, {});
  await ok(s, 'POST', '/v1/auth/logout', { refresh_token: t2.refresh_token }, { authorization: `Bearer ${t2.access_token}` });
  const bearer = (t) => ({ authorization: `Bearer ${t}` });
  assert.equal((await call(s, 'GET', '/collections', undefined, bearer(t1.access_token))).status, 200);
  await ok(s, 'DELETE', '/v1/admin/users/phoenix');
  // the same name, the same password, a role that would matter
  await ok(s, 'POST', '/v1/admin/users', { username: 'phoenix', password: pw, role: 'admin' });
  for (const [what, t] of [['access token', t1.access_token], ['revoked session\'s access token', t2.access_token]])
    assert.equal((await call(s, 'GET', '/collections', undefined, bearer(t))).text, UNAUTHORIZED, what);
  for (const [what, t] of [['refresh token', t1.refresh_token], ['revoked refresh token', t2.refresh_token]])
    assert.equal((await call(s, 'POST', '/v1/auth/refresh', { refresh_token: t })).text, UNAUTHORIZED, what);
  // the new user's own login works
  const t3 = await ok(s, 'POST', '/v1/auth/login', { username: 'phoenix', password: pw }, {});
  assert.equal((await call(s, 'GET', '/collections', undefined, bearer(t3.access_token))).status, 200);
  // and after a restart (the generation is replicated state, not memory)
  s.proc.kill('SIGTERM');
  await new Promise((r) => s.proc.once('exit', r));
  const s2 = await restartOn(s);
  assert.equal((await call(s2, 'GET', '/collections', undefined, bearer(t1.access_token))).text, UNAUTHORIZED);
  assert.equal((await call(s2, 'GET', '/collections', undefined, bearer(t3.access_token))).status, 200);
});

test('no secret in the data dir, the log or an error body; the Qdrant client authenticates', { timeout: 120000 }, async () => {
  const s = await startServer('secrets', ['--rate-per-address', '0']);
  await setupCollections(s, ['a', 'b']);
  const password = `pw-${crypto.randomBytes(12).toString('hex')}`;
  await ok(s, 'POST', '/v1/admin/users', { username: 'dee', password, role: 'read', collections: ['a'] });
  const tok = await ok(s, 'POST', '/v1/auth/login', { username: 'dee', password }, {});
  const k = await newKey(s, 'write', ['a']);
  const bad = await call(s, 'POST', '/v1/admin/users', { username: 'eve', password: 'x', role: 'read' }, asAdmin(s));
  assert.equal(bad.status, 400);
  // the Qdrant JS client with apiKey (sent as the api-key header)
  const client = new QdrantClient({ url: s.url, apiKey: k.key, checkCompatibility: false });
  const cols = await client.getCollections();
  assert.deepEqual(cols.collections.map((c) => c.name), ['a']);
  await client.upsert('a', { wait: true, points: [{ id: 7, vector: V, payload: { who: 'client' } }] });
  const hits = await client.search('a', { vector: V, limit: 10 });
  assert.ok(hits.some((h) => h.id === 7));
  await assert.rejects(client.getCollection('b'), (e) => e.status === 403);
  await assert.rejects(new QdrantClient({ url: s.url, checkCompatibility: false }).getCollections(), (e) => e.status === 401);
  const readOnly = new QdrantClient({ url: s.url, apiKey: tok.access_token, checkCompatibility: false });
  // the client sends apiKey as api-key; a JWT there is not a key
  await assert.rejects(readOnly.getCollections(), (e) => e.status === 401);
  const viaBearer = new QdrantClient({ url: s.url, checkCompatibility: false, headers: { authorization: `Bearer ${tok.access_token}` } });
  assert.deepEqual((await viaBearer.getCollections()).collections.map((c) => c.name), ['a']);
  await assert.rejects(viaBearer.upsert('a', { wait: true, points: [{ id: 8, vector: V }] }), (e) => e.status === 403);
  // stop, then look everywhere on disk
  s.proc.kill('SIGTERM');
  await new Promise((r) => s.proc.once('exit', r));
  const secrets = {
    'admin key': s.adminKey,
    password,
    'API key secret': k.key.slice(16),
    'access token signature': tok.access_token.split('.')[2],
    'refresh token signature': tok.refresh_token.split('.')[2],
  };
  const files = [s.logPath];
  const walk = async (d) => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const f = path.join(d, e.name);
      if (e.isDirectory()) await walk(f);
      else files.push(f);
    }
  };
  await walk(s.dir);
  let bytes = 0;
  for (const f of files) {
    const buf = await fsp.readFile(f);
    bytes += buf.length;
    for (const [what, v] of Object.entries(secrets)) assert.equal(buf.indexOf(v), -1, `${what} found in ${f}`);
  }
  for (const [what, v] of Object.entries(secrets)) assert.ok(!bad.text.includes(v), `${what} in an error body`);
  log(`secrets: ${Object.keys(secrets).length} secrets in none of ${files.length} files (${bytes} bytes)`);
});
