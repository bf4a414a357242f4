// The seed's own API (seed doc §3.1, §3.2), served beside the Qdrant routes
// by the same implementation:
//   POST /v1/collections/{name}/points          {points:[{id, vector, payload}]} -> {"upserted": n}
//   POST /v1/collections/{name}/points/search   {vector, top_k, query?}        -> {"results":[{id, score, payload}]}
// Ids may be strings here.  Collections are created through the Qdrant API.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { http, newClient, CollectionTracker, makeRng } from '../lib/common.mjs';
import { bruteForce, assertRanking } from '../lib/reference.mjs';

const client = newClient();
const cols = new CollectionTracker(client);
const DIM = 5;

function v1Results(res, what) {
  assert.equal(res.status, 200, `${what}: HTTP ${res.status} ${res.text}`);
  assert.ok(res.json && Array.isArray(res.json.results), `${what}: body must be {"results":[...]}: ${res.text}`);
  for (const r of res.json.results) {
    assert.ok(typeof r.id === 'string' || typeof r.id === 'number', `${what}: id ${JSON.stringify(r.id)}`);
    assert.equal(typeof r.score, 'number', `${what}: score`);
    assert.ok(r.payload && typeof r.payload === 'object', `${what}: payload ${JSON.stringify(r)}`);
  }
  return res.json.results;
}

function v1Upserted(res, n, what) {
  assert.equal(res.status, 200, `${what}: HTTP ${res.status} ${res.text}`);
  assert.deepEqual(res.json, { upserted: n }, `${what}: body must be {"upserted": ${n}}: ${res.text}`);
}

describe('seed /v1 API', { timeout: 120000 }, () => {
  const rng = makeRng('v1');
  let c;
  const pts = [];

  before(async () => {
    c = await cols.create('v1', { vectors: { size: DIM, distance: 'Cosine' } });
    for (let i = 0; i < 40; i++) {
      const id = i % 2 === 0 ? `vec_${String(i).padStart(3, '0')}` : i;
      pts.push({ id, vector: rng.vec(DIM), payload: { key: `value${i}`, i } });
    }
  });
  after(() => cols.dropAll());

  it('POST /v1/collections/{c}/points upserts string and integer ids: {"upserted": n}', async () => {
    v1Upserted(await http('POST', `/v1/collections/${c}/points`, { points: pts.slice(0, 25) }), 25, 'upsert 25');
    v1Upserted(await http('POST', `/v1/collections/${c}/points`, { points: pts.slice(25) }), 15, 'upsert 15');
    assert.equal((await client.count(c)).count, 40, 'the Qdrant API sees the same points');
  });

  it('POST /v1/collections/{c}/points/search with top_k: ids, order and cosine scores', async () => {
    for (let qi = 0; qi < 5; qi++) {
      const q = rng.vec(DIM);
      const results = v1Results(await http('POST', `/v1/collections/${c}/points/search`, { vector: q, top_k: 6 }), `search q${qi}`);
      assertRanking(results, bruteForce(pts, q, 'Cosine'), { limit: 6, what: `/v1 search q${qi}` });
      for (const r of results) {
        const src = pts.find((p) => String(p.id) === String(r.id));
        assert.equal(typeof r.id, typeof src.id, `id ${r.id} keeps its type (string vs integer)`);
        assert.deepEqual(r.payload, src.payload);
      }
    }
  });

  it('a stored vector finds its own string id first', async () => {
    const p = pts[4];
    const [top] = v1Results(await http('POST', `/v1/collections/${c}/points/search`, { vector: p.vector, top_k: 1 }), 'self');
    assert.equal(top.id, p.id);
    assert.ok(Math.abs(top.score - 1) < 1e-4, `self cosine ${top.score}`);
  });

  it('the optional text query is accepted; the candidates stay the same', async () => {
    const q = rng.vec(DIM);
    const plain = v1Results(await http('POST', `/v1/collections/${c}/points/search`, { vector: q, top_k: 5 }), 'plain');
    const withText = v1Results(await http('POST', `/v1/collections/${c}/points/search`, { vector: q, top_k: 5, query: 'optional text for reranking' }), 'with query');
    assert.deepEqual(withText.map((r) => String(r.id)).sort(), plain.map((r) => String(r.id)).sort());
  });

  it('one implementation behind both APIs', async () => {
    // Written through Qdrant, found through /v1.
    const v = rng.vec(DIM);
    await client.upsert(c, { wait: true, points: [{ id: 5000, vector: v, payload: { via: 'qdrant' } }] });
    const [top] = v1Results(await http('POST', `/v1/collections/${c}/points/search`, { vector: v, top_k: 1 }), 'qdrant->v1');
    assert.equal(top.id, 5000);
    assert.deepEqual(top.payload, { via: 'qdrant' });
    // Written through /v1 with an integer id, read through Qdrant.
    const w = rng.vec(DIM);
    v1Upserted(await http('POST', `/v1/collections/${c}/points`, { points: [{ id: 6000, vector: w, payload: { via: 'v1' } }] }), 1, 'v1 int id');
    const got = await client.retrieve(c, { ids: [6000], with_vector: true });
    assert.equal(got.length, 1);
    assert.deepEqual(got[0].payload, { via: 'v1' });
    const [hit] = await client.search(c, { vector: w, limit: 1, params: { exact: true } });
    assert.equal(hit.id, 6000);
    assert.equal((await client.count(c)).count, 42);
  });

  it('re-upserting a string id replaces the point', async () => {
    const p = pts[0];
    const nv = rng.vec(DIM);
    v1Upserted(await http('POST', `/v1/collections/${c}/points`, { points: [{ id: p.id, vector: nv, payload: { key: 'new' } }] }), 1, 're-upsert');
    assert.equal((await client.count(c)).count, 42);
    const [top] = v1Results(await http('POST', `/v1/collections/${c}/points/search`, { vector: nv, top_k: 1 }), 'replaced');
    assert.equal(top.id, p.id);
    assert.deepEqual(top.payload, { key: 'new' });
  });

  it('the string "42" and the integer 42 are different ids (src/base/pointid.h)', async () => {
    const c2 = await cols.create('v1_ids', { vectors: { size: DIM, distance: 'Cosine' } });
    const a = rng.vec(DIM);
    const b = rng.vec(DIM);
    v1Upserted(await http('POST', `/v1/collections/${c2}/points`, { points: [{ id: '42', vector: a, payload: { t: 's' } }, { id: 42, vector: b, payload: { t: 'n' } }] }), 2, 'both 42s');
    assert.equal((await client.count(c2)).count, 2);
    const [ra] = v1Results(await http('POST', `/v1/collections/${c2}/points/search`, { vector: a, top_k: 1 }), '"42"');
    assert.equal(ra.id, '42');
    assert.deepEqual(ra.payload, { t: 's' });
    const [rb] = v1Results(await http('POST', `/v1/collections/${c2}/points/search`, { vector: b, top_k: 1 }), '42');
    assert.equal(rb.id, 42);
    assert.deepEqual(rb.payload, { t: 'n' });
  });

  it('errors: missing collection 404, wrong dimension 400, top_k above 10,000 400, bad ids 400', async () => {
    const missing = cols.name('v1_missing');
    assert.equal((await http('POST', `/v1/collections/${missing}/points`, { points: [{ id: 'a', vector: [1, 2, 3, 4, 5] }] })).status, 404);
    assert.equal((await http('POST', `/v1/collections/${missing}/points/search`, { vector: [1, 2, 3, 4, 5], top_k: 1 })).status, 404);
    assert.equal((await http('POST', `/v1/collections/${c}/points`, { points: [{ id: 'short', vector: [1, 2] }] })).status, 400);
    assert.equal((await http('POST', `/v1/collections/${c}/points/search`, { vector: [1, 2], top_k: 1 })).status, 400);
    assert.equal((await http('POST', `/v1/collections/${c}/points/search`, { vector: [1, 2, 3, 4, 5], top_k: 10001 })).status, 400);
    assert.equal((await http('POST', `/v1/collections/${c}/points`, { points: [{ id: '', vector: [1, 2, 3, 4, 5] }] })).status, 400, 'empty string id');
    assert.equal((await http('POST', `/v1/collections/${c}/points`, { points: [{ id: 'x'.repeat(256), vector: [1, 2, 3, 4, 5] }] })).status, 400, '256-byte string id');
    assert.equal((await http('POST', `/v1/collections/${c}/points`, { points: [{ id: -3, vector: [1, 2, 3, 4, 5] }] })).status, 400, 'negative id');
    assert.equal((await http('POST', `/v1/collections/${c}/points`, '{"points":[')).status, 400, 'bad JSON');
    assert.equal((await client.count(c)).count, 42, 'rejected writes change nothing');
  });
});
