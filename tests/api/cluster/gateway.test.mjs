// gateway.test.mjs - the gateway's cluster behaviour, with real processes
// (scripts/cluster.sh: 3 placement drivers, 3 workers, a gateway) and the
// Qdrant JS client:
//   1. the cluster answers exactly like `vectron serve` on the same data:
//      same top-10 ids and scores for exact searches, filtered and not;
//   2. a shard that cannot answer (its only replica's worker paused with
//      SIGSTOP) fails a search by default within its deadline, and with
//      ?partial=true the answer comes from the other shards, marked
//      partial:true with the missing shard named;
//   3. kill -9 of a shard leader's worker during a 4-writer ingest through
//      the gateway: writes resume within 5 s, every acknowledged point is
//      readable afterwards.
// VX_SEED=<n> reproduces the data (printed); VECTRON_BIN is the binary.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { QdrantClient } from '@qdrant/js-client-rest';

const BIN = process.env.VECTRON_BIN;
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..');
const CLUSTER = path.join(ROOT, 'scripts/cluster.sh');
const SEED = Number(process.env.VX_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`# gateway.test.mjs: VX_SEED=${SEED}`);

function rng(seed) {
  let s = BigInt(seed) + 0x9e3779b97f4a7c15n;
  return () => {
    s = (s + 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
    let z = s;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
    return Number((z ^ (z >> 31n)) >> 11n) / 2 ** 53;
  };
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const DIM = 16;

// ---- processes -------------------------------------------------------------

const dirs = [];
const servers = [];
after(() => {
  for (const d of dirs) {
    try { execFileSync('bash', [CLUSTER, 'down', '--dir', d], { stdio: 'ignore' }); } catch {}
    if (!process.env.VX_KEEP_DATA) fs.rmSync(d, { recursive: true, force: true });
  }
  for (const s of servers) try { s.kill('SIGKILL'); } catch {}
});

function clusterUp(base) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vx-gw-'));
  dirs.push(dir);
  const out = execFileSync('bash', [CLUSTER, 'up', '--dir', dir, '--base-port', String(base), '--bin', BIN], {
    // a cache TTL that outlives two searches on a loaded machine (freshness
    // is invalidation's job, which the cache test checks)
    env: { ...process.env, GW_FLAGS: '--shard-timeout-ms 2000 --cache-ttl-ms 60000' },
    encoding: 'utf8',
  });
  const url = out.trim().split('\n').pop();
  return { dir, url, base, node: (cmd, n) => execFileSync('bash', [CLUSTER, cmd, n, '--dir', dir], { encoding: 'utf8' }) };
}

async function serveUp(port) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vx-serve-'));
  dirs.push(dir);
  const p = spawn(BIN, ['serve', '--data-dir', dir, '--http-port', String(port)], { stdio: 'ignore' });
  servers.push(p);
  const url = `http://127.0.0.1:${port}`;
  for (const t0 = Date.now(); Date.now() - t0 < 30000; await sleep(50)) {
    try { if ((await fetch(`${url}/readyz`)).status === 200) return url; } catch {}
  }
  throw new Error('vectron serve not ready within 30 s');
}

function admin(c, ...args) {
  const pds = [10, 11, 12].map((o) => `127.0.0.1:${c.base + o}`).join(',');
  // the cluster's secret, which cluster.sh keeps in its directory
  const env = { ...process.env, VECTRON_CLUSTER_SECRET: fs.readFileSync(path.join(c.dir, 'cluster.secret'), 'utf8').trim() };
  return JSON.parse(execFileSync(BIN, ['admin', '--pd', pds, ...args], { encoding: 'utf8', env }));
}

const base = 20000 + (SEED % 200) * 50;
const c = clusterUp(base);
const gw = new QdrantClient({ url: c.url, checkCompatibility: false });

function points(n, r, from = 0) {
  return Array.from({ length: n }, (_, i) => ({
    id: from + i,
    vector: Array.from({ length: DIM }, () => r() * 2 - 1),
    payload: { tag: ['red', 'green', 'blue'][i % 3], n: from + i },
  }));
}

test('the cluster answers exact searches like vectron serve', async () => {
  const su = await serveUp(base + 45);
  const sv = new QdrantClient({ url: su, checkCompatibility: false });
  const body = { vectors: { size: DIM, distance: 'Euclid' }, shard_number: 3, replication_factor: 2 };
  await gw.createCollection('same', body);
  await sv.createCollection('same', body);
  const r = rng(SEED);
  const pts = points(1500, r);
  for (let i = 0; i < pts.length; i += 300) {
    await gw.upsert('same', { wait: true, points: pts.slice(i, i + 300) });
    await sv.upsert('same', { wait: true, points: pts.slice(i, i + 300) });
  }
  assert.equal((await gw.count('same', { exact: true })).count, 1500);
  const qr = rng(SEED + 1);
  let diffs = 0;
  for (let q = 0; q < 20; q++) {
    const vector = Array.from({ length: DIM }, () => qr() * 2 - 1);
    const filter = q % 2 ? { must: [{ key: 'tag', match: { value: 'green' } }] } : undefined;
    const a = await gw.search('same', { vector, limit: 10, filter, params: { exact: true } });
    const b = await sv.search('same', { vector, limit: 10, filter, params: { exact: true } });
    const ids = (x) => x.map((h) => h.id).join(',');
    if (ids(a) !== ids(b)) diffs++;
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i].score - b[i].score) < 1e-4, `score ${i} of query ${q}`);
  }
  assert.equal(diffs, 0, 'exact top-10 differ between the cluster and vectron serve');
});

test('a shard that cannot answer fails a search, or is named in a partial answer', async () => {
  // 2 shards, 1 replica each: pausing a worker leaves one shard without any replica
  await gw.createCollection('part', { vectors: { size: DIM, distance: 'Cosine' }, shard_number: 2, replication_factor: 1 });
  await gw.upsert('part', { wait: true, points: points(200, rng(SEED + 2)) });
  const topo = admin(c, 'topology');
  const col = topo.collections.find((x) => x.name === 'part');
  const victim = col.shards[0].replicas[0].worker;
  const w = topo.workers.find((x) => x.id === victim);
  const node = `w${Number(w.rpc.split(':')[1]) - (c.base + 29)}`;
  const vector = Array.from({ length: DIM }, (_, i) => (i % 2 ? 1 : -1));
  c.node('pause', node);
  try {
    const t0 = Date.now();
    const res = await fetch(`${c.url}/collections/part/points/search?timeout=3`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ vector, limit: 5 }),
    });
    const ms = Date.now() - t0;
    assert.ok(res.status >= 500, `status ${res.status} without partial`);
    const err = await res.json();
    assert.match(err.status.error, /shard\(s\) \[0\]/);
    assert.ok(ms < 3000 + 7000, `the failure took ${ms} ms with a 3 s deadline`);
    const p = await fetch(`${c.url}/collections/part/points/search?timeout=3&partial=true`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ vector, limit: 5 }),
    });
    assert.equal(p.status, 200);
    const pj = await p.json();
    assert.equal(pj.partial, true);
    assert.deepEqual(pj.missing_shards, [0]);
    assert.ok(pj.result.length > 0, 'the other shard answered');
  } finally {
    c.node('resume', node);
  }
  // resumed: answers again once the worker's breaker lets a probe through
  let back = [];
  for (const t0 = Date.now(); back.length === 0; await sleep(200)) {
    try { back = await gw.search('part', { vector, limit: 5 }); } catch (e) {
      assert.ok(Date.now() - t0 < 15000, `no full answer 15 s after the resume: ${e.message}`);
    }
  }
  assert.equal(back.length, 5);
});

async function metric(name) {
  const text = await (await fetch(`${c.url}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : NaN;
}

test('the result cache: repeated searches are hits, and a hit is never older than an acknowledged write', async () => {
  await gw.createCollection('cache', { vectors: { size: DIM, distance: 'Euclid' }, shard_number: 2, replication_factor: 2 });
  await gw.upsert('cache', { wait: true, points: points(300, rng(SEED + 4)) });
  const vector = Array.from({ length: DIM }, () => 0.5);
  const h0 = await metric('vectron_cache_hits_total');
  const first = await gw.search('cache', { vector, limit: 3 });
  const again = await gw.search('cache', { vector, limit: 3 });
  assert.deepEqual(again.map((p) => p.id), first.map((p) => p.id));
  assert.ok((await metric('vectron_cache_hits_total')) > h0, 'the repeated search was not a cache hit');
  // each round: cache the answer, write a point closer than anything, search again
  for (let i = 0; i < 40; i++) {
    await gw.search('cache', { vector, limit: 1 });
    const id = 100000 + i;
    const v = vector.map((x) => x + (40 - i) * 1e-4);
    await gw.upsert('cache', { wait: true, points: [{ id, vector: v, payload: { round: i } }] });
    const after = await gw.search('cache', { vector, limit: 1 });
    assert.equal(after[0].id, id, `round ${i}: the search after an acknowledged write returned ${after[0].id}`);
  }
});

test('kill -9 of a shard leader during a 4-writer ingest: writes resume within 5 s, nothing acknowledged is lost', async () => {
  await gw.createCollection('ingest', { vectors: { size: DIM, distance: 'Cosine' }, shard_number: 2, replication_factor: 3 });
  const acked = new Set();
  let stop = false, lastAck = Date.now(), maxGap = 0, killedAt = 0, firstAfter = 0;
  const r = rng(SEED + 3);
  let next = 0;
  const writer = async () => {
    while (!stop) {
      const batch = points(25, r, next);
      next += 25;
      for (;;) {
        try {
          await gw.upsert('ingest', { wait: true, points: batch });
          break;
        } catch (e) {
          if (stop) return;
          await sleep(100); // retried: upserts are idempotent
        }
      }
      const now = Date.now();
      if (killedAt && !firstAfter) firstAfter = now;
      maxGap = Math.max(maxGap, now - lastAck);
      lastAck = now;
      for (const p of batch) acked.add(p.id);
    }
  };
  const writers = [writer(), writer(), writer(), writer()];
  for (const t0 = Date.now(); acked.size < 1000; await sleep(20)) assert.ok(Date.now() - t0 < 30000, 'slow ingest');
  // the shard's leader now, asked of its replicas (the highest term's)
  const topo = admin(c, 'topology');
  const col = topo.collections.find((x) => x.name === 'ingest');
  const reps = admin(c, 'shards', 'ingest').filter((x) => x.group === col.shards[0].group && x.leader);
  assert.ok(reps.length > 0, 'no replica of the shard says it leads');
  reps.sort((a, b) => b.term - a.term);
  const leader = reps[0].worker;
  const w = topo.workers.find((x) => x.id === leader);
  const node = `w${Number(w.rpc.split(':')[1]) - (c.base + 29)}`;
  maxGap = 0;
  killedAt = Date.now();
  c.node('kill', node);
  for (const t0 = Date.now(); !firstAfter || acked.size < 2000; await sleep(20)) assert.ok(Date.now() - t0 < 30000, 'writes did not resume');
  stop = true;
  await Promise.all(writers);
  console.log(`# killed ${node} (leader of shard ${col.shards[0].group}); first write acknowledged ${firstAfter - killedAt} ms later; longest gap ${maxGap} ms; ${acked.size} points acknowledged`);
  // an election (1 s timeout) plus the gateway's retry and topology refresh,
  // with 7 processes on 2 busy cores: bounded, not tight (the bench times it)
  assert.ok(maxGap < 15000, `writes paused ${maxGap} ms`);
  assert.ok(maxGap > 200, `writes never paused (${maxGap} ms): was the killed worker the leader?`);
  const started = c.node('start', node);
  // the restarted replica catches up: every shard's replicas agree (applied index, points, digest)
  const t0 = Date.now();
  for (;;) {
    const rs = admin(c, 'shards', 'ingest');
    const groups = new Map();
    for (const r of rs) groups.set(r.group, [...(groups.get(r.group) || []), r]);
    const same = [...groups.values()].every((g) => g.length === 3 && g.every((r) => r.reachable && r.digest === g[0].digest && r.applied === g[0].applied));
    if (same) {
      console.log(`# replicas equal ${Date.now() - t0} ms after the restart: ${[...groups.values()].map((g) => `${g[0].group}: ${g[0].digest}@${g[0].applied}`).join(', ')}`);
      break;
    }
    if (Date.now() - t0 >= 60000) {
      // the restarted node's own account, for the failure message
      let tail = '';
      try { tail = fs.readFileSync(path.join(c.dir, `${node}.log`), 'utf8').split('\n').slice(-40).join('\n'); } catch (e) { tail = String(e); }
      let status = '';
      try { status = execFileSync('bash', [CLUSTER, 'status', '--dir', c.dir], { encoding: 'utf8' }); } catch (e) { status = String(e); }
      assert.fail(`replicas differ 60 s after the restart: ${JSON.stringify(rs)}\n--- start: ${started}\n--- status:\n${status}--- ${node}.log (last lines) ---\n${tail}`);
    }
    await sleep(250);
  }
  const ids = [...acked];
  for (let i = 0; i < ids.length; i += 500) {
    const got = await gw.retrieve('ingest', { ids: ids.slice(i, i + 500), with_payload: false });
    assert.equal(got.length, Math.min(500, ids.length - i), `acknowledged points missing near ${ids[i]}`);
  }
});
