// Updates that never degrade the database (issue 14): the collection's
// optimizers_config is real (set at create, changed by PATCH, reported from
// what is stored), and overwrites and deletes are compacted away in the
// background: deleted index nodes go back to 0, the compactions are counted
// in /metrics, searches keep answering exactly over the live points, and the
// server's memory does not grow round after round.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BASE_URL, SEED, http, okResult, newClient, CollectionTracker, makeRng } from '../lib/common.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const DIM = 16;

async function metricSum(name, collection) {
  const text = (await http('GET', '/metrics')).text;
  let sum = 0, seen = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) || !line.includes(`collection="${collection}"`)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    seen = true;
  }
  return seen ? sum : NaN;
}

const dist2 = (a, b) => a.reduce((s, x, i) => s + (x - b[i]) ** 2, 0);

test('optimizers_config is stored, patched and honoured: churn is compacted in the background', { timeout: 240000 }, async () => {
  const client = newClient();
  const cols = new CollectionTracker(client);
  const rng = makeRng('churn');
  const name = await cols.create('churn', {
    vectors: { size: DIM, distance: 'Euclid' },
    shard_number: 2,
    optimizers_config: { deleted_threshold: 0.5, vacuum_min_vector_number: 100000 },
  });
  try {
    let info = await client.getCollection(name);
    assert.equal(info.config.optimizer_config.deleted_threshold, 0.5);
    assert.equal(info.config.optimizer_config.vacuum_min_vector_number, 100000);
    const bad = await http('PATCH', `/collections/${name}`, { optimizers_config: { deleted_threshold: 1.5 } });
    assert.equal(bad.status, 400, bad.text);

    const N = 2000;
    const live = new Map();
    const upsert = async (ids) => {
      for (let i = 0; i < ids.length; i += 500) {
        const points = ids.slice(i, i + 500).map((id) => ({ id, vector: rng.vec(DIM) }));
        await client.upsert(name, { wait: true, points });
        for (const p of points) live.set(p.id, p.vector);
      }
    };
    const all = Array.from({ length: N }, (_, i) => i + 1);
    await upsert(all);
    // overwrite every point: under this policy (at least 100000 deleted)
    // nothing is compacted, and the deleted nodes are counted
    await upsert(all);
    let deleted = 0;
    for (const t0 = Date.now(); Date.now() - t0 < 60000; await sleep(200)) {
      deleted = await metricSum('vectron_shard_deleted_nodes', name);
      if (deleted >= N) break;
    }
    assert.equal(deleted, N, 'an overwrite leaves one deleted node per point until compaction');
    assert.equal(await metricSum('vectron_shard_compactions_total', name), 0);

    // lower the bar: the deleted nodes are compacted away in the background
    okResult(await http('PATCH', `/collections/${name}`, { optimizers_config: { deleted_threshold: 0.1, vacuum_min_vector_number: 50 } }), 'patch');
    info = await client.getCollection(name);
    assert.equal(info.config.optimizer_config.deleted_threshold, 0.1, 'reported from what is stored');
    assert.equal(info.config.optimizer_config.vacuum_min_vector_number, 50);
    const waitCompacted = async (what) => {
      for (const t0 = Date.now(); Date.now() - t0 < 60000; await sleep(200)) {
        const [d, status] = [await metricSum('vectron_shard_deleted_nodes', name), (await client.getCollection(name)).status];
        if (d === 0 && status === 'green') return;
      }
      assert.fail(`${what}: deleted nodes ${await metricSum('vectron_shard_deleted_nodes', name)} after 60 s`);
    };
    await waitCompacted('after the PATCH');
    assert.ok(await metricSum('vectron_shard_compactions_total', name) >= 1);
    assert.ok(await metricSum('vectron_shard_compacted_slots_total', name) >= N);

    // rounds of churn: delete half, overwrite the rest, re-insert; each
    // compacted in the background while searches keep answering exactly
    for (let round = 0; round < 3; round++) {
      const half = all.filter((id) => (id + round) % 2 === 0);
      await client.delete(name, { wait: true, points: half });
      for (const id of half) live.delete(id);
      await upsert(all.filter((id) => (id + round) % 2 === 1));
      await upsert(half);
      const q = rng.vec(DIM);
      const hits = await client.search(name, { vector: q, limit: 10, params: { exact: true } });
      const want = [...live.entries()].sort((a, b) => dist2(a[1], q) - dist2(b[1], q)).slice(0, 10).map((e) => e[0]);
      assert.deepEqual(hits.map((h) => h.id), want, `round ${round}: exact search over the live points`);
      await waitCompacted(`round ${round}`);
      const graph = await client.search(name, { vector: q, limit: 10 });
      assert.ok(graph.filter((h) => want.includes(h.id)).length >= 9, `round ${round}: graph search after compaction`);
      assert.equal((await client.count(name, { exact: true })).count, N);
    }
    console.log(`churn: seed ${SEED} ${BASE_URL}: ${await metricSum('vectron_shard_compactions_total', name)} compactions, ${await metricSum('vectron_shard_compacted_slots_total', name)} slots freed`);
  } finally {
    await cols.dropAll();
  }
});
