// Service-level routes: GET / (version info), health probes, the client's
// version check, bad JSON and unknown routes.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { QdrantClient } from '@qdrant/js-client-rest';
import {
  BASE_URL, http, okResult, assertErrorBody, newClient, CollectionTracker,
} from '../lib/common.mjs';

const CLIENT_VERSION = '1.18.0'; // the pinned @qdrant/js-client-rest

describe('service', { timeout: 60000 }, () => {
  const client = newClient();
  const cols = new CollectionTracker(client);
  after(() => cols.dropAll());

  it('GET / returns version info without the envelope', async () => {
    const res = await http('GET', '/');
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers.get('content-type') || '', /application\/json/);
    const body = res.json;
    assert.equal(typeof body.title, 'string');
    assert.ok(body.title.length > 0);
    assert.equal(typeof body.version, 'string');
    assert.match(body.version, /^\d+\.\d+\.\d+/);
    assert.ok(!('result' in body), 'GET / must not be wrapped in {result,...} (compat doc §2.2)');
    // The client accepts the server when majors match and minors differ by <= 1.
    const [maj, min] = body.version.split('.').map(Number);
    const [cmaj, cmin] = CLIENT_VERSION.split('.').map(Number);
    assert.equal(maj, cmaj, `server major ${body.version} vs client ${CLIENT_VERSION}`);
    assert.ok(Math.abs(min - cmin) <= 1, `server minor ${body.version} too far from client ${CLIENT_VERSION}`);
  });

  it('client.versionInfo() reads the same version', async () => {
    const info = await client.versionInfo();
    const raw = await http('GET', '/');
    assert.equal(info.version, raw.json.version);
    assert.equal(info.title, raw.json.title);
  });

  it('the client constructor version check passes without a warning', async () => {
    const warnings = [];
    const seen = [];
    const origWarn = console.warn;
    const origFetch = globalThis.fetch;
    console.warn = (...a) => warnings.push(a.join(' '));
    globalThis.fetch = (url, init) => {
      const p = origFetch(url, init);
      seen.push({ url: String(url), p: p.then((r) => r.clone().text()) });
      return p;
    };
    try {
      new QdrantClient({ url: BASE_URL, checkCompatibility: true });
      await Promise.allSettled(seen.map((s) => s.p));
      // Let the client's .then() on the parsed response run.
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      console.warn = origWarn;
      globalThis.fetch = origFetch;
    }
    assert.ok(seen.some((s) => new URL(s.url).pathname === '/'), 'the constructor did not call GET /');
    assert.deepEqual(warnings, [], `client warned: ${warnings.join(' | ')}`);
  });

  for (const path of ['/healthz', '/livez', '/readyz']) {
    it(`GET ${path} is 200 with a text body`, async () => {
      const res = await http('GET', path);
      assert.equal(res.status, 200, res.text);
      assert.ok(res.text.trim().length > 0, `${path} body is empty`);
    });
  }

  it('health probes through client.api()', async () => {
    for (const op of ['healthz', 'livez', 'readyz']) {
      const r = await client.api()[op]({});
      assert.equal(r.status, 200, op);
    }
  });

  it('GET /collections has the {result, status, time} envelope', async () => {
    const result = okResult(await http('GET', '/collections'), 'GET /collections');
    assert.ok(Array.isArray(result.collections), 'result.collections must be an array');
    for (const c of result.collections) assert.equal(typeof c.name, 'string');
  });

  it('bad JSON bodies are 400 with Qdrant\'s error body', async () => {
    const name = cols.name('badjson');
    // Not JSON at all, truncated JSON, a trailing comma and a bare NaN.
    for (const body of ['{not json', '{"vectors":{"size":4,"distance":"Cosine"}', '{"vectors":{"size":4,"distance":"Cosine",}}', '{"vectors":{"size":NaN,"distance":"Cosine"}}']) {
      const res = await http('PUT', `/collections/${name}`, body);
      assertErrorBody(res, 400, `PUT /collections with body ${body}`);
    }
    // Nothing was created by the rejected requests.
    assert.equal((await client.collectionExists(name)).exists, false);
    const c2 = await cols.create('badjson2', { vectors: { size: 4, distance: 'Cosine' } });
    for (const [method, path, body] of [
      ['PUT', `/collections/${c2}/points?wait=true`, '{"points":[{"id":1,"vector":[1,2,3,4]}'],
      ['POST', `/collections/${c2}/points/search`, '[1,2'],
      ['POST', `/collections/${c2}/points/query`, '{"query":[1,2,3,4],}'],
      ['POST', `/collections/${c2}/points/scroll`, 'limit=3'],
    ]) {
      assertErrorBody(await http(method, path, body), 400, `${method} ${path} ${body}`);
    }
  });

  it('an unknown route is 404', async () => {
    const res = await http('GET', '/no/such/route/here');
    assert.equal(res.status, 404, res.text);
  });
});
