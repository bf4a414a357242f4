// Error statuses and bodies: wrong vector dimension, bad point ids, bad
// numbers, limits, and that a rejected write changes nothing.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  http, assertErrorBody, expectClientError, newClient, CollectionTracker, makeRng,
} from '../lib/common.mjs';

const client = newClient();
const cols = new CollectionTracker(client);
const DIM = 4;

describe('errors', { timeout: 120000 }, () => {
  const rng = makeRng('errors');
  let c;

  before(async () => {
    c = await cols.create('errors', { vectors: { size: DIM, distance: 'Cosine' } });
    await client.upsert(c, { wait: true, points: [{ id: 1, vector: rng.vec(DIM), payload: { a: 1 } }, { id: 2, vector: rng.vec(DIM) }] });
  });
  after(() => cols.dropAll());

  async function countIs(n) {
    assert.equal((await client.count(c)).count, n, 'a rejected write must change nothing');
  }

  it('wrong vector dimension on upsert is 400 (client and raw, points and batch)', async () => {
    const err = await expectClientError(client.upsert(c, { wait: true, points: [{ id: 3, vector: [1, 2, 3] }] }), 400, 'upsert dim 3');
    assert.match(err.data.status.error, /dim/i, 'the message names the dimension problem');
    await expectClientError(client.upsert(c, { wait: true, points: [{ id: 3, vector: [1, 2, 3, 4, 5] }] }), 400, 'upsert dim 5');
    await expectClientError(client.upsert(c, { wait: true, batch: { ids: [3, 4], vectors: [[1, 2, 3, 4], [1, 2]] } }), 400, 'batch dim');
    // One bad point spoils the whole request.
    assertErrorBody(await http('PUT', `/collections/${c}/points?wait=true`, {
      points: [{ id: 10, vector: [1, 2, 3, 4] }, { id: 11, vector: [1, 2] }],
    }), 400, 'mixed batch');
    await countIs(2);
    assert.deepEqual(await client.retrieve(c, { ids: [10] }), []);
  });

  it('wrong vector dimension on search and query is 400', async () => {
    await expectClientError(client.search(c, { vector: [1, 2, 3], limit: 1 }), 400, 'search dim');
    await expectClientError(client.query(c, { query: [1, 2, 3, 4, 5], limit: 1 }), 400, 'query dim');
    await expectClientError(client.query(c, { query: { nearest: [1, 2] }, limit: 1 }), 400, 'query nearest dim');
  });

  it('batch form with mismatched lengths is 400', async () => {
    assertErrorBody(await http('PUT', `/collections/${c}/points?wait=true`, { batch: { ids: [20, 21, 22], vectors: [[1, 2, 3, 4], [4, 3, 2, 1]] } }), 400, 'ids/vectors length');
    assertErrorBody(await http('PUT', `/collections/${c}/points?wait=true`, { batch: { ids: [20], vectors: [[1, 2, 3, 4]], payloads: [{}, {}] } }), 400, 'payloads length');
    await countIs(2);
  });

  it('bad point ids are 400 (compat doc §2.4)', async () => {
    const badIds = ['"123"', '-1', '1.5', '"not-a-uuid"', '"1234567-89ab-cdef-0123-456789abcdef"', 'null', 'true', '{}'];
    for (const id of badIds) {
      assertErrorBody(await http('PUT', `/collections/${c}/points?wait=true`, `{"points":[{"id":${id},"vector":[1,2,3,4]}]}`), 400, `upsert id ${id}`);
      assertErrorBody(await http('POST', `/collections/${c}/points`, `{"ids":[${id}]}`), 400, `retrieve id ${id}`);
      assertErrorBody(await http('POST', `/collections/${c}/points/delete?wait=true`, `{"points":[${id}]}`), 400, `delete id ${id}`);
    }
    await countIs(2);
  });

  it('bad vectors and numbers are 400', async () => {
    for (const vec of ['[1,2,3,"4"]', '[1,2,3,null]', '"1,2,3,4"', '[1,2,3,1e39]', '[1,2,3,-1e39]', '[]', '{"a":1}']) {
      assertErrorBody(await http('PUT', `/collections/${c}/points?wait=true`, `{"points":[{"id":30,"vector":${vec}}]}`), 400, `vector ${vec}`);
    }
    // A point without a vector.
    assertErrorBody(await http('PUT', `/collections/${c}/points?wait=true`, '{"points":[{"id":30}]}'), 400, 'no vector');
    // Neither points nor batch.
    assertErrorBody(await http('PUT', `/collections/${c}/points?wait=true`, '{}'), 400, 'empty upsert body');
    // Payload must be an object.
    assertErrorBody(await http('PUT', `/collections/${c}/points?wait=true`, '{"points":[{"id":30,"vector":[1,2,3,4],"payload":[1]}]}'), 400, 'array payload');
    await countIs(2);
    for (const vec of ['[1,2,3,"4"]', '[1,2,3,1e39]']) {
      assertErrorBody(await http('POST', `/collections/${c}/points/search`, `{"vector":${vec},"limit":1}`), 400, `search vector ${vec}`);
    }
  });

  it('limit and offset out of range are 400', async () => {
    const q = [1, 0, 0, 0];
    for (const body of [
      { vector: q, limit: 10001 }, // above the 10,000 limit (issue 4)
      { vector: q, limit: -1 },
      { vector: q, limit: 1.5 },
      { vector: q, limit: 'ten' },
      { vector: q, limit: 3, offset: -2 },
      { limit: 3 }, // no vector
    ]) {
      assertErrorBody(await http('POST', `/collections/${c}/points/search`, body), 400, `search ${JSON.stringify(body)}`);
    }
    assertErrorBody(await http('POST', `/collections/${c}/points/query`, { query: q, limit: 10001 }), 400, 'query limit 10001');
    assertErrorBody(await http('POST', `/collections/${c}/points/scroll`, { limit: -5 }), 400, 'scroll limit -5');
  });

  it('payload operations with bad input are 400', async () => {
    assertErrorBody(await http('POST', `/collections/${c}/points/payload?wait=true`, { payload: [1, 2], points: [1] }), 400, 'set payload array');
    assertErrorBody(await http('POST', `/collections/${c}/points/payload?wait=true`, { payload: { a: 1 } }), 400, 'set payload without points or filter');
    assertErrorBody(await http('POST', `/collections/${c}/points/payload/delete?wait=true`, { keys: 'a', points: [1] }), 400, 'delete payload keys not a list');
    assert.deepEqual((await client.retrieve(c, { ids: [1] }))[0].payload, { a: 1 });
  });

  it('a wrong method on a known route is not 200', async () => {
    const res = await http('DELETE', `/collections/${c}/points/search`);
    assert.ok(res.status === 404 || res.status === 405, `DELETE /points/search answered ${res.status}`);
  });
});
