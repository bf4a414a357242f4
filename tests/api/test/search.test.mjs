// Search (/points/search) and query (/points/query) against brute force
// computed here: ids, order and scores for Cosine, Euclid and Dot; limit,
// offset, score_threshold, with_payload and with_vector selectors,
// params.exact and params.hnsw_ef (recall), scalar int8 quantization.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  http, okResult, newClient, CollectionTracker, makeRng, pollUntil,
} from '../lib/common.mjs';
import {
  bruteForce, assertRanking, assertClose, recall, normalize, METRICS, thresholdSplit,
} from '../lib/reference.mjs';

const client = newClient();
const cols = new CollectionTracker(client);
const DIM = 8;

function makePoints(rng, n) {
  const pts = [];
  for (let i = 0; i < n; i++) {
    const id = i % 20 === 7 ? rng.uuid() : i + 1;
    pts.push({ id, vector: rng.vec(DIM), payload: { i, grp: i % 4, name: `p${i}`, meta: { k: i % 3 } } });
  }
  return pts;
}

function assertScoredShape(p, what) {
  assert.ok(typeof p.id === 'number' || typeof p.id === 'string', `${what}: id`);
  assert.equal(typeof p.score, 'number', `${what}: score`);
  assert.ok(Number.isInteger(p.version) && p.version >= 0, `${what}: version must be a u64: ${JSON.stringify(p)}`);
}

function monotone(list, distance, what) {
  for (let i = 1; i < list.length; i++) {
    const ok = METRICS[distance].higherIsBetter ? list[i - 1].score >= list[i].score : list[i - 1].score <= list[i].score;
    assert.ok(ok, `${what}: results not sorted best first at ${i}: ${list[i - 1].score}, ${list[i].score}`);
  }
}

for (const distance of ['Cosine', 'Euclid', 'Dot']) {
  describe(`search and query: ${distance}`, { timeout: 180000 }, () => {
    const rng = makeRng(`search_${distance}`);
    const pts = makePoints(rng, 200);
    const queries = Array.from({ length: 8 }, () => rng.vec(DIM));
    const byId = new Map(pts.map((p) => [String(p.id), p]));
    let c;

    before(async () => {
      c = await cols.create(`s_${distance.toLowerCase()}`, { vectors: { size: DIM, distance } });
      for (let i = 0; i < pts.length; i += 50) {
        await client.upsert(c, { wait: true, points: pts.slice(i, i + 50) });
      }
      assert.equal((await client.count(c)).count, pts.length);
    });
    after(() => cols.dropAll());

    it('exact top-10: ids, order and scores equal brute force', async () => {
      for (const [qi, q] of queries.entries()) {
        const res = await client.search(c, { vector: q, limit: 10, params: { exact: true } });
        assertRanking(res, bruteForce(pts, q, distance), { limit: 10, what: `${distance} q${qi}` });
        for (const r of res) assert.deepEqual(r.payload, byId.get(String(r.id)).payload, 'client search returns payload');
      }
    });

    it('self score: 1 (Cosine), 0 (Euclid), |v|^2 (Dot); Cosine and Euclid find the vector itself first', async () => {
      for (const p of pts.slice(0, 5)) {
        const want = METRICS[distance].score(p.vector, p.vector);
        const [self] = await client.search(c, { vector: p.vector, limit: 1, filter: { must: [{ has_id: [p.id] }] }, params: { exact: true } });
        assert.equal(String(self.id), String(p.id));
        assertClose(self.score, want, 1e-4, 'self score');
        if (distance !== 'Dot') {
          const [top] = await client.search(c, { vector: p.vector, limit: 1, params: { exact: true } });
          assert.equal(String(top.id), String(p.id));
          assertClose(top.score, want, 1e-4, 'self score');
        }
      }
    });

    it('offset and limit page through the exact ranking', async () => {
      const q = queries[0];
      const ranked = bruteForce(pts, q, distance);
      const res = await client.search(c, { vector: q, limit: 5, offset: 7, params: { exact: true } });
      assertRanking(res, ranked, { offset: 7, limit: 5, what: 'offset 7 limit 5' });
      const tail = await client.search(c, { vector: q, limit: 50, offset: pts.length - 3, params: { exact: true } });
      assertRanking(tail, ranked, { offset: pts.length - 3, limit: 50, what: 'offset near the end' });
      const all = await client.search(c, { vector: q, limit: 1000, params: { exact: true }, with_payload: false });
      assertRanking(all, ranked, { limit: 1000, what: 'limit above the collection size' });
    });

    it('score_threshold keeps exactly the points on the good side of it', async () => {
      for (const q of queries.slice(0, 3)) {
        const ranked = bruteForce(pts, q, distance);
        const { thr, count } = thresholdSplit(ranked, 10, 20);
        const res = await client.search(c, { vector: q, limit: 100, score_threshold: thr, params: { exact: true } });
        assertRanking(res, ranked, { limit: count, what: `score_threshold ${thr}` });
        for (const r of res) {
          assert.ok(METRICS[distance].higherIsBetter ? r.score >= thr : r.score <= thr, `score ${r.score} beyond threshold ${thr}`);
        }
      }
    });

    it('filter restricts the candidates (exact ranking among matches)', async () => {
      const filter = { must: [{ key: 'grp', match: { value: 2 } }], must_not: [{ key: 'meta.k', match: { value: 0 } }] };
      for (const q of queries.slice(0, 3)) {
        const ranked = bruteForce(pts, q, distance, { filter });
        const res = await client.search(c, { vector: q, limit: 10, filter, params: { exact: true } });
        assertRanking(res, ranked, { limit: 10, what: 'filtered search' });
        const approx = await client.search(c, { vector: q, limit: 10, filter, params: { hnsw_ef: 200 } });
        for (const r of approx) assert.ok(ranked.some((x) => String(x.id) === String(r.id)), `approximate filtered search returned non-matching id ${r.id}`);
        assert.ok(recall(approx.map((r) => r.id), ranked, 10) >= 0.8, 'filtered approximate recall');
      }
    });

    it('raw search: envelope, ScoredPoint shape, defaults omit payload and vector', async () => {
      const q = queries[1];
      const res = okResult(await http('POST', `/collections/${c}/points/search`, { vector: q, limit: 4, params: { exact: true } }), 'search raw');
      assert.ok(Array.isArray(res));
      assertRanking(res, bruteForce(pts, q, distance), { limit: 4, what: 'raw search' });
      for (const p of res) {
        assertScoredShape(p, 'raw search');
        assert.ok(!('payload' in p), `with_payload defaults to false and the key is omitted: ${JSON.stringify(p)}`);
        assert.ok(!('vector' in p), `with_vector defaults to false and the key is omitted: ${JSON.stringify(p)}`);
      }
    });

    it('with_payload: true, false, [keys], {include}, {exclude}', async () => {
      const q = queries[2];
      const run = async (with_payload) => okResult(await http('POST', `/collections/${c}/points/search`,
        { vector: q, limit: 3, with_payload, params: { exact: true } }), `with_payload ${JSON.stringify(with_payload)}`);
      const pick = (o, keys) => Object.fromEntries(Object.entries(o).filter(([k]) => keys.includes(k)));
      for (const p of await run(true)) assert.deepEqual(p.payload, byId.get(String(p.id)).payload);
      for (const p of await run(false)) assert.ok(!('payload' in p));
      for (const p of await run(['grp', 'name'])) assert.deepEqual(p.payload, pick(byId.get(String(p.id)).payload, ['grp', 'name']));
      for (const p of await run({ include: ['i', 'meta'] })) assert.deepEqual(p.payload, pick(byId.get(String(p.id)).payload, ['i', 'meta']));
      for (const p of await run({ exclude: ['grp', 'meta'] })) assert.deepEqual(p.payload, pick(byId.get(String(p.id)).payload, ['i', 'name']));
      // The client's array form.
      const viaClient = await client.search(c, { vector: q, limit: 3, with_payload: ['name'], params: { exact: true } });
      for (const p of viaClient) assert.deepEqual(p.payload, { name: byId.get(String(p.id)).payload.name });
    });

    it('with_vector returns the stored vector (normalised for Cosine)', async () => {
      const q = queries[3];
      const res = await client.search(c, { vector: q, limit: 3, with_vector: true, with_payload: false, params: { exact: true } });
      assert.equal(res.length, 3);
      for (const r of res) {
        const stored = byId.get(String(r.id)).vector;
        const want = distance === 'Cosine' ? normalize(stored) : stored;
        assert.ok(Array.isArray(r.vector) && r.vector.length === DIM, `vector: ${JSON.stringify(r.vector)}`);
        for (let i = 0; i < DIM; i++) assert.ok(Math.abs(r.vector[i] - want[i]) < 1e-5, `component ${i}: ${r.vector[i]} vs ${want[i]}`);
        assert.ok(!('payload' in r) || r.payload === null || r.payload === undefined);
      }
      const off = await client.search(c, { vector: q, limit: 3, with_vector: false });
      for (const r of off) assert.ok(r.vector === undefined || r.vector === null, 'with_vector:false');
    });

    it('params.hnsw_ef (approximate): recall and true scores', async () => {
      let total = 0;
      for (const q of queries) {
        const ranked = bruteForce(pts, q, distance);
        const res = await client.search(c, { vector: q, limit: 10, params: { hnsw_ef: 128 }, with_payload: false });
        assert.equal(res.length, 10);
        monotone(res, distance, 'hnsw_ef 128');
        const trueScore = new Map(ranked.map((r) => [String(r.id), r.score]));
        for (const r of res) assertClose(r.score, trueScore.get(String(r.id)), 1e-4, `score of ${r.id}`);
        total += recall(res.map((r) => r.id), ranked, 10);
      }
      assert.ok(total / queries.length >= 0.9, `mean recall@10 ${total / queries.length} < 0.9`);
      // A tiny ef is accepted and still answers limit results.
      const small = await client.search(c, { vector: queries[0], limit: 10, params: { hnsw_ef: 10 } });
      assert.equal(small.length, 10);
      monotone(small, distance, 'hnsw_ef 10');
    });

    it('query with a raw vector and with {nearest}', async () => {
      for (const q of queries.slice(0, 3)) {
        const ranked = bruteForce(pts, q, distance);
        const a = await client.query(c, { query: q, limit: 6, params: { exact: true }, with_payload: true });
        assert.ok(Array.isArray(a.points), 'query result is {points:[...]}');
        assertRanking(a.points, ranked, { limit: 6, what: 'query raw vector' });
        for (const p of a.points) assert.deepEqual(p.payload, byId.get(String(p.id)).payload);
        const b = await client.query(c, { query: { nearest: q }, limit: 6, params: { exact: true } });
        assertRanking(b.points, ranked, { limit: 6, what: 'query {nearest}' });
        for (const p of b.points) assert.ok(p.payload === undefined || p.payload === null, 'query with_payload defaults to false');
      }
    });

    it('query: offset, score_threshold, filter, with_payload list, default limit 10', async () => {
      const q = queries[4];
      const filter = { should: [{ key: 'grp', match: { any: [0, 3] } }] };
      const ranked = bruteForce(pts, q, distance, { filter });
      const res = okResult(await http('POST', `/collections/${c}/points/query`, {
        query: q, filter, limit: 5, offset: 3, with_payload: ['name'], params: { exact: true },
      }), 'query raw');
      assert.ok(Array.isArray(res.points));
      assertRanking(res.points, ranked, { offset: 3, limit: 5, what: 'query filter offset' });
      for (const p of res.points) {
        assertScoredShape(p, 'query raw');
        assert.deepEqual(p.payload, { name: byId.get(String(p.id)).payload.name });
      }
      const { thr, count } = thresholdSplit(ranked, 3, 8);
      const t = await client.query(c, { query: q, filter, score_threshold: thr, limit: 50, params: { exact: true } });
      assertRanking(t.points, ranked, { limit: count, what: 'query score_threshold' });
      const d = okResult(await http('POST', `/collections/${c}/points/query`, { query: q, params: { exact: true } }), 'query default limit');
      assertRanking(d.points, bruteForce(pts, q, distance), { limit: 10, what: 'query default limit 10' });
    });
  });
}

describe('search on an empty collection and on a scalar-int8 quantized collection', { timeout: 180000 }, () => {
  after(() => cols.dropAll());

  it('an empty collection answers []', async () => {
    const c = await cols.create('s_empty', { vectors: { size: 4, distance: 'Cosine' } });
    assert.deepEqual(await client.search(c, { vector: [1, 0, 0, 0], limit: 5 }), []);
    assert.deepEqual((await client.query(c, { query: [1, 0, 0, 0], limit: 5 })).points, []);
  });

  for (const distance of ['Cosine', 'Euclid']) {
    it(`scalar int8 (${distance}): exact ranking, approximate recall, true scores`, async () => {
      const rng = makeRng(`quant_${distance}`);
      const dim = 16;
      const n = 600;
      const c = await cols.create(`s_q_${distance.toLowerCase()}`, {
        vectors: { size: dim, distance },
        quantization_config: { scalar: { type: 'int8', quantile: 0.99, always_ram: true } },
      });
      const pts = Array.from({ length: n }, (_, i) => ({ id: i + 1, vector: rng.vec(dim) }));
      for (let i = 0; i < n; i += 200) await client.upsert(c, { wait: true, points: pts.slice(i, i + 200) });
      let total = 0;
      const nq = 15;
      for (let qi = 0; qi < nq; qi++) {
        const q = rng.vec(dim);
        const ranked = bruteForce(pts, q, distance);
        const exact = await client.search(c, { vector: q, limit: 10, params: { exact: true }, with_payload: false });
        assertRanking(exact, ranked, { limit: 10, what: `quantized exact q${qi}` });
        const approx = await client.search(c, { vector: q, limit: 10, params: { hnsw_ef: 128 }, with_payload: false });
        assert.equal(approx.length, 10);
        monotone(approx, distance, 'quantized approximate');
        const trueScore = new Map(ranked.map((r) => [String(r.id), r.score]));
        // Rescored with the float vectors: scores within int8 error at worst.
        for (const r of approx) assertClose(r.score, trueScore.get(String(r.id)), 2e-2, `quantized score of ${r.id}`);
        total += recall(approx.map((r) => r.id), ranked, 10);
      }
      assert.ok(total / nq >= 0.8, `quantized mean recall@10 ${total / nq} < 0.8`);
    });
  }
});

describe('approximate search on a larger collection', { timeout: 240000 }, () => {
  after(() => cols.dropAll());

  // 2000 random 24-d points (ids 0..1999) in a new Cosine collection
  const dim = 24;
  async function largeCollection(rng, name, hnsw) {
    const c = await cols.create(name, { vectors: { size: dim, distance: 'Cosine' }, hnsw_config: hnsw });
    const pts = Array.from({ length: 2000 }, (_, i) => ({ id: i, vector: rng.vec(dim) }));
    for (let i = 0; i < pts.length; i += 500) await client.upsert(c, { wait: true, points: pts.slice(i, i + 500) });
    return { c, pts };
  }

  it('Cosine, 2000 x 24-d, hnsw_ef 128: recall@10 >= 0.9', async () => {
    const rng = makeRng('large');
    const { c, pts } = await largeCollection(rng, 's_large', { m: 16, ef_construct: 100 });
    assert.equal((await client.count(c)).count, 2000);
    let total = 0;
    const nq = 25;
    for (let i = 0; i < nq; i++) {
      const q = rng.vec(dim);
      const ranked = bruteForce(pts, q, 'Cosine');
      const res = await client.search(c, { vector: q, limit: 10, params: { hnsw_ef: 128 }, with_payload: false });
      assert.equal(res.length, 10);
      monotone(res, 'Cosine', 'large');
      total += recall(res.map((r) => r.id), ranked, 10);
    }
    assert.ok(total / nq >= 0.9, `mean recall@10 ${total / nq} < 0.9`);
  });

  // Qdrant searches with ef = the collection's ef_construct when the request
  // names none; so does vectron (it was max(limit, 64)).  A small graph and
  // beam make the beams' answers differ, so the equalities below tell them
  // apart; the default follows an update of ef_construct.
  it('without params.hnsw_ef the beam is the collection\'s ef_construct, and follows its update', async () => {
    const rng = makeRng('default_ef');
    const { c } = await largeCollection(rng, 's_default_ef', { m: 4, ef_construct: 16 });
    // every point in the graph: the unindexed tail is scanned exactly, and it
    // shrinks between two searches
    await pollUntil(async () => ((await client.getCollection(c)).status === 'green' ? true : null),
      { timeoutMs: 60000, what: 'status green' });
    const queries = Array.from({ length: 25 }, () => rng.vec(dim));
    const ids = async (q, params) => (await client.search(c, { vector: q, limit: 10, params, with_payload: false })).map((r) => String(r.id));
    let differ = 0;
    for (const [qi, q] of queries.entries()) {
      const def = await ids(q, undefined);
      assert.deepEqual(def, await ids(q, { hnsw_ef: 16 }), `q${qi}: the default beam is ef_construct (16)`);
      if (JSON.stringify(def) !== JSON.stringify(await ids(q, { hnsw_ef: 64 }))) differ++;
    }
    assert.ok(differ > 0, 'hnsw_ef 16 and 64 answered alike for every query: the test cannot tell the beams apart');
    await client.updateCollection(c, { hnsw_config: { ef_construct: 64 } });
    for (const [qi, q] of queries.entries()) {
      assert.deepEqual(await ids(q, undefined), await ids(q, { hnsw_ef: 64 }), `q${qi}: after the update the default beam is 64`);
    }
  });
});

describe('hit versions follow the writes', { timeout: 60000 }, () => {
  after(() => cols.dropAll());

  // A hit's version is the operation that last wrote the point: the same for
  // a batch, newer after an overwrite or a payload change, untouched for the
  // others; a deleted point is no hit at all.
  it('upsert, set_payload, overwrite and delete move the versions search answers', async () => {
    const rng = makeRng('versions');
    const c = await cols.create('s_versions', { vectors: { size: DIM, distance: 'Euclid' } });
    const pts = Array.from({ length: 50 }, (_, i) => ({ id: i + 1, vector: rng.vec(DIM), payload: { i } }));
    await client.upsert(c, { wait: true, points: pts });
    const hitOf = async (p, exact) => {
      const res = await client.search(c, { vector: p.vector, limit: 50, params: { exact } });
      return res.find((r) => String(r.id) === String(p.id));
    };
    for (const exact of [false, true]) {
      const a = await hitOf(pts[4], exact), b = await hitOf(pts[5], exact);
      assert.ok(a && b, 'both points are hits');
      assert.equal(a.version, b.version, 'one batch, one version');
    }
    const v0 = (await hitOf(pts[5], true)).version;
    await client.setPayload(c, { wait: true, points: [pts[4].id], payload: { touched: true } });
    const v1 = (await hitOf(pts[4], true)).version;
    assert.ok(v1 > v0, `set_payload: version ${v1} after ${v0}`);
    assert.equal((await hitOf(pts[5], false)).version, v0, 'an untouched point keeps its version');
    pts[4].vector = rng.vec(DIM);
    await client.upsert(c, { wait: true, points: [pts[4]] });
    const v2 = (await hitOf(pts[4], false)).version;
    assert.ok(v2 > v1, `overwrite: version ${v2} after ${v1}`);
    assert.equal((await hitOf(pts[4], true)).version, v2, 'graph and exact search agree');
    await client.delete(c, { wait: true, points: [pts[5].id] });
    for (const exact of [false, true]) assert.equal(await hitOf(pts[5], exact), undefined, 'a deleted point is no hit');
  });
});
