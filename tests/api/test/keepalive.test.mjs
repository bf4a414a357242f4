// Kept-alive connections: a client that reuses its connections, after idle
// gaps around the server's connection timeout and between requests of
// different sizes, never gets a reset or an unanswered request (issue 20).
//
// The cause this guards against: the server closes an idle connection after
// its timeout (--conn-timeout-s; 2 s in the test runs), and a client that
// keeps connections longer (the Qdrant client's undici Agent: 10 s, Node's
// fetch: 4 s) may write a request into the socket just as the server closes
// it.  The server therefore tells clients its timeout (Keep-Alive:
// timeout=N on every answer), and undici stops reusing a connection a margin
// (1 s in undici 5, Node 18's fetch; 2 s in undici 6) before it would run out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, buildConnector, fetch as ufetch } from 'undici';
import { BASE_URL, SEED, http, okResult, newClient, CollectionTracker, makeRng } from '../lib/common.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// An Agent configured as the Qdrant client configures its own (keep-alive
// default 10 s, longer than the server's timeout), counting the connections
// it opens.
function countingAgent() {
  const connect = buildConnector({});
  const agent = new Agent({
    connections: 1,
    keepAliveTimeout: 10000,
    keepAliveTimeoutThreshold: 1000, // undici 5's default (6's is 2 s)
    bodyTimeout: 0,
    headersTimeout: 0,
    connect(opts, cb) {
      agent.connects++;
      return connect(opts, cb);
    },
  });
  agent.connects = 0;
  return agent;
}

test('kept-alive connections: no request lost around the idle timeout, whatever the body size', { timeout: 180000 }, async () => {
  const client = newClient();
  const cols = new CollectionTracker(client);
  const rng = makeRng('keepalive');
  const name = await cols.create('ka', { vectors: { size: 8, distance: 'Dot' } });
  try {
    // the server announces its idle timeout on every answer
    const info = await http('GET', `/collections/${name}`);
    okResult(info, 'collection info');
    const m = /^\s*timeout=(\d+)\s*$/.exec(info.headers.get('keep-alive') || '');
    assert.ok(m, `Keep-Alive: timeout=N on the answer, got ${JSON.stringify(info.headers.get('keep-alive'))}`);
    const T = Number(m[1]) * 1000;
    assert.ok(T >= 1000, `timeout ${T} ms`);
    // a 4xx answer carries it too
    const missing = await http('GET', `/collections/${name}_missing`);
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get('keep-alive'), `timeout=${T / 1000}`);

    let nextId = 1;
    const points = (bytes) => {
      const pts = [];
      // about 130 bytes of JSON a point with its payload
      for (let n = 0; n * 130 < bytes; n++)
        pts.push({ id: nextId++, vector: rng.vec(8), payload: { t: 'x'.repeat(40) } });
      return pts;
    };
    // requests of different sizes: a GET, a small search, a 64 KiB and a 1 MiB upsert
    const kinds = [
      { method: 'GET', path: `/collections/${name}` },
      { method: 'POST', path: `/collections/${name}/points/search`, body: () => ({ vector: rng.vec(8), limit: 3 }) },
      { method: 'PUT', path: `/collections/${name}/points?wait=true`, body: () => ({ points: points(64 << 10) }) },
      { method: 'PUT', path: `/collections/${name}/points?wait=true`, body: () => ({ points: points(1 << 20) }) },
    ];
    const send = async (doFetch, k, what) => {
      const kind = kinds[k % kinds.length];
      const init = { method: kind.method, headers: {} };
      if (kind.body) {
        init.body = JSON.stringify(kind.body());
        init.headers['content-type'] = 'application/json';
      }
      let r;
      try {
        r = await doFetch(BASE_URL + kind.path, init);
      } catch (e) {
        throw new Error(`${what}: ${kind.method} ${kind.path} (${init.body?.length ?? 0} bytes) failed: ${e.message} ${e.cause?.code ?? e.cause?.message ?? ''}`);
      }
      const text = await r.text();
      assert.equal(r.status, 200, `${what}: ${text.slice(0, 300)}`);
    };

    // back to back: one connection carries every request (keep-alive works)
    const warm = countingAgent();
    for (let k = 0; k < 8; k++) await send((u, i) => ufetch(u, { ...i, dispatcher: warm }), k, `back-to-back ${k}`);
    assert.equal(warm.connects, 1, 'back-to-back requests share one connection');
    // a gap shorter than the announced timeout less the agent's 1 s margin: still reused
    if (T >= 2000) {
      await sleep((T - 1000) / 2);
      await send((u, i) => ufetch(u, { ...i, dispatcher: warm }), 0, 'short gap');
      assert.equal(warm.connects, 1, 'a connection idle for less than the timeout is reused');
    }
    await warm.close();

    // Idle gaps at the server's timeout, with the client busy when the
    // server closes: lanes in parallel, each its own connection, each round
    // a request of a different size per lane, then an idle gap.  The client
    // sleeps until 30 ms before the earliest lane's connection runs out, then
    // computes (a busy loop, as a client doing its own work would) until
    // 15 ms after the last one has, so the server's close (measured: T + 0..5
    // ms after its answer) arrives while the client cannot see it, and then
    // every lane sends at once.  A connection the client still believes open
    // is written into after the server closed it: a reset, unless the client
    // knew to stop reusing it (the Keep-Alive hint).  Then one wider gap each
    // side of T.
    const LANES = 12, ROUNDS = 3;
    const failures = [];
    let sent = 0;
    const lanes = Array.from({ length: LANES }, (_, l) => {
      // half the lanes through the Qdrant client's kind of Agent, half through Node's own fetch
      const agent = l % 2 === 0 ? countingAgent() : null;
      return { agent, doFetch: agent ? (u, i) => ufetch(u, { ...i, dispatcher: agent }) : (u, i) => fetch(u, i) };
    });
    const round = async (r, what) => {
      const done = await Promise.all(lanes.map(async (ln, l) => {
        sent++;
        try {
          await send(ln.doFetch, l + r, `lane ${l} ${what}`);
        } catch (e) {
          failures.push(e.message);
        }
        return performance.now();
      }));
      return { first: Math.min(...done), last: Math.max(...done) };
    };
    try {
      // The agents open a fresh connection after every such gap: they stop
      // reusing one a margin before the server's timeout, as it announced.
      const connects = () => lanes.filter((ln) => ln.agent).map((ln) => ln.agent.connects);
      const fresh = (before, what) => {
        const after = connects();
        assert.ok(after.every((c, i) => c === before[i] + 1),
          `${what}: each agent opens one new connection (before ${before}, after ${after})`);
      };
      let t = await round(0, 'first request');
      for (let r = 1; r <= ROUNDS; r++) {
        await sleep(Math.max(0, t.first + T - 30 - performance.now()));
        while (performance.now() < t.last + T + 15); // busy: the closes arrive unseen
        const before = connects();
        t = await round(r, `after an idle gap of the server's timeout (${T} ms), round ${r}`);
        fresh(before, `round ${r}`);
      }
      for (const gap of [T - 500, T + 300]) {
        await sleep(Math.max(0, t.last + gap - performance.now()));
        const before = connects();
        t = await round(ROUNDS + 1, `after an idle gap of ${gap} ms`);
        fresh(before, `gap ${gap} ms`);
      }
    } finally {
      for (const ln of lanes) if (ln.agent) await ln.agent.close();
    }
    console.log(`keepalive: seed ${SEED}, server timeout ${T} ms, ${sent} requests in ${LANES} lanes, ${ROUNDS} rounds at the timeout with the client busy, ${failures.length} failed`);
    assert.deepEqual(failures, [], 'every request after an idle gap is answered');
  } finally {
    await cols.dropAll();
  }
});
