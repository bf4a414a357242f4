// gateway_cache.mjs - the gateway's result cache and request coalescing,
// measured: queries/s and latency percentiles of
//   1. distinct searches (every one a miss: the cost of the cluster path),
//   2. a hot set of 10 searches asked over and over (mostly cache hits),
//   3. one search asked by every connection at once, with the cache's TTL
//      keeping it cold between bursts (coalescing: one backend query per
//      burst),
// against a running gateway with a collection loaded (e.g. by
// `vectron-bench http --url`), and the cache counters from /metrics.
//
//   node bench/gateway_cache.mjs URL COLLECTION DIM [SECONDS] [CONNS]
//
// One JSON line per measurement on stdout.
const [url, coll, dimArg, secsArg, connsArg] = process.argv.slice(2);
if (!url || !coll || !dimArg) {
  console.error('usage: node bench/gateway_cache.mjs URL COLLECTION DIM [SECONDS=5] [CONNS=8]');
  process.exit(2);
}
const DIM = Number(dimArg), SECS = Number(secsArg ?? 5), CONNS = Number(connsArg ?? 8);

let seed = 12345;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
const vec = () => Array.from({ length: DIM }, () => rnd() * 100);

async function metrics() {
  const text = await (await fetch(`${url}/metrics`)).text();
  const get = (n) => Number((text.match(new RegExp(`^${n} (\\d+)$`, 'm')) ?? [0, NaN])[1]);
  return { hits: get('vectron_cache_hits_total'), misses: get('vectron_cache_misses_total'), coalesced: get('vectron_cache_coalesced_total') };
}

async function search(body) {
  const t0 = performance.now();
  const r = await fetch(`${url}/collections/${coll}/points/search`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body,
  });
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
  await r.arrayBuffer();
  return performance.now() - t0;
}

function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
}

async function run(name, nextBody, opts = {}) {
  const m0 = await metrics();
  const lat = [];
  const end = performance.now() + SECS * 1000;
  const loops = Array.from({ length: CONNS }, async (_, i) => {
    while (performance.now() < end) {
      if (opts.burst && !(await opts.burst(i, end))) break;
      lat.push(await search(nextBody(i)));
    }
  });
  await Promise.all(loops);
  const m1 = await metrics();
  const hits = m1.hits - m0.hits, misses = m1.misses - m0.misses, coalesced = m1.coalesced - m0.coalesced;
  console.log(JSON.stringify({
    bench: 'gateway_cache', run: name, conns: CONNS, queries: lat.length, qps: Math.round(lat.length / SECS),
    p50_ms: +pct(lat, 50).toFixed(3), p99_ms: +pct(lat, 99).toFixed(3),
    cache_hits: hits, cache_misses: misses, coalesced, hit_ratio: +(hits / Math.max(1, hits + misses)).toFixed(3),
  }));
}

const hot = Array.from({ length: 10 }, () => JSON.stringify({ vector: vec(), limit: 10 }));
await run('distinct', () => JSON.stringify({ vector: vec(), limit: 10 }));
await run('hot10', () => hot[Math.floor(rnd() * hot.length)]);
// bursts: every connection asks the same fresh query at once, 300 ms apart (past the TTL)
let round = 0, burstBody = '', arrived = 0, release;
let gate = new Promise((r) => (release = r));
await run('burst', () => burstBody, {
  burst: async (i, end) => {
    if (performance.now() >= end) { // the end: nobody waits for the others any more
      release();
      return false;
    }
    if (++arrived === CONNS) {
      arrived = 0;
      burstBody = JSON.stringify({ vector: vec(), limit: 10 });
      round++;
      await new Promise((r) => setTimeout(r, 300));
      const g = release;
      gate = new Promise((r) => (release = r));
      g();
    } else {
      await gate;
    }
    return performance.now() < end;
  },
});
