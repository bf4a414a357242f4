// Durability of `vectron serve` across restarts: kill -9 during concurrent
// ingest, a graceful SIGTERM restart (under write load), and kill -9 of an
// idle server right after an acknowledged write.  Every acknowledged write
// (HTTP 200 to a `wait=true` request) must be there, with its vector and
// payload, after the restart.
//
// This file starts its own servers (it does not use run.sh's):
//   vectron serve --data-dir <mkdtemp> --http-port <free port>
// with http_port + 1000 (the default Raft port) checked to be free too.
//
// Environment:
//   VECTRON_BIN        path of the vectron binary (required)
//   VX_SEED            unsigned 32-bit seed of the generated data (default random; printed)
//   VX_DEADLINE_S      deadline of each wait: start, stop, one request (default 30)
//   VX_KILL_AFTER_MS   scenario 1: SIGKILL after this much ingest ... (default 1500)
//   VX_KILL_AFTER_ACKED ... or once this many points are acknowledged (default 2000)
//   VX_KEEP_DATA=1     keep the data dirs and server logs (paths are printed)
//
//   cd tests/api && VECTRON_BIN=$PWD/../../build/vectron node --test durability/*.test.mjs
//   tests/api/durability/run.sh build/vectron
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pickPort } from '../lib/ports.mjs';
import { performance } from 'node:perf_hooks';

/* ------------------------------------------------------------------ */
/* Configuration                                                      */
/* ------------------------------------------------------------------ */

const BIN = process.env.VECTRON_BIN;
if (!BIN) throw new Error('VECTRON_BIN must be set to the path of the vectron binary');
fs.accessSync(BIN, fs.constants.X_OK); // throws with the path when it is not executable

function envInt(name, dflt, lo = 0, hi = Number.MAX_SAFE_INTEGER) {
  const s = process.env[name];
  if (s === undefined || s === '') return dflt;
  const n = Number(s);
  if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`${name} must be an integer in ${lo}..${hi}, got ${JSON.stringify(s)}`);
  return n;
}

const SEED = envInt('VX_SEED', randomBytes(4).readUInt32LE(0), 0, 0xffffffff);
const DEADLINE_MS = envInt('VX_DEADLINE_S', 30, 1) * 1000;
const KILL_AFTER_MS = envInt('VX_KILL_AFTER_MS', 1500, 0);
const KILL_AFTER_ACKED = envInt('VX_KILL_AFTER_ACKED', 2000, 1);
const KEEP_DATA = process.env.VX_KEEP_DATA === '1';
const GRACEFUL_EXIT_MS = 30000; // SIGTERM under write load, checkpoint included, on a busy machine
const DIM = 32;
const BATCH = 100;
const WRITERS = 4;
const TAGS = ['red', 'green', 'blue', 'cyan', 'pink'];

const log = (...a) => console.log('[durability]', ...a);
log(`VX_SEED=${SEED} VECTRON_BIN=${BIN} deadline=${DEADLINE_MS / 1000}s`);

/* ------------------------------------------------------------------ */
/* Seeded data (mulberry32, as in lib/common.mjs)                     */
/* ------------------------------------------------------------------ */

function fnv1a(str) {
  let h = 0x811c9dc5;
  for (let i = 0; i < str.length; i++) {
    h ^= str.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

function makeRng(tag) {
  let a = (SEED ^ fnv1a(String(tag))) >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    // float32 components, never a (near) zero vector
    vec: (dim) => {
      for (;;) {
        const v = Array.from({ length: dim }, () => Math.fround(2 * next() - 1));
        if (v.some((x) => Math.abs(x) > 1e-3)) return v;
      }
    },
    sample: (arr, n) => {
      const a = [...arr];
      for (let i = 0; i < Math.min(n, a.length); i++) {
        const j = i + Math.floor(next() * (a.length - i));
        [a[i], a[j]] = [a[j], a[i]];
      }
      return a.slice(0, n);
    },
  };
}

function normalize(v) {
  const n = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  return v.map((x) => x / n);
}

/* ------------------------------------------------------------------ */
/* Small utilities                                                    */
/* ------------------------------------------------------------------ */

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ms = (t0) => Math.round(performance.now() - t0);

async function withDeadline(promise, timeoutMs, what) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`deadline: ${what}: not done within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/* ------------------------------------------------------------------ */
/* The server process                                                 */
/* ------------------------------------------------------------------ */

const allServers = [];

class VectronServer {
  static async create(tag) {
    const s = new VectronServer();
    s.tag = tag;
    s.dataDir = await fsp.mkdtemp(path.join(os.tmpdir(), `vectron-durability-${tag}-`));
    s.logPath = `${s.dataDir}.log`;
    s.port = await pickPort();
    s.url = `http://127.0.0.1:${s.port}`;
    s.proc = null;
    s.starts = 0;
    allServers.push(s);
    log(`${tag}: data dir ${s.dataDir}, log ${s.logPath}, http ${s.url}, raft port ${s.port + 1000}`);
    return s;
  }

  alive() {
    return this.proc !== null && this.exitInfo === null;
  }

  // Spawns `vectron serve` on the same data dir and port every time and waits
  // for GET /readyz == 200.  Returns the milliseconds it took.
  async start() {
    assert.ok(!this.alive(), `${this.tag}: start() while the server is running`);
    this.starts += 1;
    const fd = fs.openSync(this.logPath, 'a');
    fs.writeSync(fd, `----- start #${this.starts} at ${new Date().toISOString()} -----\n`);
    const t0 = performance.now();
    const proc = spawn(BIN, ['serve', '--data-dir', this.dataDir, '--http-port', String(this.port)], {
      stdio: ['ignore', fd, fd],
    });
    fs.closeSync(fd);
    this.proc = proc;
    this.exitInfo = null;
    this.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
      proc.once('error', (err) => {
        this.exitInfo = { code: null, signal: null, error: `${err.code || ''} ${err.message}` };
        resolve(this.exitInfo);
      });
    });
    const deadline = Date.now() + DEADLINE_MS;
    let last = 'no answer yet';
    for (;;) {
      if (this.exitInfo) {
        throw new Error(`${this.tag}: the server exited before it was ready (start #${this.starts}): ${JSON.stringify(this.exitInfo)}; last probe: ${last}`);
      }
      try {
        const r = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(Math.max(100, Math.min(2000, deadline - Date.now()))) });
        await r.arrayBuffer();
        if (r.status === 200) break;
        last = `readyz answered ${r.status}`;
      } catch (e) {
        last = e.cause?.code || e.name || e.message;
      }
      if (Date.now() > deadline) throw new Error(`${this.tag}: not ready within ${DEADLINE_MS} ms (start #${this.starts}; last probe: ${last})`);
      await sleep(50);
    }
    const took = ms(t0);
    log(`${this.tag}: start #${this.starts} (pid ${proc.pid}) ready after ${took} ms`);
    return took;
  }

  signal(sig) {
    assert.ok(this.alive(), `${this.tag}: ${sig} to a server that is not running (${JSON.stringify(this.exitInfo)})`);
    process.kill(this.proc.pid, sig);
  }

  // Resolves with {code, signal} once the process is gone; throws after timeoutMs.
  waitExit(timeoutMs, what = 'exit') {
    return withDeadline(this.exited, timeoutMs, `${this.tag}: server ${what}`);
  }

  async kill9() {
    this.signal('SIGKILL');
    const info = await this.waitExit(DEADLINE_MS, 'exit after SIGKILL');
    assert.equal(info.signal, 'SIGKILL', `${this.tag}: exit after SIGKILL: ${JSON.stringify(info)}`);
  }

  // Interesting lines of the log: everything but successful request lines.
  logTail(n = 60) {
    let text;
    try {
      text = fs.readFileSync(this.logPath, 'utf8');
    } catch (e) {
      return `(no log: ${e.message})`;
    }
    const lines = text.split('\n').filter((l) => l && !/"event":"http_request".*"status":[23]\d\d/.test(l));
    return `----- ${this.tag}: server log ${this.logPath} (last ${n} of ${lines.length} lines other than 2xx/3xx requests) -----\n` + lines.slice(-n).join('\n');
  }

  async cleanup() {
    if (this.alive()) {
      try {
        process.kill(this.proc.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
      await withDeadline(this.exited, 10000, `${this.tag}: exit after the cleanup SIGKILL`).catch((e) => console.error(e.message));
    }
    if (KEEP_DATA) {
      log(`${this.tag}: kept ${this.dataDir} and ${this.logPath}`);
    } else {
      await fsp.rm(this.dataDir, { recursive: true, force: true });
      await fsp.rm(this.logPath, { force: true });
    }
  }
}

after(async () => {
  for (const s of allServers) await s.cleanup();
});

// A test whose failure prints the logs of the servers it started.
function scenario(name, fn) {
  test(name, { timeout: 6 * DEADLINE_MS + 60000 }, async (t) => {
    const servers = [];
    const newServer = async (tag) => {
      const s = await VectronServer.create(tag);
      servers.push(s);
      return s;
    };
    try {
      await fn(t, newServer);
    } catch (e) {
      for (const s of servers) console.error(s.logTail());
      throw e;
    } finally {
      // A failed scenario's server (e.g. one hung after SIGTERM) goes now;
      // the data dirs go in after().
      for (const s of servers) if (s.alive()) process.kill(s.proc.pid, 'SIGKILL');
    }
  });
}

/* ------------------------------------------------------------------ */
/* Raw HTTP                                                           */
/* ------------------------------------------------------------------ */

async function call(srv, method, p, body) {
  const init = { method, headers: {}, signal: AbortSignal.timeout(DEADLINE_MS) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['content-type'] = 'application/json';
  }
  const res = await fetch(srv.url + p, init);
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json };
}

const brief = (res) => `HTTP ${res.status} ${res.text.length > 400 ? res.text.slice(0, 400) + '…' : res.text}`;

function ok(res, what) {
  assert.equal(res.status, 200, `${what}: ${brief(res)}`);
  assert.equal(res.json?.status, 'ok', `${what}: ${brief(res)}`);
  return res.json.result;
}

async function createCollection(srv, name) {
  const r = ok(await call(srv, 'PUT', `/collections/${name}`, { vectors: { size: DIM, distance: 'Cosine' } }), `create ${name}`);
  assert.equal(r, true);
}

async function getCollection(srv, name) {
  return ok(await call(srv, 'GET', `/collections/${name}`), `GET /collections/${name}`);
}

async function countPoints(srv, coll) {
  return ok(await call(srv, 'POST', `/collections/${coll}/points/count`, { exact: true }), `count ${coll}`).count;
}

async function top1(srv, coll, vector, exact) {
  const r = ok(
    await call(srv, 'POST', `/collections/${coll}/points/search`, { vector, limit: 1, params: { exact }, with_payload: false }),
    `search ${coll} exact=${exact}`,
  );
  return r[0] ?? null;
}

// id -> {id, vector, payload} for the given ids that exist (chunks of 1000).
async function retrieve(srv, coll, ids) {
  const found = new Map();
  for (let i = 0; i < ids.length; i += 1000) {
    const chunk = ids.slice(i, i + 1000);
    const r = ok(
      await call(srv, 'POST', `/collections/${coll}/points`, { ids: chunk, with_vector: true, with_payload: true }),
      `retrieve ${coll} ids ${i}..${i + chunk.length - 1}`,
    );
    assert.ok(Array.isArray(r), `retrieve result is not an array: ${JSON.stringify(r).slice(0, 200)}`);
    for (const p of r) found.set(Number(p.id), p);
  }
  return found;
}

// Differences between a stored point and what was sent (vector compared after
// cosine normalisation, within 1e-5 per component), or null.
function pointDiff(got, sent) {
  const want = normalize(sent.vector);
  if (!Array.isArray(got.vector) || got.vector.length !== want.length) {
    return `vector ${JSON.stringify(got.vector)?.slice(0, 80)} (want ${want.length} components)`;
  }
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(got.vector[i] - want[i]) <= 1e-5)) return `vector[${i}] ${got.vector[i]} vs ${want[i]}`;
  }
  try {
    assert.deepEqual(got.payload, sent.payload);
  } catch {
    return `payload ${JSON.stringify(got.payload)} vs ${JSON.stringify(sent.payload)}`;
  }
  return null;
}

const sampleList = (arr, n = 10) => `${arr.slice(0, n).join(', ')}${arr.length > n ? `, … (${arr.length} in all)` : ''}`;

// The checks after every restart: every acknowledged id is there with its
// vector and payload, count >= acknowledged, and an exact search with 20
// acknowledged vectors finds each point with score ~1.
async function checkAcked(srv, coll, acked, sent, rng, what) {
  const t0 = performance.now();
  const found = await retrieve(srv, coll, acked);
  const missing = acked.filter((id) => !found.has(id));
  assert.equal(missing.length, 0, `${what}: ${missing.length} of ${acked.length} acknowledged points are missing after the restart: ${sampleList(missing)}`);
  const bad = [];
  for (const id of acked) {
    const d = pointDiff(found.get(id), sent.get(id));
    if (d) bad.push(`${id}: ${d}`);
  }
  assert.equal(bad.length, 0, `${what}: ${bad.length} acknowledged points came back different: ${sampleList(bad, 5)}`);
  const count = await countPoints(srv, coll);
  assert.ok(count >= acked.length, `${what}: count ${count} < ${acked.length} acknowledged`);
  for (const id of rng.sample(acked, 20)) {
    const hit = await top1(srv, coll, sent.get(id).vector, true);
    assert.ok(hit, `${what}: exact search with the vector of ${id} found nothing`);
    assert.equal(Number(hit.id), id, `${what}: exact search with the vector of ${id} returned ${JSON.stringify(hit)}`);
    assert.ok(Math.abs(hit.score - 1) <= 1e-4, `${what}: exact search with the vector of ${id}: score ${hit.score}, want ~1`);
  }
  log(`${what}: ${acked.length} acknowledged points all present and equal, count ${count}, 20 exact searches ok (${ms(t0)} ms)`);
  return { found, count };
}

/* ------------------------------------------------------------------ */
/* Concurrent writers                                                 */
/* ------------------------------------------------------------------ */

// WRITERS concurrent loops, each upserting batches of BATCH points with
// wait=true through raw fetch; writer w uses ids idBase + w*1e6 + k.  A writer
// stops at its first error (or when state.stop is set).  `sent` maps every id
// ever sent to {vector, payload}; `acked` lists the ids of every batch that got
// HTTP 200.  Errors are split by whether they came before state.signalledAt.
function newWriterState() {
  return { sent: new Map(), acked: [], stop: false, signalledAt: null, errorsBefore: [], errorsAfter: [], notCompleted: [], batches: 0, latencies: [], started: performance.now() };
}

function runWriters(srv, coll, state, { tag, idBase = 0, onAck = () => {} }) {
  const one = async (w) => {
    const rng = makeRng(`${tag}-writer-${w}`);
    let k = 0;
    while (!state.stop) {
      const points = [];
      for (let i = 0; i < BATCH; i++, k++) {
        const id = idBase + w * 1e6 + k;
        const p = { id, vector: rng.vec(DIM), payload: { tag: TAGS[k % TAGS.length], n: k, w } };
        state.sent.set(id, { vector: p.vector, payload: p.payload });
        points.push(p);
      }
      const t0 = performance.now();
      let res, err;
      try {
        res = await call(srv, 'PUT', `/collections/${coll}/points?wait=true`, { points });
      } catch (e) {
        err = `writer ${w}: ${e.cause?.code || e.cause?.message || e.message}`;
      }
      if (!err && (res.status !== 200 || res.json?.status !== 'ok')) err = `writer ${w}: ${brief(res)}`;
      if (err) {
        (state.signalledAt === null ? state.errorsBefore : state.errorsAfter).push(err);
        return;
      }
      state.latencies.push(performance.now() - t0);
      state.batches += 1;
      if (res.json.result?.status !== 'completed') state.notCompleted.push(`writer ${w}: ${JSON.stringify(res.json.result)}`);
      for (const p of points) state.acked.push(p.id);
      onAck(state.acked.length);
    }
  };
  return Promise.all(Array.from({ length: WRITERS }, (_, w) => one(w)));
}

function writerSummary(state) {
  const l = [...state.latencies].sort((a, b) => a - b);
  const q = (f) => (l.length ? l[Math.min(l.length - 1, Math.floor(f * l.length))].toFixed(1) : '-');
  return `${state.acked.length} acknowledged in ${state.batches} batches, ${state.sent.size} sent, batch latency p50 ${q(0.5)} ms p99 ${q(0.99)} ms`;
}

function assertWritersClean(state, what) {
  assert.deepEqual(state.errorsBefore, [], `${what}: writes failed before the server was signalled`);
  assert.deepEqual(state.notCompleted, [], `${what}: wait=true upserts answered without status "completed"`);
  assert.ok(state.acked.length > 0, `${what}: no write was acknowledged`);
}

/* ------------------------------------------------------------------ */
/* 1. kill -9 during ingest                                           */
/* ------------------------------------------------------------------ */

scenario('kill -9 during concurrent ingest loses no acknowledged point', async (t, newServer) => {
  const srv = await newServer('kill9-ingest');
  await srv.start();
  await createCollection(srv, 'c');

  const st = newWriterState();
  const fire = (why) => {
    if (st.signalledAt !== null || !srv.alive()) return;
    st.signalledAt = performance.now();
    st.trigger = why;
    st.ackedAtSignal = st.acked.length;
    srv.signal('SIGKILL');
  };
  const timer = setTimeout(() => fire(`${KILL_AFTER_MS} ms of ingest`), KILL_AFTER_MS);
  const writers = runWriters(srv, 'c', st, {
    tag: 'ingest',
    onAck: (n) => n >= KILL_AFTER_ACKED && fire(`${n} points acknowledged`),
  });
  try {
    await withDeadline(writers, DEADLINE_MS + KILL_AFTER_MS, 'the writers to stop');
  } finally {
    clearTimeout(timer);
  }
  assert.deepEqual(st.errorsBefore, [], 'writes failed before the SIGKILL');
  assert.notEqual(st.signalledAt, null, 'the writers stopped before the SIGKILL');
  const exit = await srv.waitExit(DEADLINE_MS, 'exit after SIGKILL');
  assert.equal(exit.signal, 'SIGKILL', `exit: ${JSON.stringify(exit)}`);
  log(`ingest: SIGKILL after ${Math.round(st.signalledAt - st.started)} ms (${st.trigger}; ${st.ackedAtSignal} acknowledged then); ${writerSummary(st)}; writer errors after the kill: ${st.errorsAfter.join(' | ')}`);
  assertWritersClean(st, 'ingest');

  await srv.start();
  const rng = makeRng('kill9-check');
  const { count } = await checkAcked(srv, 'c', st.acked, st.sent, rng, 'after kill -9');

  // Points of batches in flight at the kill may or may not be there; those
  // that are must be intact, and count must be exactly the points there.
  const ackedSet = new Set(st.acked);
  const unacked = [...st.sent.keys()].filter((id) => !ackedSet.has(id));
  const extra = await retrieve(srv, 'c', unacked);
  const bad = [];
  for (const [id, p] of extra) {
    const d = pointDiff(p, st.sent.get(id));
    if (d) bad.push(`${id}: ${d}`);
  }
  assert.deepEqual(bad, [], 'points of unacknowledged batches came back different');
  log(`after kill -9: ${extra.size} of ${unacked.length} unacknowledged (in-flight) points are present`);
  assert.equal(count, st.acked.length + extra.size, `count ${count} != ${st.acked.length} acknowledged + ${extra.size} unacknowledged present`);

  // Writes after the crash recovery must survive a second kill -9.
  const st2 = newWriterState();
  const writers2 = runWriters(srv, 'c', st2, {
    tag: 'after-recovery',
    idBase: 10e6,
    onAck: (n) => {
      if (n >= 1000) st2.stop = true;
    },
  });
  await withDeadline(writers2, DEADLINE_MS, 'post-recovery writers');
  assertWritersClean(st2, 'post-recovery writes');
  await srv.kill9();
  await srv.start();
  const all = [...st.acked, ...st2.acked];
  const sent = new Map([...st.sent, ...st2.sent]);
  const r2 = await checkAcked(srv, 'c', all, sent, rng, 'after a second kill -9');
  assert.equal(r2.count, count + st2.acked.length, `count after the second kill -9`);
});

/* ------------------------------------------------------------------ */
/* 2. graceful restart                                                */
/* ------------------------------------------------------------------ */

scenario('SIGTERM under write load exits 0 within 10 s and a restart keeps points, payload indexes and search results', async (t, newServer) => {
  const srv = await newServer('sigterm');
  await srv.start();
  await createCollection(srv, 'c');

  const st = newWriterState();
  await withDeadline(
    runWriters(srv, 'c', st, {
      tag: 'graceful',
      onAck: (n) => {
        if (n >= 3000) st.stop = true;
      },
    }),
    DEADLINE_MS,
    'ingest into c',
  );
  assertWritersClean(st, 'ingest into c');
  log(`sigterm: c: ${writerSummary(st)}`);

  for (const [field, schema] of [['tag', 'keyword'], ['n', 'integer']]) {
    const r = ok(await call(srv, 'PUT', `/collections/c/index?wait=true`, { field_name: field, field_schema: schema }), `index ${field}`);
    assert.equal(r.status, 'completed', `create index ${field}: ${JSON.stringify(r)}`);
  }
  // Searches below are compared before/after: let indexing catch up first.
  const deadline = Date.now() + DEADLINE_MS;
  let info;
  for (;;) {
    info = await getCollection(srv, 'c');
    if (info.status === 'green' && info.indexed_vectors_count === info.points_count) break;
    assert.ok(Date.now() < deadline, `c not green/indexed within ${DEADLINE_MS} ms: ${JSON.stringify(info).slice(0, 300)}`);
    await sleep(50);
  }
  const schemaBefore = info.payload_schema;
  assert.equal(schemaBefore?.tag?.data_type, 'keyword', `payload_schema before: ${JSON.stringify(schemaBefore)}`);
  assert.equal(schemaBefore?.n?.data_type, 'integer', `payload_schema before: ${JSON.stringify(schemaBefore)}`);

  const qrng = makeRng('graceful-queries');
  const queries = Array.from({ length: 20 }, () => qrng.vec(DIM));
  const before = [];
  for (const q of queries) before.push(await top1(srv, 'c', q, false));

  // Write load on another collection while SIGTERM arrives.
  await createCollection(srv, 'load');
  const ld = newWriterState();
  const load = runWriters(srv, 'load', ld, { tag: 'load' });
  // SIGTERM once some load has been acknowledged (or after 2 s regardless).
  const t0 = performance.now();
  while (ld.acked.length < 1000 && ld.errorsBefore.length === 0 && performance.now() - t0 < 2000) await sleep(10);
  assert.deepEqual(ld.errorsBefore, [], 'load writes failed before the SIGTERM');
  ld.signalledAt = performance.now();
  ld.ackedAtSignal = ld.acked.length;
  srv.signal('SIGTERM');
  let exit;
  try {
    exit = await srv.waitExit(GRACEFUL_EXIT_MS, 'exit after SIGTERM');
  } catch (e) {
    ld.stop = true;
    throw e;
  }
  const stopMs = Math.round(performance.now() - ld.signalledAt);
  assert.deepEqual(exit, { code: 0, signal: null }, `exit status after SIGTERM`);
  await withDeadline(load, DEADLINE_MS, 'load writers to stop');
  log(`sigterm: exit 0 after ${stopMs} ms; load: ${writerSummary(ld)} (${ld.ackedAtSignal} at the SIGTERM); writer errors after SIGTERM: ${ld.errorsAfter.join(' | ')}`);
  assertWritersClean(ld, 'load');

  await srv.start();
  const rng = makeRng('graceful-check');
  const { count } = await checkAcked(srv, 'c', st.acked, st.sent, rng, 'c after SIGTERM');
  assert.equal(count, st.acked.length, 'count of c (no write was in flight)');
  await checkAcked(srv, 'load', ld.acked, ld.sent, rng, 'load after SIGTERM');

  const infoAfter = await getCollection(srv, 'c');
  for (const f of ['tag', 'n']) {
    assert.ok(infoAfter.payload_schema?.[f], `payload index ${f} lost in the restart: payload_schema ${JSON.stringify(infoAfter.payload_schema)}`);
    assert.equal(infoAfter.payload_schema[f].data_type, schemaBefore[f].data_type, `payload_schema.${f}.data_type`);
    assert.equal(infoAfter.payload_schema[f].points, schemaBefore[f].points, `payload_schema.${f}.points`);
  }
  const filtered = ok(await call(srv, 'POST', '/collections/c/points/count', { exact: true, filter: { must: [{ key: 'tag', match: { value: 'green' } }] } }), 'filtered count');
  assert.equal(filtered.count, st.acked.filter((id) => st.sent.get(id).payload.tag === 'green').length, 'count with the indexed keyword filter');

  const diffs = [];
  for (let i = 0; i < queries.length; i++) {
    const now = await top1(srv, 'c', queries[i], false);
    if (Number(now?.id) !== Number(before[i]?.id)) {
      const exact = await top1(srv, 'c', queries[i], true);
      diffs.push(`query ${i}: before ${JSON.stringify(before[i])}, after ${JSON.stringify(now)}, exact ${JSON.stringify(exact)}`);
    }
  }
  assert.deepEqual(diffs, [], 'exact:false top-1 changed across the graceful restart');
  log(`sigterm: payload_schema kept, 20 exact:false top-1 results unchanged`);
});

/* ------------------------------------------------------------------ */
/* 3. kill -9 of an idle server right after an acknowledged write     */
/* ------------------------------------------------------------------ */

scenario('kill -9 right after an acknowledged write (idle server) keeps the write', async (t, newServer) => {
  const srv = await newServer('kill9-idle');
  await srv.start();
  await createCollection(srv, 'c');
  const rng = makeRng('idle');
  const p1 = { id: 1, vector: rng.vec(DIM), payload: { name: 'one', n: 1 } };
  const p2 = { id: 2, vector: rng.vec(DIM), payload: { name: 'two', n: 2 } };

  // Upsert, kill -9 at once.
  let r = ok(await call(srv, 'PUT', '/collections/c/points?wait=true', { points: [p1] }), 'upsert 1');
  assert.equal(r.status, 'completed');
  await srv.kill9();
  await srv.start();
  let got = await retrieve(srv, 'c', [1, 2]);
  assert.ok(got.has(1), 'point 1, acknowledged right before the kill -9, is missing');
  assert.equal(pointDiff(got.get(1), p1), null, 'point 1 after the restart');
  assert.equal(await countPoints(srv, 'c'), 1);

  // A delete and an upsert, kill -9 at once.
  r = ok(await call(srv, 'POST', '/collections/c/points/delete?wait=true', { points: [1] }), 'delete 1');
  assert.equal(r.status, 'completed');
  r = ok(await call(srv, 'PUT', '/collections/c/points?wait=true', { points: [p2] }), 'upsert 2');
  assert.equal(r.status, 'completed');
  await srv.kill9();
  await srv.start();
  got = await retrieve(srv, 'c', [1, 2]);
  assert.ok(!got.has(1), 'point 1, deleted (acknowledged) before the kill -9, is back');
  assert.ok(got.has(2), 'point 2, acknowledged right before the kill -9, is missing');
  assert.equal(pointDiff(got.get(2), p2), null, 'point 2 after the restart');
  assert.equal(await countPoints(srv, 'c'), 1);
  log('idle: acknowledged upsert and delete survived kill -9 twice');
});
