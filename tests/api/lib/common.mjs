// Shared helpers for the API tests: configuration, seeded data, raw HTTP with
// envelope checks, the real QdrantClient, and collection bookkeeping.
//
// Environment:
//   VECTRON_URL  server base URL (default http://127.0.0.1:6333)
//   VX_SEED      unsigned 32-bit seed for the generated data (default: random)
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { basename } from 'node:path';
import { QdrantClient } from '@qdrant/js-client-rest';

export const BASE_URL = (process.env.VECTRON_URL || 'http://127.0.0.1:6333').replace(/\/+$/, '');

function parseSeed(s) {
  if (s === undefined || s === '') return randomBytes(4).readUInt32LE(0);
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new Error(`VX_SEED must be an unsigned 32-bit integer, got ${JSON.stringify(s)}`);
  }
  return n;
}
export const SEED = parseSeed(process.env.VX_SEED);

// Printed once per test file (each file runs in its own process under node --test).
const fileTag = basename(process.argv[1] || 'test');
process.stdout.write(`${fileTag}: VX_SEED=${SEED} VECTRON_URL=${BASE_URL}\n`);

/* ------------------------------------------------------------------ */
/* Deterministic randomness                                           */
/* ------------------------------------------------------------------ */

export function fnv1a(str) {
  let h = 0x811c9dc5;
  for (let i = 0; i < str.length; i++) {
    h ^= str.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

// mulberry32: small, fast, good enough for test data.
export function makeRng(tag) {
  let a = (SEED ^ fnv1a(String(tag))) >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const rng = {
    next,
    int: (n) => Math.floor(next() * n),
    float: (lo, hi) => lo + (hi - lo) * next(),
    pick: (arr) => arr[Math.floor(next() * arr.length)],
    // Components rounded to float32 so the server stores exactly what we score.
    vec: (dim, lo = -1, hi = 1) => {
      for (;;) {
        const v = Array.from({ length: dim }, () => Math.fround(lo + (hi - lo) * next()));
        if (v.some((x) => Math.abs(x) > 1e-3)) return v; // never a (near) zero vector
      }
    },
    uuid: () => {
      const b = Array.from({ length: 16 }, () => Math.floor(next() * 256));
      b[6] = (b[6] & 0x0f) | 0x40;
      b[8] = (b[8] & 0x3f) | 0x80;
      const h = b.map((x) => x.toString(16).padStart(2, '0')).join('');
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    },
  };
  return rng;
}

/* ------------------------------------------------------------------ */
/* Names and clients                                                  */
/* ------------------------------------------------------------------ */

const NONCE = randomBytes(3).toString('hex');
let nameCounter = 0;
// Unique per process and per call; the seed is part of the name so a failing
// run's leftovers can be matched with its log.
export function uniqueName(tag) {
  nameCounter += 1;
  return `vx_${tag}_${SEED}_${NONCE}_${nameCounter}`;
}

export function newClient(extra = {}) {
  return new QdrantClient({ url: BASE_URL, checkCompatibility: false, timeout: 30000, ...extra });
}

// Tracks collections made by one test file; dropAll() in an after() hook.
export class CollectionTracker {
  constructor(client) {
    this.client = client;
    this.names = new Set();
  }
  name(tag) {
    const n = uniqueName(tag);
    this.names.add(n);
    return n;
  }
  async create(tag, config) {
    const n = this.name(tag);
    const r = await this.client.createCollection(n, config);
    assert.equal(r, true, `createCollection(${n}) returned ${JSON.stringify(r)}`);
    return n;
  }
  async dropAll() {
    const failures = [];
    for (const n of this.names) {
      try {
        await this.client.deleteCollection(n);
      } catch (e) {
        failures.push(`${n}: ${e?.status ?? ''} ${e?.message ?? e}`);
      }
    }
    this.names.clear();
    if (failures.length) throw new Error(`cleanup failed: ${failures.join('; ')}`);
  }
}

/* ------------------------------------------------------------------ */
/* Raw HTTP                                                           */
/* ------------------------------------------------------------------ */

// One request.  body: undefined (none), a string (sent as is) or a value
// (JSON-encoded).  Returns {status, headers, text, json} (json undefined when
// the body is not JSON).
export async function http(method, path, body, { headers = {}, timeoutMs = 30000 } = {}) {
  const init = { method, headers: { ...headers }, signal: AbortSignal.timeout(timeoutMs) };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    if (!Object.keys(init.headers).some((k) => k.toLowerCase() === 'content-type')) {
      init.headers['content-type'] = 'application/json';
    }
  }
  const res = await fetch(BASE_URL + path, init);
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

function describeRes(res) {
  return `HTTP ${res.status} ${res.text.length > 600 ? res.text.slice(0, 600) + '…' : res.text}`;
}

// {result, status:"ok", time} with HTTP 200; returns result.
export function okResult(res, what = '') {
  assert.equal(res.status, 200, `${what}: expected HTTP 200, got ${describeRes(res)}`);
  assert.ok(res.json && typeof res.json === 'object', `${what}: body is not a JSON object: ${describeRes(res)}`);
  assert.match(res.headers.get('content-type') || '', /application\/json/, `${what}: content-type`);
  assert.equal(res.json.status, 'ok', `${what}: envelope status: ${describeRes(res)}`);
  assert.equal(typeof res.json.time, 'number', `${what}: envelope time must be a number (seconds)`);
  assert.ok(Number.isFinite(res.json.time) && res.json.time >= 0, `${what}: envelope time ${res.json.time}`);
  assert.ok('result' in res.json, `${what}: envelope lacks result: ${describeRes(res)}`);
  return res.json.result;
}

// Qdrant's error body: {status:{error:msg}, time} with result omitted.
export function assertErrorBody(res, httpStatus, what = '') {
  assert.equal(res.status, httpStatus, `${what}: expected HTTP ${httpStatus}, got ${describeRes(res)}`);
  assert.ok(res.json && typeof res.json === 'object', `${what}: error body is not JSON: ${describeRes(res)}`);
  assert.ok(res.json.status && typeof res.json.status === 'object', `${what}: status must be {error}: ${describeRes(res)}`);
  assert.equal(typeof res.json.status.error, 'string', `${what}: status.error must be a string`);
  assert.ok(res.json.status.error.length > 0, `${what}: status.error is empty`);
  assert.equal(typeof res.json.time, 'number', `${what}: error envelope time`);
  assert.ok(!('result' in res.json), `${what}: result must be omitted on error`);
  return res.json.status.error;
}

// The client throws ApiError {status, data}; check status and Qdrant's error body.
export async function expectClientError(promise, httpStatus, what = '') {
  let err;
  try {
    const r = await promise;
    assert.fail(`${what}: expected HTTP ${httpStatus}, the call succeeded with ${JSON.stringify(r)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    err = e;
  }
  assert.equal(err.status, httpStatus, `${what}: expected HTTP ${httpStatus}, got ${err.status} ${err.message} ${JSON.stringify(err.data)}`);
  assert.equal(typeof err.data?.status?.error, 'string', `${what}: error body lacks status.error: ${JSON.stringify(err.data)}`);
  return err;
}

/* ------------------------------------------------------------------ */
/* Misc                                                               */
/* ------------------------------------------------------------------ */

export const enc = encodeURIComponent;

export function sortIds(ids) {
  // Qdrant's order: integers ascending, then UUIDs (byte order == lowercase hex order).
  return [...ids].sort((a, b) => {
    const an = typeof a === 'number' || typeof a === 'bigint';
    const bn = typeof b === 'number' || typeof b === 'bigint';
    if (an && bn) return a < b ? -1 : a > b ? 1 : 0;
    if (an) return -1;
    if (bn) return 1;
    return a < b ? -1 : a > b ? 1 : 0;
  });
}

export function idSet(items) {
  return new Set(items.map((x) => (typeof x === 'object' && x !== null ? String(x.id) : String(x))));
}

export function assertSameIdSet(actual, expected, what = '') {
  const a = [...idSet(actual)].sort();
  const e = [...idSet(expected)].sort();
  assert.deepEqual(a, e, `${what}: id sets differ`);
}

export async function pollUntil(fn, { timeoutMs = 30000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export { randomUUID };
