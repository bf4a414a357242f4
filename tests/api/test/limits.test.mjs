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
