// Collections: create (metrics, hnsw_config, scalar int8 quantization,
// shard_number, replication_factor), list, exists, get, update, delete, and
// their errors.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  http, okResult, assertErrorBody, expectClientError, newClient, CollectionTracker, makeRng, enc,
  pollUntil,
} from '../lib/common.mjs';

const client = newClient();
const cols = new CollectionTracker(client);

function assertCollectionInfoShape(info, what) {
  assert.ok(['green', 'yellow', 'grey', 'red'].includes(info.status), `${what}: status ${info.status}`);
  assert.ok(info.optimizer_status === 'ok' || (info.optimizer_status && typeof info.optimizer_status.error === 'string'),
    `${what}: optimizer_status ${JSON.stringify(info.optimizer_status)}`);
  assert.equal(typeof info.segments_count, 'number', `${what}: segments_count`);
  assert.equal(typeof info.points_count, 'number', `${what}: points_count`);
  assert.equal(typeof info.indexed_vectors_count, 'number', `${what}: indexed_vectors_count`);
  assert.ok(info.config && typeof info.config === 'object', `${what}: config`);
  assert.ok(info.config.params && typeof info.config.params === 'object', `${what}: config.params`);
  assert.ok(info.config.hnsw_config && typeof info.config.hnsw_config === 'object', `${what}: config.hnsw_config`);
  assert.ok(info.config.optimizer_config && typeof info.config.optimizer_config === 'object', `${what}: config.optimizer_config`);
  assert.ok(info.payload_schema && typeof info.payload_schema === 'object' && !Array.isArray(info.payload_schema),
    `${what}: payload_schema`);
}

describe('collections', { timeout: 120000 }, () => {
  after(() => cols.dropAll());

  for (const distance of ['Cosine', 'Euclid', 'Dot']) {
    it(`create, list, exists, get: ${distance}`, async () => {
      const name = await cols.create(`c_${distance.toLowerCase()}`, { vectors: { size: 7, distance } });
      const list = await client.getCollections();
      assert.ok(Array.isArray(list.collections));
      assert.ok(list.collections.some((c) => c.name === name), `${name} not in getCollections()`);
      assert.deepEqual(await client.collectionExists(name), { exists: true });

      const info = await client.getCollection(name);
      assertCollectionInfoShape(info, name);
      assert.equal(info.status, 'green', 'a new empty collection is green');
      assert.equal(info.points_count, 0);
      assert.equal(info.config.params.vectors.size, 7);
      assert.equal(info.config.params.vectors.distance, distance);
      assert.deepEqual(info.payload_schema, {});
    });
  }

  it('collectionExists is false for a missing collection', async () => {
    assert.deepEqual(await client.collectionExists(cols.name('never_created')), { exists: false });
  });

  it('raw PUT/GET/exists carry the envelope', async () => {
    const name = cols.name('raw');
    const created = okResult(await http('PUT', `/collections/${name}`, { vectors: { size: 3, distance: 'Dot' } }), 'PUT collection');
    assert.equal(created, true);
    const ex = okResult(await http('GET', `/collections/${name}/exists`), 'exists');
    assert.deepEqual(ex, { exists: true });
    const info = okResult(await http('GET', `/collections/${name}`), 'GET collection');
    assertCollectionInfoShape(info, name);
    assert.deepEqual(info.config.params.vectors, { ...info.config.params.vectors, size: 3, distance: 'Dot' });
    const list = okResult(await http('GET', '/collections'), 'GET /collections');
    assert.ok(list.collections.some((c) => c.name === name));
  });

  it('hnsw_config is stored and reported', async () => {
    const name = await cols.create('hnsw', {
      vectors: { size: 8, distance: 'Cosine' },
      hnsw_config: { m: 8, ef_construct: 64 },
    });
    const info = await client.getCollection(name);
    assert.equal(info.config.hnsw_config.m, 8);
    assert.equal(info.config.hnsw_config.ef_construct, 64);
  });

  it('quantization_config scalar int8 is stored and reported', async () => {
    const name = await cols.create('quant', {
      vectors: { size: 8, distance: 'Euclid' },
      quantization_config: { scalar: { type: 'int8', quantile: 0.99, always_ram: true } },
    });
    const info = await client.getCollection(name);
    const q = info.config.quantization_config;
    assert.ok(q && q.scalar, `quantization_config: ${JSON.stringify(q)}`);
    assert.equal(q.scalar.type, 'int8');
    assert.ok(Math.abs(q.scalar.quantile - 0.99) < 1e-6, `quantile ${q.scalar.quantile}`);
  });

  it('shard_number and replication_factor are stored; a 3-shard collection holds and finds every point', async () => {
    const name = await cols.create('shards', {
      vectors: { size: 4, distance: 'Euclid' },
      shard_number: 3,
      replication_factor: 1,
    });
    const info = await client.getCollection(name);
    assert.equal(info.config.params.shard_number, 3);
    assert.equal(info.config.params.replication_factor, 1);

    const rng = makeRng('shards');
    const points = Array.from({ length: 60 }, (_, i) => ({ id: i + 1, vector: rng.vec(4), payload: { i } }));
    const up = await client.upsert(name, { wait: true, points });
    assert.equal(up.status, 'completed');
    assert.equal((await client.count(name, { exact: true })).count, 60);
    // Every point is reachable by id whichever shard holds it.
    const got = await client.retrieve(name, { ids: points.map((p) => p.id) });
    assert.equal(got.length, 60);
    // The nearest neighbour of each stored vector is itself at distance 0.
    for (const p of points.slice(0, 10)) {
      const r = await client.search(name, { vector: p.vector, limit: 1, params: { exact: true } });
      assert.equal(r.length, 1);
      assert.equal(r[0].id, p.id);
      assert.ok(Math.abs(r[0].score) < 1e-4, `self distance ${r[0].score}`);
    }
    assert.equal((await client.getCollection(name)).points_count, 60);
  });

  it('status turns green once upserted points are indexed', async () => {
    const name = await cols.create('green', { vectors: { size: 16, distance: 'Cosine' } });
    const rng = makeRng('green');
    const points = Array.from({ length: 300 }, (_, i) => ({ id: i, vector: rng.vec(16) }));
    await client.upsert(name, { wait: true, points });
    const info = await pollUntil(async () => {
      const i = await client.getCollection(name);
      assert.ok(['green', 'yellow', 'grey'].includes(i.status), `unexpected status ${i.status}`);
      return i.status === 'green' ? i : null;
    }, { timeoutMs: 60000, what: 'status green' });
    assert.equal(info.points_count, 300);
  });

  it('updateCollection (PATCH) changes hnsw_config', async () => {
    const name = await cols.create('upd', { vectors: { size: 4, distance: 'Cosine' }, hnsw_config: { m: 16, ef_construct: 100 } });
    const r = await client.updateCollection(name, { hnsw_config: { ef_construct: 123 } });
    assert.equal(r, true);
    const info = await client.getCollection(name);
    assert.equal(info.config.hnsw_config.ef_construct, 123);
    assert.equal(info.config.hnsw_config.m, 16, 'fields not named in the update keep their value');
    // Raw PATCH carries the envelope too.
    const raw = okResult(await http('PATCH', `/collections/${name}`, { optimizers_config: { indexing_threshold: 10000 } }), 'PATCH');
    assert.equal(raw, true);
    assert.equal((await client.getCollection(name)).config.optimizer_config.indexing_threshold, 10000);
  });

  it('updateCollection of a missing collection is 404', async () => {
    await expectClientError(client.updateCollection(cols.name('missing_upd'), { hnsw_config: { ef_construct: 99 } }), 404, 'PATCH missing');
  });

  it('deleteCollection removes it; a second delete answers result:false', async () => {
    const name = await cols.create('del', { vectors: { size: 4, distance: 'Dot' } });
    assert.equal(await client.deleteCollection(name), true);
    assert.deepEqual(await client.collectionExists(name), { exists: false });
    assert.ok(!(await client.getCollections()).collections.some((c) => c.name === name));
    await expectClientError(client.getCollection(name), 404, 'GET deleted');
    // DELETE of a missing collection: 200 with result:false (compat doc §2.3).
    assert.equal(await client.deleteCollection(name), false);
    const raw = await http('DELETE', `/collections/${name}`);
    assert.equal(okResult(raw, 'DELETE missing'), false);
    // The name can be reused.
    await client.createCollection(name, { vectors: { size: 5, distance: 'Euclid' } });
    assert.equal((await client.getCollection(name)).config.params.vectors.size, 5);
  });

  it('getCollection of a missing collection is 404 with the error body', async () => {
    const name = cols.name('missing');
    const err = await expectClientError(client.getCollection(name), 404, 'GET missing');
    assert.match(err.data.status.error, /not found|doesn't exist|does not exist/i);
    assertErrorBody(await http('GET', `/collections/${enc(name)}`), 404, 'raw GET missing');
  });

  it('creating an existing collection is 409', async () => {
    const name = await cols.create('dup', { vectors: { size: 4, distance: 'Cosine' } });
    const err = await expectClientError(client.createCollection(name, { vectors: { size: 4, distance: 'Cosine' } }), 409, 'duplicate');
    assert.match(err.data.status.error, /already exists/i);
    assertErrorBody(await http('PUT', `/collections/${name}`, { vectors: { size: 8, distance: 'Dot' } }), 409, 'raw duplicate');
    // The original is untouched.
    assert.equal((await client.getCollection(name)).config.params.vectors.size, 4);
  });

  it('invalid collection configs are 400', async () => {
    const bad = [
      {},
      { vectors: { distance: 'Cosine' } },
      { vectors: { size: 4 } },
      { vectors: { size: 4, distance: 'Hamming' } },
      { vectors: { size: 0, distance: 'Cosine' } },
      { vectors: { size: -3, distance: 'Cosine' } },
      { vectors: { size: 2.5, distance: 'Cosine' } },
      { vectors: { size: 65537, distance: 'Cosine' } }, // above the 65,536 limit (issue 4)
      { vectors: { size: 4, distance: 'Cosine' }, quantization_config: { scalar: { type: 'int4' } } },
    ];
    for (const body of bad) {
      const name = cols.name('bad');
      assertErrorBody(await http('PUT', `/collections/${name}`, body), 400, `create ${JSON.stringify(body)}`);
      assert.deepEqual(await client.collectionExists(name), { exists: false }, `created despite 400: ${JSON.stringify(body)}`);
    }
  });
});
