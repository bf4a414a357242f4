// Payload operations (set, overwrite, delete keys, clear) and payload
// indexes (keyword, integer, float, bool).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  http, okResult, expectClientError, newClient, CollectionTracker, makeRng, assertSameIdSet,
} from '../lib/common.mjs';
import { matchesFilter } from '../lib/reference.mjs';

const client = newClient();
const cols = new CollectionTracker(client);
const DIM = 3;

async function payloadOf(c, id) {
  const r = await client.retrieve(c, { ids: [id], with_payload: true });
  assert.equal(r.length, 1, `point ${id} missing`);
  return r[0].payload;
}

describe('payload operations', { timeout: 120000 }, () => {
  const rng = makeRng('payload');
  let c;
  const u = rng.uuid();

  before(async () => {
    c = await cols.create('payload', { vectors: { size: DIM, distance: 'Dot' } });
    await client.upsert(c, {
      wait: true,
      points: [
        { id: 1, vector: rng.vec(DIM), payload: { a: 1, b: 'x', meta: { k: 1, z: 0 } } },
        { id: 2, vector: rng.vec(DIM), payload: { a: 2, b: 'y' } },
        { id: 3, vector: rng.vec(DIM), payload: { a: 3 } },
        { id: u, vector: rng.vec(DIM), payload: { a: 4, b: 'w' } },
        { id: 5, vector: rng.vec(DIM) },
      ],
    });
  });
  after(() => cols.dropAll());

  it('setPayload merges keys into the listed points only', async () => {
    const r = await client.setPayload(c, { payload: { b: 'set', c: [1, 2] }, points: [1, u], wait: true });
    assert.equal(r.status, 'completed');
    assert.deepEqual(await payloadOf(c, 1), { a: 1, b: 'set', c: [1, 2], meta: { k: 1, z: 0 } });
    assert.deepEqual(await payloadOf(c, u), { a: 4, b: 'set', c: [1, 2] });
    assert.deepEqual(await payloadOf(c, 2), { a: 2, b: 'y' }, 'untouched');
    // A point without payload gains one.
    await client.setPayload(c, { payload: { fresh: true }, points: [5], wait: true });
    assert.deepEqual(await payloadOf(c, 5), { fresh: true });
  });

  it('setPayload by filter', async () => {
    const r = await client.setPayload(c, { payload: { hit: 'yes' }, filter: { must: [{ key: 'a', range: { gte: 2, lte: 3 } }] }, wait: true });
    assert.equal(r.status, 'completed');
    assert.equal((await payloadOf(c, 2)).hit, 'yes');
    assert.equal((await payloadOf(c, 3)).hit, 'yes');
    assert.ok(!('hit' in (await payloadOf(c, 1))));
    assert.ok(!('hit' in (await payloadOf(c, u))));
  });

  it('raw setPayload (POST /points/payload) carries the envelope', async () => {
    const res = await http('POST', `/collections/${c}/points/payload?wait=true`, { payload: { raw: 1 }, points: [3] });
    assert.equal(okResult(res, 'set payload').status, 'completed');
    assert.equal((await payloadOf(c, 3)).raw, 1);
  });

  it('overwritePayload replaces the whole payload', async () => {
    const r = await client.overwritePayload(c, { payload: { only: 'this' }, points: [1], wait: true });
    assert.equal(r.status, 'completed');
    assert.deepEqual(await payloadOf(c, 1), { only: 'this' });
    const res = await http('PUT', `/collections/${c}/points/payload?wait=true`, { payload: { o: 2 }, points: [2] });
    assert.equal(okResult(res, 'overwrite payload').status, 'completed');
    assert.deepEqual(await payloadOf(c, 2), { o: 2 });
  });

  it('deletePayload removes the listed keys', async () => {
    await client.overwritePayload(c, { payload: { a: 1, b: 2, c: 3, meta: { k: 1 } }, points: [1], wait: true });
    const r = await client.deletePayload(c, { keys: ['b', 'meta', 'absent'], points: [1], wait: true });
    assert.equal(r.status, 'completed');
    assert.deepEqual(await payloadOf(c, 1), { a: 1, c: 3 });
    const res = await http('POST', `/collections/${c}/points/payload/delete?wait=true`, { keys: ['a'], filter: { must: [{ has_id: [1, u] }] } });
    assert.equal(okResult(res, 'delete payload').status, 'completed');
    assert.deepEqual(await payloadOf(c, 1), { c: 3 });
    assert.ok(!('a' in (await payloadOf(c, u))));
  });

  it('clearPayload empties the payload of the listed points', async () => {
    const r = await client.clearPayload(c, { points: [3, u], wait: true });
    assert.equal(r.status, 'completed');
    assert.deepEqual(await payloadOf(c, 3), {});
    assert.deepEqual(await payloadOf(c, u), {});
    assert.notDeepEqual(await payloadOf(c, 2), {}, 'other points keep theirs');
    // The vectors survive.
    assert.equal((await client.count(c)).count, 5);
  });

  it('payload operations on a missing collection are 404', async () => {
    const name = cols.name('missing');
    await expectClientError(client.setPayload(name, { payload: { a: 1 }, points: [1], wait: true }), 404, 'set');
    await expectClientError(client.overwritePayload(name, { payload: { a: 1 }, points: [1], wait: true }), 404, 'overwrite');
    await expectClientError(client.deletePayload(name, { keys: ['a'], points: [1], wait: true }), 404, 'delete');
    await expectClientError(client.clearPayload(name, { points: [1], wait: true }), 404, 'clear');
  });
});

describe('payload indexes', { timeout: 120000 }, () => {
  const rng = makeRng('pindex');
  let c;
  const pts = [];

  before(async () => {
    c = await cols.create('pindex', { vectors: { size: DIM, distance: 'Euclid' } });
    for (let i = 0; i < 80; i++) {
      const payload = { kw: rng.pick(['red', 'green', 'blue']), n: rng.int(50), f: Math.round(rng.float(0, 10) * 1000) / 1000, flag: rng.next() < 0.3 };
      if (i % 10 === 0) delete payload.kw; // some points lack the keyword field
      pts.push({ id: i + 1, vector: rng.vec(DIM), payload });
    }
    await client.upsert(c, { wait: true, points: pts });
  });
  after(() => cols.dropAll());

  const cases = [
    ['kw', 'keyword', { key: 'kw', match: { value: 'green' } }],
    ['n', 'integer', { key: 'n', range: { gte: 10, lt: 30 } }],
    ['f', 'float', { key: 'f', range: { gt: 2.5, lte: 7.25 } }],
    ['flag', 'bool', { key: 'flag', match: { value: true } }],
  ];

  for (const [field, schema, cond] of cases) {
    it(`createPayloadIndex ${schema} on "${field}", filter results unchanged, deletePayloadIndex`, async () => {
      const filter = { must: [cond] };
      const want = pts.filter((p) => matchesFilter(filter, p));
      assert.ok(want.length > 0 && want.length < pts.length, 'the data set exercises the filter');
      const before = await client.scroll(c, { filter, limit: 200, with_payload: false });
      assertSameIdSet(before.points, want, `${schema} filter without index`);

      const r = await client.createPayloadIndex(c, { field_name: field, field_schema: schema, wait: true });
      assert.equal(r.status, 'completed');
      const info = await client.getCollection(c);
      const entry = info.payload_schema[field];
      assert.ok(entry, `payload_schema lacks ${field}: ${JSON.stringify(info.payload_schema)}`);
      assert.equal(entry.data_type, schema);
      const withField = pts.filter((p) => field in p.payload).length;
      assert.equal(entry.points, withField, `payload_schema.${field}.points`);

      const after1 = await client.scroll(c, { filter, limit: 200, with_payload: false });
      assertSameIdSet(after1.points, want, `${schema} filter with index`);
      assert.equal((await client.count(c, { filter })).count, want.length);
      // The index follows writes made after it was built.
      const extra = { id: 1000, vector: rng.vec(DIM), payload: { ...pts[0].payload, kw: 'green', n: 15, f: 5, flag: true } };
      await client.upsert(c, { wait: true, points: [extra] });
      assert.equal((await client.count(c, { filter })).count, want.length + 1);
      await client.delete(c, { wait: true, points: [1000] });

      const d = await client.deletePayloadIndex(c, field, { wait: true });
      assert.equal(d.status, 'completed');
      const info2 = await client.getCollection(c);
      assert.ok(!(field in info2.payload_schema), `payload_schema still has ${field}`);
      assert.equal((await client.count(c, { filter })).count, want.length);
    });
  }

  it('raw index routes: PUT /index and DELETE /index/{field} carry the envelope', async () => {
    const r = okResult(await http('PUT', `/collections/${c}/index?wait=true`, { field_name: 'n', field_schema: 'integer' }), 'PUT index');
    assert.equal(r.status, 'completed');
    assert.equal((await client.getCollection(c)).payload_schema.n.data_type, 'integer');
    const d = okResult(await http('DELETE', `/collections/${c}/index/n?wait=true`), 'DELETE index');
    assert.equal(d.status, 'completed');
    assert.ok(!('n' in (await client.getCollection(c)).payload_schema));
  });

  it('an unknown field_schema is 400; an index on a missing collection is 404', async () => {
    const res = await http('PUT', `/collections/${c}/index?wait=true`, { field_name: 'kw', field_schema: 'nonsense' });
    assert.equal(res.status, 400, res.text);
    await expectClientError(client.createPayloadIndex(cols.name('missing'), { field_name: 'a', field_schema: 'keyword', wait: true }), 404, 'index on missing collection');
  });
});
