// Transport limits of vectron serve, as tests/api/run.sh starts it:
// --max-body-bytes 8388608 (8 MiB) and --conn-timeout-s 4 (read back from
// the Keep-Alive: timeout=N the server announces).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { BASE_URL, http, assertErrorBody, newClient, CollectionTracker } from '../lib/common.mjs';

const url = new URL(BASE_URL);
const client = newClient();
const cols = new CollectionTracker(client);

function rawExchange(payload, { waitMs = 10000 } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect(Number(url.port), url.hostname);
    let data = '';
    const t0 = Date.now();
    const timer = setTimeout(() => { sock.destroy(); resolve({ data, closed: false, ms: Date.now() - t0 }); }, waitMs);
    sock.on('data', (d) => { data += d.toString(); });
    sock.on('close', () => { clearTimeout(timer); resolve({ data, closed: true, ms: Date.now() - t0 }); });
    sock.on('error', () => {});
    sock.on('connect', () => { if (payload) sock.write(payload); });
  });
}

describe('transport limits', { timeout: 60000 }, () => {
  it('a body over the limit is refused with 413 and a JSON error, before it is read', async () => {
    // announce 64 MiB but send only the headers: the answer must come anyway
    const r = await rawExchange(`PUT /collections/x/points HTTP/1.1\r\nHost: ${url.host}\r\n` +
      'Content-Type: application/json\r\nContent-Length: 67108864\r\n\r\n', { waitMs: 8000 });
    assert.match(r.data, /^HTTP\/1\.1 413/, `status line: ${r.data.slice(0, 80)}`);
    const body = r.data.slice(r.data.indexOf('\r\n\r\n') + 4);
    assert.ok(JSON.parse(body).status.error.includes('too large'), body);
  });

  it('a body over the limit without Content-Length (chunked) is 413 too', async () => {
    const c = await cols.create('limits', { vectors: { size: 2, distance: 'Dot' } });
    const big = 'x'.repeat(9 * 1024 * 1024);
    const res = await fetch(`${BASE_URL}/collections/${c}/points?wait=true`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: new ReadableStream({ start(ctl) { ctl.enqueue(new TextEncoder().encode(`{"points":[],"pad":"${big}"}`)); ctl.close(); } }),
      duplex: 'half',
    });
    assert.equal(res.status, 413);
    assert.ok((await res.json()).status.error.includes('too large'));
    assert.equal((await client.count(c)).count, 0);
    await cols.dropAll();
  });

  it('a body just under the limit is accepted', async () => {
    const c = await cols.create('limits_ok', { vectors: { size: 2, distance: 'Dot' } });
    const pad = 'y'.repeat(7 * 1024 * 1024);
    const res = await http('PUT', `/collections/${c}/points?wait=true`,
      `{"points":[{"id":1,"vector":[1,2],"payload":{"pad":"${pad}"}}]}`);
    assert.equal(res.status, 200, res.text.slice(0, 200));
    await cols.dropAll();
  });

  it('JSON nested deeper than 64 levels is 400', async () => {
    const deep = '{"filter":' + '{"must":['.repeat(70) + ']}'.repeat(70) + '}';
    assertErrorBody(await http('POST', '/collections/anything/points/count', deep), 400, 'depth');
  });

  // the idle timeout the server announces (Keep-Alive: timeout=N), in ms
  const idleTimeout = async () => {
    const m = /timeout=(\d+)/.exec((await http('GET', '/healthz')).headers.get('keep-alive') || '');
    assert.ok(m, 'the server announces its idle timeout');
    return Number(m[1]) * 1000;
  };

  it('an idle connection is closed after the connection timeout', async () => {
    const T = await idleTimeout();
    const r = await rawExchange(null, { waitMs: T + 8000 });
    assert.ok(r.closed, 'the server must close an idle connection');
    assert.ok(r.ms >= T - 500 && r.ms < T + 7000, `closed after ${r.ms} ms (timeout ${T} ms)`);
  });

  it('a slow client (headers never finished) is closed after the timeout', async () => {
    const T = await idleTimeout();
    const r = await rawExchange(`POST /collections HTTP/1.1\r\nHost: ${url.host}\r\n`, { waitMs: T + 8000 });
    assert.ok(r.closed, 'the server must close a connection whose request never completes');
    assert.ok(r.ms < T + 7000, `closed after ${r.ms} ms`);
  });
});

describe('strict framing and clean text (issue 13)', { timeout: 60000 }, () => {
  const h = `Host: ${url.host}\r\n`;
  const body = '{"vectors":{"size":2,"distance":"Dot"}}';
  // each: 400 with a JSON error, then the connection closed (what a proxy
  // and the server could read differently is never acted on)
  const refused = [
    ['two Content-Length headers', `PUT /collections/smuggle1 HTTP/1.1\r\n${h}Content-Type: application/json\r\nContent-Length: ${body.length}\r\nContent-Length: ${body.length}\r\n\r\n${body}`, /more than one Content-Length/],
    ['whitespace before the colon', `PUT /collections/smuggle2 HTTP/1.1\r\n${h}Content-Type: application/json\r\nContent-Length : ${body.length}\r\n\r\n${body}`, /header name/],
    ['Content-Length with Transfer-Encoding', `PUT /collections/smuggle3 HTTP/1.1\r\n${h}Content-Type: application/json\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`, /both Content-Length and Transfer-Encoding/],
    ['a Transfer-Encoding other than chunked', `PUT /collections/smuggle6 HTTP/1.1\r\n${h}Content-Type: application/json\r\nTransfer-Encoding: gzip\r\n\r\n${body}`, /only Transfer-Encoding accepted is chunked/],
    ['%00 in a collection name', `GET /collections/smuggle4%00tail HTTP/1.1\r\n${h}\r\n`, /control character/],
    ['a control byte in a query argument', `GET /collections/smuggle5?wait=%01 HTTP/1.1\r\n${h}\r\n`, /control character/],
  ];
  for (const [what, raw, msg] of refused) {
    it(`${what}: 400 and the connection closed`, async () => {
      const r = await rawExchange(raw, { waitMs: 15000 });
      assert.match(r.data, /^HTTP\/1\.1 400 /, `${what}: ${r.data.slice(0, 200)}`);
      assert.ok(r.closed, `${what}: the connection is closed`);
      const text = r.data.slice(r.data.indexOf('\r\n\r\n') + 4);
      assert.match(JSON.parse(text).status.error, msg);
      assert.equal((r.data.match(/HTTP\/1\.1 /g) || []).length, 1, `${what}: one answer, no second request read from the body`);
    });
  }
  it('nothing of the refused requests was acted on', async () => {
    for (const n of ['smuggle1', 'smuggle2', 'smuggle3', 'smuggle6'])
      assert.equal((await client.collectionExists(n)).exists, false, n);
  });

  it('a body that is not UTF-8 is 400 and changes nothing; multi-byte UTF-8 round-trips', async () => {
    const c = await cols.create('utf8', { vectors: { size: 2, distance: 'Dot' } });
    const bad = Buffer.concat([Buffer.from('{"points":[{"id":1,"vector":[1,2],"payload":{"s":"'), Buffer.from([0xff, 0xfe, 0xed, 0xa0, 0x80]), Buffer.from('"}}]}')]);
    const res = await fetch(`${BASE_URL}/collections/${c}/points?wait=true`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: bad });
    assert.equal(res.status, 400);
    assert.match((await res.json()).status.error, /UTF-8/);
    assert.equal((await client.count(c, { exact: true })).count, 0);
    // an encoded surrogate (ED A0 80) alone is refused too
    const sur = Buffer.concat([Buffer.from('{"points":[{"id":2,"vector":[1,2],"payload":{"s":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}}]}')]);
    assert.equal((await fetch(`${BASE_URL}/collections/${c}/points?wait=true`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: sur })).status, 400);
    const s = 'héllo ✓ 😀 日本';
    await client.upsert(c, { wait: true, points: [{ id: 3, vector: [1, 2], payload: { s } }] });
    const [p] = await client.retrieve(c, { ids: [3], with_payload: true });
    assert.equal(p.payload.s, s);
    await cols.dropAll();
  });
});
