// Points: upsert (points and batch forms, wait), integer and UUID ids,
// retrieve, GET one, delete by ids and by filter, scroll, count.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  http, okResult, assertErrorBody, expectClientError, newClient, CollectionTracker, makeRng,
  sortIds, assertSameIdSet, pollUntil,
} from '../lib/common.mjs';
import { normalize, matchesFilter } from '../lib/reference.mjs';

const client = newClient();
const cols = new CollectionTracker(client);
const DIM = 4;

function assertVectorF32(actual, expected, what) {
  assert.ok(Array.isArray(actual), `${what}: vector missing or not an array: ${JSON.stringify(actual)}`);
  assert.equal(actual.length, expected.length, `${what}: vector length`);
  for (let i = 0; i < expected.length; i++) {
    assert.equal(Math.fround(actual[i]), Math.fround(expected[i]), `${what}: component ${i}: ${actual[i]} vs ${expected[i]}`);
  }
}

function assertUpdateResult(r, what, { waited = true } = {}) {
  assert.ok(r && typeof r === 'object', `${what}: UpdateResult ${JSON.stringify(r)}`);
  if (waited) assert.equal(r.status, 'completed', `${what}: status with wait=true`);
  else assert.ok(['acknowledged', 'completed'].includes(r.status), `${what}: status ${r.status}`);
  if ('operation_id' in r && r.operation_id !== null) {
    assert.ok(Number.isInteger(r.operation_id) && r.operation_id >= 0, `${what}: operation_id ${r.operation_id}`);
  }
}

describe('points', { timeout: 120000 }, () => {
  const rng = makeRng('points');
  let euclid; // vectors come back exactly as stored
  let cosine; // vectors come back normalised
  const uuids = [rng.uuid(), rng.uuid(), rng.uuid()];
  const base = [
    { id: 1, vector: rng.vec(DIM), payload: { a: 1, s: 'one', tags: ['x', 'y'], nested: { k: 1 } } },
    { id: 2, vector: rng.vec(DIM), payload: { a: 2, s: 'two' } },
    { id: 40, vector: rng.vec(DIM), payload: { a: 40, f: 1.5, b: true, nul: null } },
    { id: uuids[0], vector: rng.vec(DIM), payload: { a: 100, s: 'u0' } },
    { id: uuids[1], vector: rng.vec(DIM) }, // no payload
  ];

  before(async () => {
    euclid = await cols.create('pts_l2', { vectors: { size: DIM, distance: 'Euclid' } });
    cosine = await cols.create('pts_cos', { vectors: { size: DIM, distance: 'Cosine' } });
  });
  after(() => cols.dropAll());

  it('upsert (points form, wait=true) with integer and UUID ids', async () => {
    const r = await client.upsert(euclid, { wait: true, points: base });
    assertUpdateResult(r, 'upsert');
    assert.equal((await client.count(euclid, { exact: true })).count, base.length);
    assert.equal((await client.getCollection(euclid)).points_count, base.length);
  });

  it('raw upsert answers the envelope with an UpdateResult', async () => {
    const res = await http('PUT', `/collections/${cosine}/points?wait=true`, { points: base });
    assertUpdateResult(okResult(res, 'PUT points'), 'raw upsert');
    assert.equal((await client.count(cosine)).count, base.length);
  });

  it('retrieve by ids with payload and vector', async () => {
    const got = await client.retrieve(euclid, { ids: base.map((p) => p.id), with_payload: true, with_vector: true });
    assert.equal(got.length, base.length);
    assertSameIdSet(got, base, 'retrieve');
    for (const p of base) {
      const r = got.find((x) => String(x.id) === String(p.id));
      assert.deepEqual(r.payload, p.payload ?? {}, `payload of ${p.id}`);
      assertVectorF32(r.vector, p.vector, `vector of ${p.id}`);
    }
    // Integer ids come back as JSON numbers, UUIDs as lowercase strings.
    assert.equal(typeof got.find((x) => String(x.id) === '40').id, 'number');
    assert.equal(got.find((x) => String(x.id) === uuids[0]).id, uuids[0]);
  });

  it('retrieve defaults and selectors: with_vector off omits vector, with_payload false omits payload', async () => {
    const a = await client.retrieve(euclid, { ids: [1] });
    assert.equal(a.length, 1);
    assert.deepEqual(a[0].payload, base[0].payload, 'client default with_payload=true');
    assert.ok(a[0].vector === undefined || a[0].vector === null, 'with_vector defaults to false');
    const raw = okResult(await http('POST', `/collections/${euclid}/points`, { ids: [1, 2], with_payload: false }), 'POST points');
    assert.equal(raw.length, 2);
    for (const r of raw) {
      assert.ok(!('payload' in r), `with_payload:false must omit payload (compat doc §2.5): ${JSON.stringify(r)}`);
      assert.ok(!('vector' in r), `with_vector default false must omit vector: ${JSON.stringify(r)}`);
    }
    const sel = await client.retrieve(euclid, { ids: [1], with_payload: ['a', 'nested'] });
    assert.deepEqual(sel[0].payload, { a: 1, nested: { k: 1 } });
  });

  it('retrieve skips ids that do not exist', async () => {
    const got = await client.retrieve(euclid, { ids: [1, 999999, uuids[2]] });
    assert.deepEqual(got.map((r) => r.id), [1]);
    assert.deepEqual(await client.retrieve(euclid, { ids: [424242] }), []);
  });

  it('Cosine collections return normalised vectors', async () => {
    const got = await client.retrieve(cosine, { ids: [1, uuids[0]], with_vector: true });
    assert.equal(got.length, 2);
    for (const r of got) {
      const p = base.find((x) => String(x.id) === String(r.id));
      const want = normalize(p.vector);
      for (let i = 0; i < DIM; i++) assert.ok(Math.abs(r.vector[i] - want[i]) < 1e-5, `component ${i}: ${r.vector[i]} vs ${want[i]}`);
    }
  });

  it('GET one point by integer id and by UUID', async () => {
    const one = okResult(await http('GET', `/collections/${euclid}/points/40`), 'GET point 40');
    assert.equal(one.id, 40);
    assert.deepEqual(one.payload, base[2].payload);
    assertVectorF32(one.vector, base[2].vector, 'GET point 40 vector');
    const u = okResult(await http('GET', `/collections/${euclid}/points/${uuids[0]}`), 'GET point uuid');
    assert.equal(u.id, uuids[0]);
    assert.deepEqual(u.payload, base[3].payload);
    // The path accepts an upper-case UUID and answers in lower case.
    const U = okResult(await http('GET', `/collections/${euclid}/points/${uuids[0].toUpperCase()}`), 'GET point UUID');
    assert.equal(U.id, uuids[0]);
  });

  it('GET one missing point is 404; missing collection is 404', async () => {
    assertErrorBody(await http('GET', `/collections/${euclid}/points/777777`), 404, 'missing point');
    assertErrorBody(await http('GET', `/collections/${euclid}/points/${uuids[2]}`), 404, 'missing uuid point');
    assertErrorBody(await http('GET', `/collections/${cols.name('nope')}/points/1`), 404, 'missing collection');
  });

  it('UUIDs in upper case and simple (32-hex) form name the same point, emitted lower-case hyphenated', async () => {
    const c = await cols.create('pts_uuid', { vectors: { size: DIM, distance: 'Euclid' } });
    const u = rng.uuid();
    const simple = u.replace(/-/g, '').toUpperCase();
    await client.upsert(c, { wait: true, points: [{ id: simple, vector: rng.vec(DIM), payload: { v: 1 } }] });
    const got = await client.retrieve(c, { ids: [u] });
    assert.equal(got.length, 1);
    assert.equal(got[0].id, u);
    // Upserting with the hyphenated upper-case form overwrites, not duplicates.
    await client.upsert(c, { wait: true, points: [{ id: u.toUpperCase(), vector: rng.vec(DIM), payload: { v: 2 } }] });
    assert.equal((await client.count(c)).count, 1);
    assert.deepEqual((await client.retrieve(c, { ids: [u] }))[0].payload, { v: 2 });
  });

  it('upsert (batch form) with ids, vectors, payloads', async () => {
    const c = await cols.create('pts_batch', { vectors: { size: DIM, distance: 'Euclid' } });
    const ids = [10, 11, uuids[2], 12];
    const vectors = ids.map(() => rng.vec(DIM));
    const payloads = ids.map((id, i) => ({ i, tag: `t${i}` }));
    const r = await client.upsert(c, { wait: true, batch: { ids, vectors, payloads } });
    assertUpdateResult(r, 'batch upsert');
    assert.equal((await client.count(c)).count, 4);
    const got = await client.retrieve(c, { ids, with_vector: true });
    assert.equal(got.length, 4);
    ids.forEach((id, i) => {
      const g = got.find((x) => String(x.id) === String(id));
      assert.ok(g, `batch id ${id} missing`);
      assert.deepEqual(g.payload, payloads[i]);
      assertVectorF32(g.vector, vectors[i], `batch vector ${id}`);
    });
    // Batch without payloads.
    const r2 = okResult(await http('PUT', `/collections/${c}/points?wait=true`, { batch: { ids: [20, 21], vectors: [rng.vec(DIM), rng.vec(DIM)] } }), 'batch raw');
    assertUpdateResult(r2, 'batch raw');
    assert.equal((await client.count(c)).count, 6);
  });

  it('upsert replaces an existing point whole (vector and payload)', async () => {
    const c = await cols.create('pts_replace', { vectors: { size: DIM, distance: 'Euclid' } });
    const v1 = rng.vec(DIM);
    const v2 = rng.vec(DIM);
    await client.upsert(c, { wait: true, points: [{ id: 5, vector: v1, payload: { old: 1, keep: 'no' } }] });
    await client.upsert(c, { wait: true, points: [{ id: 5, vector: v2, payload: { fresh: 2 } }] });
    const [p] = await client.retrieve(c, { ids: [5], with_vector: true });
    assert.deepEqual(p.payload, { fresh: 2 });
    assertVectorF32(p.vector, v2, 'replaced vector');
    assert.equal((await client.count(c)).count, 1);
    // The old vector no longer answers: searching for it finds id 5 at the new distance.
    const [hit] = await client.search(c, { vector: v1, limit: 1, params: { exact: true } });
    const d = Math.sqrt(v1.reduce((s, x, i) => s + (x - v2[i]) ** 2, 0));
    assert.ok(Math.abs(hit.score - d) <= 1e-4 * Math.max(1, d), `score ${hit.score} vs ${d}`);
  });

  it('the largest u64 id travels as a bare JSON number', async () => {
    const c = await cols.create('pts_u64', { vectors: { size: 2, distance: 'Dot' } });
    const big = '18446744073709551615';
    const body = `{"points":[{"id":${big},"vector":[1,0],"payload":{"w":"max"}},{"id":9007199254740993,"vector":[0,1]}]}`;
    okResult(await http('PUT', `/collections/${c}/points?wait=true`, body), 'upsert u64');
    const g = await http('GET', `/collections/${c}/points/${big}`);
    okResult(g, 'GET u64');
    assert.match(g.text, new RegExp(`"id"\\s*:\\s*${big}\\b`), `id must be the bare number ${big}: ${g.text}`);
    const g2 = await http('POST', `/collections/${c}/points`, `{"ids":[9007199254740993],"with_payload":true}`);
    okResult(g2, 'retrieve 2^53+1');
    assert.match(g2.text, /"id"\s*:\s*9007199254740993\b/, `2^53+1 must round-trip exactly: ${g2.text}`);
    const s = await http('POST', `/collections/${c}/points/scroll`, { limit: 10 });
    okResult(s, 'scroll u64');
    const i1 = s.text.indexOf('9007199254740993');
    const i2 = s.text.indexOf(big);
    assert.ok(i1 >= 0 && i2 > i1, `scroll order by id: ${s.text}`);
    // 2^64 does not fit: 400.
    assertErrorBody(await http('PUT', `/collections/${c}/points?wait=true`, '{"points":[{"id":18446744073709551616,"vector":[1,1]}]}'), 400, 'id 2^64');
  });

  it('upsert with wait=false is acknowledged with 200 and becomes visible', async () => {
    const c = await cols.create('pts_nowait', { vectors: { size: DIM, distance: 'Euclid' } });
    const pts = Array.from({ length: 20 }, (_, i) => ({ id: 1000 + i, vector: rng.vec(DIM) }));
    const res = await http('PUT', `/collections/${c}/points`, { points: pts });
    assertUpdateResult(okResult(res, 'upsert wait=false'), 'upsert wait=false', { waited: false });
    const r2 = await client.upsert(c, { wait: false, points: [{ id: 5000, vector: rng.vec(DIM) }] });
    assertUpdateResult(r2, 'client upsert wait=false', { waited: false });
    await pollUntil(async () => (await client.count(c)).count === 21, { what: 'count 21 after wait=false upserts' });
  });

  it('delete by ids (wait=true and default), missing ids are fine', async () => {
    const c = await cols.create('pts_del', { vectors: { size: DIM, distance: 'Euclid' } });
    const pts = Array.from({ length: 10 }, (_, i) => ({ id: i + 1, vector: rng.vec(DIM) }));
    pts.push({ id: uuids[0], vector: rng.vec(DIM) });
    await client.upsert(c, { wait: true, points: pts });
    const r = await client.delete(c, { wait: true, points: [2, 3, uuids[0], 99999] });
    assertUpdateResult(r, 'delete ids');
    assert.equal((await client.count(c)).count, 8);
    assert.deepEqual(await client.retrieve(c, { ids: [2, 3, uuids[0]] }), []);
    assertErrorBody(await http('GET', `/collections/${c}/points/2`), 404, 'deleted point');
    // Without wait (the client's default for delete): 200 acknowledged, applied soon after.
    const r2 = await client.delete(c, { points: [4] });
    assertUpdateResult(r2, 'delete no wait', { waited: false });
    await pollUntil(async () => (await client.count(c)).count === 7, { what: 'count 7 after delete' });
    // Raw form with ordering=weak as LangChain sends it.
    const r3 = okResult(await http('POST', `/collections/${c}/points/delete?wait=true&ordering=weak`, { points: [5] }), 'raw delete');
    assertUpdateResult(r3, 'raw delete');
    assert.equal((await client.count(c)).count, 6);
  });

  it('delete by filter', async () => {
    const c = await cols.create('pts_delf', { vectors: { size: DIM, distance: 'Euclid' } });
    const pts = Array.from({ length: 30 }, (_, i) => ({ id: i, vector: rng.vec(DIM), payload: { g: i % 3, n: i } }));
    await client.upsert(c, { wait: true, points: pts });
    const filter = { must: [{ key: 'g', match: { value: 1 } }], must_not: [{ key: 'n', range: { gte: 25 } }] };
    const r = await client.delete(c, { wait: true, filter });
    assertUpdateResult(r, 'delete filter');
    const left = pts.filter((p) => !matchesFilter(filter, p));
    assert.equal((await client.count(c)).count, left.length);
    const all = await client.scroll(c, { limit: 100 });
    assertSameIdSet(all.points, left, 'after delete by filter');
  });

  it('scroll walks every page in id order with next_page_offset', async () => {
    const c = await cols.create('pts_scroll', { vectors: { size: DIM, distance: 'Euclid' } });
    const ids = new Set();
    while (ids.size < 37) ids.add(1 + rng.int(100000));
    const pts = [...ids].map((id) => ({ id, vector: rng.vec(DIM), payload: { id, odd: id % 2 === 1 } }));
    for (let i = 0; i < 5; i++) pts.push({ id: rng.uuid(), vector: rng.vec(DIM), payload: { odd: false } });
    await client.upsert(c, { wait: true, points: pts });
    const expected = sortIds(pts.map((p) => p.id));

    const seen = [];
    let offset;
    let pages = 0;
    for (;;) {
      const page = await client.scroll(c, { limit: 6, offset, with_payload: true });
      pages++;
      assert.ok(pages <= 20, 'scroll does not terminate');
      assert.ok(page.points.length <= 6);
      for (const p of page.points) {
        const src = pts.find((x) => String(x.id) === String(p.id));
        assert.deepEqual(p.payload, src.payload);
        assert.ok(p.vector === undefined || p.vector === null, 'scroll with_vector defaults to false');
      }
      seen.push(...page.points.map((p) => p.id));
      if (page.next_page_offset === null || page.next_page_offset === undefined) break;
      // The next page starts at next_page_offset (inclusive).
      assert.equal(String(page.next_page_offset), String(expected[seen.length]), 'next_page_offset is the next id');
      offset = page.next_page_offset;
    }
    assert.equal(pages, Math.ceil(expected.length / 6));
    assert.deepEqual(seen.map(String), expected.map(String), 'scroll yields every id once, in order');

    // Raw scroll: defaults limit=10, with_payload=true; next_page_offset null on the last page.
    const first = okResult(await http('POST', `/collections/${c}/points/scroll`, {}), 'scroll raw');
    assert.equal(first.points.length, 10);
    assert.equal(String(first.next_page_offset), String(expected[10]));
    assert.ok(first.points.every((p) => p.payload && typeof p.payload === 'object'), 'raw scroll default with_payload=true');
    const last = okResult(await http('POST', `/collections/${c}/points/scroll`, { offset: expected[expected.length - 3], limit: 10, with_payload: false, with_vector: true }), 'scroll last');
    assert.deepEqual(last.points.map((p) => String(p.id)), expected.slice(-3).map(String));
    assert.equal(last.next_page_offset, null);
    assert.ok(last.points.every((p) => !('payload' in p) && Array.isArray(p.vector) && p.vector.length === DIM));
  });

  it('scroll with a filter walks only matching points', async () => {
    const c = await cols.create('pts_scrollf', { vectors: { size: DIM, distance: 'Euclid' } });
    const pts = Array.from({ length: 50 }, (_, i) => ({ id: i * 3 + 1, vector: rng.vec(DIM), payload: { m: i % 4, n: i } }));
    await client.upsert(c, { wait: true, points: pts });
    const filter = { should: [{ key: 'm', match: { value: 2 } }, { key: 'n', range: { lt: 5 } }] };
    const want = sortIds(pts.filter((p) => matchesFilter(filter, p)).map((p) => p.id));
    const seen = [];
    let offset;
    for (let guard = 0; guard < 30; guard++) {
      const page = await client.scroll(c, { limit: 4, offset, filter, with_payload: false });
      seen.push(...page.points.map((p) => p.id));
      if (page.next_page_offset == null) break;
      offset = page.next_page_offset;
    }
    assert.deepEqual(seen, want);
  });

  it('count (exact) with and without a filter', async () => {
    const c = await cols.create('pts_count', { vectors: { size: DIM, distance: 'Euclid' } });
    const pts = Array.from({ length: 40 }, (_, i) => ({ id: i, vector: rng.vec(DIM), payload: { k: i % 5, big: i >= 30 } }));
    await client.upsert(c, { wait: true, points: pts });
    assert.deepEqual(await client.count(c, { exact: true }), { count: 40 });
    const f = { must: [{ key: 'k', match: { any: [1, 3] } }], must_not: [{ key: 'big', match: { value: true } }] };
    const want = pts.filter((p) => matchesFilter(f, p)).length;
    assert.equal((await client.count(c, { filter: f, exact: true })).count, want);
    const raw = okResult(await http('POST', `/collections/${c}/points/count`, { filter: f }), 'count raw');
    assert.deepEqual(raw, { count: want });
    const none = { must: [{ key: 'k', match: { value: 77 } }] };
    assert.equal((await client.count(c, { filter: none })).count, 0);
  });

  it('point operations on a missing collection are 404', async () => {
    const name = cols.name('gone');
    await expectClientError(client.upsert(name, { wait: true, points: [{ id: 1, vector: [1, 2, 3, 4] }] }), 404, 'upsert');
    await expectClientError(client.retrieve(name, { ids: [1] }), 404, 'retrieve');
    await expectClientError(client.delete(name, { wait: true, points: [1] }), 404, 'delete');
    await expectClientError(client.scroll(name, { limit: 1 }), 404, 'scroll');
    await expectClientError(client.count(name, {}), 404, 'count');
    await expectClientError(client.search(name, { vector: [1, 2, 3, 4], limit: 1 }), 404, 'search');
    await expectClientError(client.query(name, { query: [1, 2, 3, 4], limit: 1 }), 404, 'query');
  });
});
