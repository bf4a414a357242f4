// Filters: must / should / must_not / min_should, match value / any / except,
// range, is_empty, is_null, has_id, nested keys ("metadata.k"), arrays,
// nested filters.  Each filter is checked through count, a full scroll, an
// exact search and a query against the same filter evaluated here.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  http, assertErrorBody, newClient, CollectionTracker, makeRng, assertSameIdSet, sortIds,
} from '../lib/common.mjs';
import { bruteForce, assertRanking, matchesFilter } from '../lib/reference.mjs';

const client = newClient();
const cols = new CollectionTracker(client);
const DIM = 6;
const N = 160;

function makeData(rng) {
  const colors = ['red', 'green', 'blue', 'black'];
  const pts = [];
  const uuids = [];
  for (let i = 0; i < N; i++) {
    const payload = {
      color: rng.pick(colors),
      n: rng.int(10),
      price: Math.round(rng.float(0, 100) * 100) / 100,
      flag: rng.next() < 0.5,
      metadata: { k: rng.int(4), src: rng.pick(['web', 'pdf', 'mail']), score: rng.int(1000) / 10 },
    };
    // tags: absent, null, [], or 1..3 strings.
    const t = i % 5;
    if (t === 1) payload.tags = null;
    else if (t === 2) payload.tags = [];
    else if (t >= 3) payload.tags = Array.from({ length: 1 + rng.int(3) }, () => rng.pick(['a', 'b', 'c', 'd']));
    // opt: absent, null, or a value.
    const o = i % 3;
    if (o === 1) payload.opt = null;
    else if (o === 2) payload.opt = rng.int(5);
    let id = i + 1;
    if (i % 16 === 5) {
      id = rng.uuid();
      uuids.push(id);
    }
    pts.push({ id, vector: rng.vec(DIM), payload });
  }
  return { pts, uuids };
}

describe('filters', { timeout: 240000 }, () => {
  const rng = makeRng('filters');
  const { pts, uuids } = makeData(rng);
  const queries = Array.from({ length: 2 }, () => rng.vec(DIM));
  let c;

  before(async () => {
    c = await cols.create('filters', { vectors: { size: DIM, distance: 'Dot' } });
    await client.upsert(c, { wait: true, points: pts.slice(0, 80) });
    await client.upsert(c, { wait: true, points: pts.slice(80) });
  });
  after(() => cols.dropAll());

  const cases = [
    ['match value keyword', { must: [{ key: 'color', match: { value: 'red' } }] }],
    ['match value integer', { must: [{ key: 'n', match: { value: 3 } }] }],
    ['match value bool', { must: [{ key: 'flag', match: { value: false } }] }],
    ['match any strings', { must: [{ key: 'color', match: { any: ['red', 'blue'] } }] }],
    ['match any integers', { must: [{ key: 'n', match: { any: [1, 2, 7] } }] }],
    ['match except strings', { must: [{ key: 'color', match: { except: ['red', 'green'] } }] }],
    ['match except integers', { must: [{ key: 'n', match: { except: [0, 1, 2, 3, 4] } }] }],
    ['range float gte/lte', { must: [{ key: 'price', range: { gte: 20.5, lte: 60 } }] }],
    ['range int gt/lt', { must: [{ key: 'n', range: { gt: 2, lt: 6 } }] }],
    ['range on a nested key', { must: [{ key: 'metadata.score', range: { lt: 33.3 } }] }],
    ['nested key match (metadata.k)', { must: [{ key: 'metadata.k', match: { value: 1 } }] }],
    ['nested key match string (metadata.src)', { must: [{ key: 'metadata.src', match: { value: 'pdf' } }] }],
    ['array field: match value on any element', { must: [{ key: 'tags', match: { value: 'a' } }] }],
    ['array field: match any', { must: [{ key: 'tags', match: { any: ['b', 'c'] } }] }],
    ['is_empty (absent, null, [])', { must: [{ is_empty: { key: 'tags' } }] }],
    ['must_not is_empty', { must_not: [{ is_empty: { key: 'tags' } }] }],
    ['is_null', { must: [{ is_null: { key: 'opt' } }] }],
    ['must_not is_null', { must_not: [{ is_null: { key: 'opt' } }] }],
    ['has_id (integers, UUIDs, missing ids)', { must: [{ has_id: [1, 2, 3, 50, 99, 100000, uuids[0], uuids[2]] }] }],
    ['should (OR)', { should: [{ key: 'color', match: { value: 'black' } }, { key: 'n', range: { gte: 8 } }] }],
    ['must_not', { must_not: [{ key: 'color', match: { value: 'red' } }, { key: 'flag', match: { value: true } }] }],
    ['min_should 2 of 3', { min_should: { conditions: [{ key: 'color', match: { value: 'red' } }, { key: 'flag', match: { value: true } }, { key: 'metadata.k', match: { any: [0, 1] } }], min_count: 2 } }],
    ['must + should + must_not', {
      must: [{ key: 'price', range: { gt: 10 } }],
      should: [{ key: 'metadata.src', match: { value: 'web' } }, { key: 'tags', match: { value: 'd' } }],
      must_not: [{ key: 'n', match: { any: [0, 9] } }],
    }],
    ['nested filter as a condition', {
      must: [
        { should: [{ key: 'color', match: { value: 'green' } }, { key: 'color', match: { value: 'blue' } }] },
        { must_not: [{ key: 'metadata.k', match: { value: 3 } }] },
      ],
    }],
    ['a single condition instead of an array', { must: { key: 'flag', match: { value: true } }, must_not: { key: 'n', match: { value: 5 } } }],
    ['has_id combined with a payload condition', { must: [{ has_id: pts.slice(0, 60).map((p) => p.id) }, { key: 'color', match: { value: 'blue' } }] }],
    ['empty filter object matches all', {}],
  ];

  for (const [name, filter] of cases) {
    it(name, async () => {
      const want = pts.filter((p) => matchesFilter(filter, p));
      if (Object.keys(filter).length) {
        assert.ok(want.length > 0 && want.length < N, `the data set exercises "${name}" (${want.length} of ${N} match)`);
      }
      assert.equal((await client.count(c, { filter, exact: true })).count, want.length, 'count');

      const seen = [];
      let offset;
      for (let guard = 0; guard < 100; guard++) {
        const page = await client.scroll(c, { filter, limit: 25, offset, with_payload: false });
        seen.push(...page.points.map((p) => p.id));
        if (page.next_page_offset == null) break;
        offset = page.next_page_offset;
      }
      assert.deepEqual(seen.map(String), sortIds(want.map((p) => p.id)).map(String), 'scroll');

      for (const q of queries) {
        const ranked = bruteForce(pts, q, 'Dot', { filter });
        const s = await client.search(c, { vector: q, filter, limit: 7, params: { exact: true }, with_payload: false });
        assertRanking(s, ranked, { limit: 7, what: `search ${name}` });
        const qr = await client.query(c, { query: q, filter, limit: 7, params: { exact: true } });
        assertRanking(qr.points, ranked, { limit: 7, what: `query ${name}` });
      }
    });
  }

  it('delete by filter removes exactly the matching points', async () => {
    const filter = { must: [{ key: 'metadata.src', match: { value: 'mail' } }, { key: 'n', range: { lte: 4 } }] };
    const gone = pts.filter((p) => matchesFilter(filter, p));
    assert.ok(gone.length > 0);
    await client.delete(c, { wait: true, filter });
    assert.equal((await client.count(c)).count, N - gone.length);
    assert.equal((await client.count(c, { filter })).count, 0);
    const all = await client.scroll(c, { limit: N });
    assertSameIdSet(all.points, pts.filter((p) => !matchesFilter(filter, p)), 'survivors');
  });

  it('malformed filters are 400', async () => {
    const bad = [
      { must: [{ key: 'n', match: { value: 1, any: [1] } }] },
      { must: [{ key: 'n', range: { gte: 'abc' } }] },
      { must: [{ key: 'n' }] },
      { must: [{ has_id: [-1] }] },
      { must: [{ has_id: ['not-a-uuid'] }] },
      { must: 5 },
      { wrong_clause: [] },
      { min_should: { conditions: [{ key: 'n', match: { value: 1 } }] } },
    ];
    for (const filter of bad) {
      for (const [path, body] of [
        ['scroll', { filter, limit: 1 }],
        ['count', { filter }],
        ['search', { vector: queries[0], limit: 1, filter }],
        ['query', { query: queries[0], limit: 1, filter }],
      ]) {
        assertErrorBody(await http('POST', `/collections/${c}/points/${path}`, body), 400, `${path} with ${JSON.stringify(filter)}`);
      }
    }
  });
});
