// churn.mjs - updates that never degrade the database (issue 14): N points
// overwritten R times (every other round deleting half of them first),
// through `vectron serve` or the gateway of a local 3-worker cluster, with
// the server's CPU time, resident memory and recall@10 (against an exact scan
// of the live points) after every round, once the round's index work and
// its compaction are done.
//
//   node bench/churn.mjs [--bin build/vectron] [--dim 128] [--n 20000]
//        [--rounds 10] [--queries 100] [--cluster]
//
// 128-d uses real SIFT descriptors (../shared/data/sift100k: each round
// writes the next N base vectors, queries from query.fvecs); other
// dimensions use Gaussian random vectors (seeded).  One JSON line per round,
// then a summary: the largest CPU and RSS of a round against round 1 (the
// first overwrite; round 0 is the initial load), recall min..max.  CPU is the
// server processes' user+system time (serve, or the 3 workers, 3 placement
// drivers and the gateway); RSS their summed VmRSS.
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const BIN = path.resolve(opt('bin', path.join(ROOT, 'build/vectron')));
const DIM = Number(opt('dim', '128'));
const N = Number(opt('n', '20000'));
const ROUNDS = Number(opt('rounds', '10'));
const QUERIES = Number(opt('queries', '100'));
const CLUSTER = args.includes('--cluster');
const SEED = Number(opt('seed', '1'));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- data ------------------------------------------------------------------------------------

function readFvecs(file, max) {
  const buf = fs.readFileSync(file);
  const d = buf.readInt32LE(0);
  const n = Math.min(max, buf.length / (4 + 4 * d));
  const out = [];
  for (let i = 0; i < n; i++) {
    const off = i * (4 + 4 * d) + 4;
    out.push(Array.from(new Float32Array(buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + off + 4 * d))));
  }
  return out;
}
let rs = SEED >>> 0 || 1;
const rnd = () => { rs ^= rs << 13; rs >>>= 0; rs ^= rs >>> 17; rs ^= rs << 5; rs >>>= 0; return rs / 4294967296; };
const gauss = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
const SIFT = path.join(ROOT, '../shared/data/sift100k');
let base = null, queries;
if (DIM === 128 && fs.existsSync(path.join(SIFT, 'base.fvecs'))) {
  base = readFvecs(path.join(SIFT, 'base.fvecs'), 100000);
  queries = readFvecs(path.join(SIFT, 'query.fvecs'), QUERIES);
} else {
  queries = Array.from({ length: QUERIES }, () => Array.from({ length: DIM }, gauss));
}
let next = 0;
const vector = () => (base ? base[next++ % base.length] : Array.from({ length: DIM }, gauss));

// ---- the server ------------------------------------------------------------------------------

const freePort = () => new Promise((r) => { const s = net.createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => r(p)); }); });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vx-churn-'));
let url, pids, stop;
if (CLUSTER) {
  const basePort = 25000 + (process.pid % 100) * 50;
  const out = execFileSync('bash', [path.join(ROOT, 'scripts/cluster.sh'), 'up', '--dir', dir, '--base-port', String(basePort), '--bin', BIN],
    { encoding: 'utf8', env: { ...process.env, GW_FLAGS: '--max-body-bytes 67108864' } });
  url = out.trim().split('\n').pop();
  pids = () => ['pd1', 'pd2', 'pd3', 'w1', 'w2', 'w3', 'gw'].map((n) => Number(fs.readFileSync(path.join(dir, `${n}.pid`), 'utf8')));
  stop = () => execFileSync('bash', [path.join(ROOT, 'scripts/cluster.sh'), 'down', '--dir', dir], { stdio: 'ignore' });
} else {
  const port = await freePort();
  const proc = spawn(BIN, ['serve', '--data-dir', path.join(dir, 'data'), '--http-port', String(port), '--max-body-bytes', '67108864'],
    { stdio: ['ignore', 'ignore', 'inherit'] });
  url = `http://127.0.0.1:${port}`;
  pids = () => [proc.pid];
  stop = () => { proc.kill('SIGTERM'); };
  for (;;) {
    try { if ((await fetch(`${url}/readyz`)).status === 200) break; } catch { /* not yet */ }
    await sleep(50);
  }
}
const TICK = 100; // clock ticks a second (Linux: USER_HZ)
const cpuS = () => pids().reduce((s, p) => { const f = fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' '); return s + (Number(f[11]) + Number(f[12])) / TICK; }, 0);
const statusKiB = (field) => pids().reduce((s, p) => s + Number(new RegExp(`${field}:\\s+(\\d+)`).exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'))[1]) / 1024, 0);
const rssMiB = () => statusKiB('VmRSS');

async function call(method, p, body) {
  const r = await fetch(`${url}${p}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const t = await r.text();
  if (r.status !== 200) throw new Error(`${method} ${p}: ${r.status} ${t.slice(0, 300)}`);
  return JSON.parse(t);
}
async function metricSum(name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  let s = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`) && line.includes('collection="churn"')) s += Number(line.slice(line.lastIndexOf(' ') + 1));
  return s;
}

// ---- the rounds ------------------------------------------------------------------------------

const C = 'churn';
await call('PUT', `/collections/${C}`, { vectors: { size: DIM, distance: 'Euclid' }, shard_number: CLUSTER ? 3 : 1, replication_factor: CLUSTER ? 3 : 1 });
const live = new Map();
const ids = Array.from({ length: N }, (_, i) => i + 1);
async function upsertAll(which) {
  for (let i = 0; i < which.length; i += 500) {
    const points = which.slice(i, i + 500).map((id) => ({ id, vector: vector() }));
    await call('PUT', `/collections/${C}/points?wait=true`, { points });
    for (const p of points) live.set(p.id, p.vector);
  }
}
async function settled() { // indexed, compacted, green
  for (;;) {
    const info = (await call('GET', `/collections/${C}`)).result;
    if (info.status === 'green' && (await metricSum('vectron_shard_deleted_nodes')) === 0 && (await metricSum('vectron_shard_compacting')) === 0) return;
    await sleep(100);
  }
}
function exactTop10(q) {
  const best = [];
  for (const [id, v] of live) {
    let d = 0;
    for (let j = 0; j < DIM; j++) { const t = v[j] - q[j]; d += t * t; }
    if (best.length < 10) { best.push([d, id]); best.sort((a, b) => a[0] - b[0]); } else if (d < best[9][0]) { best[9] = [d, id]; best.sort((a, b) => a[0] - b[0]); }
  }
  return best.map((b) => b[1]);
}
async function recall() {
  let hit = 0;
  for (const q of queries) {
    const want = new Set(exactTop10(q));
    const got = (await call('POST', `/collections/${C}/points/search`, { vector: q, limit: 10 })).result;
    hit += got.filter((h) => want.has(h.id)).length;
  }
  return hit / (10 * queries.length);
}

const rounds = [];
try {
  for (let r = 0; r <= ROUNDS; r++) {
    const c0 = cpuS(), t0 = Date.now();
    let deleted = 0;
    if (r > 0 && r % 2 === 0) { // every other round deletes half first
      const half = ids.filter((id) => id % 2 === 0);
      for (let i = 0; i < half.length; i += 1000) await call('POST', `/collections/${C}/points/delete?wait=true`, { points: half.slice(i, i + 1000) });
      for (const id of half) live.delete(id);
      deleted = half.length;
    }
    await upsertAll(ids);
    await settled();
    const cpu = cpuS() - c0, secs = (Date.now() - t0) / 1000;
    const row = { round: r, kind: r === 0 ? 'load' : deleted ? 'delete half, overwrite all' : 'overwrite all', points: live.size, server_cpu_s: +cpu.toFixed(2), wall_s: +secs.toFixed(2), rss_mib: +rssMiB().toFixed(1), rss_anon_mib: +statusKiB('RssAnon').toFixed(1), rss_file_mib: +statusKiB('RssFile').toFixed(1), recall_at_10: +(await recall()).toFixed(4), compactions: await metricSum('vectron_shard_compactions_total') };
    rounds.push(row);
    console.log(JSON.stringify({ bench: 'churn', dim: DIM, n: N, target: CLUSTER ? 'gateway (3 workers)' : 'serve', ...row }));
  }
  const first = rounds[1];
  const later = rounds.slice(1);
  console.log(JSON.stringify({
    bench: 'churn', summary: true, dim: DIM, n: N, rounds: ROUNDS, target: CLUSTER ? 'gateway (3 workers)' : 'serve', data: base ? 'SIFT' : 'gaussian',
    cpu_max_over_round1: +(Math.max(...later.map((x) => x.server_cpu_s)) / first.server_cpu_s).toFixed(2),
    rss_max_over_round1: +(Math.max(...later.map((x) => x.rss_mib)) / first.rss_mib).toFixed(3),
    rss_last_over_round1: +(rounds[rounds.length - 1].rss_mib / first.rss_mib).toFixed(3),
    recall_min: Math.min(...rounds.map((x) => x.recall_at_10)), recall_max: Math.max(...rounds.map((x) => x.recall_at_10)),
    points_lost: N - Number((await call('POST', `/collections/${C}/points/count`, { exact: true })).result.count),
  }));
} finally {
  stop();
  await sleep(500);
  fs.rmSync(dir, { recursive: true, force: true });
}
