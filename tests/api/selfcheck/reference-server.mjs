// A small in-memory server that follows ../../shared/reference/qdrant-rest-compat.md
// as these tests read it.  It exists only to check the test suite itself
// (plumbing, expectations, flakiness) without the C server:
//
//   node selfcheck/reference-server.mjs PORT
//
// It is not Vectron and says nothing about Vectron: every search is brute
// force, nothing is persisted.
import http from 'node:http';
import { matchesFilter } from '../lib/reference.mjs';

/* ---------------- JSON with u64 ---------------- */
class BadJson extends Error {}
function parseJson(text) {
  let i = 0;
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
  const fail = (m) => { throw new BadJson(`${m} at ${i}`); };
  const value = (depth) => {
    if (depth > 64) fail('too deep');
    ws();
    const ch = text[i];
    if (ch === '{') {
      i++; const o = {}; ws();
      if (text[i] === '}') { i++; return o; }
      for (;;) {
        ws(); if (text[i] !== '"') fail('key');
        const k = str(); ws(); if (text[i] !== ':') fail(':'); i++;
        o[k] = value(depth + 1); ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === '}') { i++; return o; }
        fail('object');
      }
    }
    if (ch === '[') {
      i++; const a = []; ws();
      if (text[i] === ']') { i++; return a; }
      for (;;) {
        a.push(value(depth + 1)); ws();
        if (text[i] === ',') { i++; continue; }
        if (text[i] === ']') { i++; return a; }
        fail('array');
      }
    }
    if (ch === '"') return str();
    if (text.startsWith('true', i)) { i += 4; return true; }
    if (text.startsWith('false', i)) { i += 5; return false; }
    if (text.startsWith('null', i)) { i += 4; return null; }
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!m) fail('value');
    i += m[0].length;
    if (!m[2] && !m[3]) {
      const b = BigInt(m[0]);
      return (b > BigInt(Number.MAX_SAFE_INTEGER) || b < -BigInt(Number.MAX_SAFE_INTEGER)) ? b : Number(m[0]);
    }
    return Number(m[0]);
  };
  const str = () => {
    const start = i; i++;
    let esc = false;
    for (; i < text.length; i++) {
      if (esc) { esc = false; continue; }
      if (text[i] === '\\') esc = true;
      else if (text[i] === '"') { i++; return JSON.parse(text.slice(start, i)); }
    }
    fail('string');
  };
  const v = value(0); ws();
  if (i !== text.length) fail('trailing text');
  return v;
}
function toJson(v) {
  return JSON.stringify(v, (k, x) => (typeof x === 'bigint' ? `@@BIG${x}@@` : x)).replace(/"@@BIG(\d+)@@"/g, '$1');
}

/* ---------------- ids ---------------- */
class Bad extends Error { constructor(m, code = 400) { super(m); this.code = code; } }
const U64MAX = (1n << 64n) - 1n;
const UUID_RE = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
function parseId(v, { allowString = false } = {}) {
  if (typeof v === 'bigint') { if (v < 0n || v > U64MAX) throw new Bad(`bad id ${v}`); return { key: `n:${v}`, out: v, num: v }; }
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0) throw new Bad(`value ${v} is not a valid point ID, valid values are either an unsigned integer or a UUID`);
    return { key: `n:${BigInt(v)}`, out: v, num: BigInt(v) };
  }
  if (typeof v === 'string') {
    if (UUID_RE.test(v)) {
      const h = v.replace(/-/g, '').toLowerCase();
      const u = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
      return { key: `u:${u}`, out: u };
    }
    if (allowString && v.length >= 1 && Buffer.byteLength(v) <= 255) return { key: `s:${v}`, out: v };
    throw new Bad(`value ${v} is not a valid point ID, valid values are either an unsigned integer or a UUID`);
  }
  throw new Bad('value is not a valid point ID, valid values are either an unsigned integer or a UUID');
}
function idFromPath(s) {
  if (/^\d+$/.test(s)) { const b = BigInt(s); if (b > U64MAX) throw new Bad('bad id'); return parseId(b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b); }
  return parseId(s);
}
function cmpKeys(a, b) {
  const ra = { n: 0, u: 1, s: 2 }[a.key[0]];
  const rb = { n: 0, u: 1, s: 2 }[b.key[0]];
  if (ra !== rb) return ra - rb;
  if (ra === 0) return a.num < b.num ? -1 : a.num > b.num ? 1 : 0;
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

/* ---------------- validation helpers ---------------- */
const F32MAX = 3.4028234663852886e38;
function vector(v, dim) {
  if (!Array.isArray(v)) throw new Bad('vector must be an array of numbers');
  if (v.length !== dim) throw new Bad(`Wrong input: Vector dimension error: expected dim: ${dim}, got ${v.length}`);
  return v.map((x) => {
    if (typeof x !== 'number' || !Number.isFinite(x) || Math.abs(x) > F32MAX) throw new Bad('vector components must be finite float32 numbers');
    return Math.fround(x);
  });
}
function uint(v, what, { max = Infinity, def } = {}) {
  if (v === undefined || v === null) { if (def === undefined) throw new Bad(`${what} is required`); return def; }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new Bad(`${what} must be an unsigned integer`);
  if (v > max) throw new Bad(`${what} must be at most ${max}`);
  return v;
}
function payloadObj(p) {
  if (p === undefined || p === null) return {};
  if (typeof p !== 'object' || Array.isArray(p)) throw new Bad('payload must be an object');
  return p;
}
function checkFilter(f, depth = 0) {
  if (depth > 16) throw new Bad('filter too deep');
  if (f === null || f === undefined) return;
  if (typeof f !== 'object' || Array.isArray(f)) throw new Bad('filter must be an object');
  for (const k of Object.keys(f)) if (!['must', 'should', 'must_not', 'min_should'].includes(k)) throw new Bad(`unknown filter clause "${k}"`);
  const list = (x, what) => {
    if (x === undefined || x === null) return;
    if (Array.isArray(x)) x.forEach((c) => checkCond(c, depth + 1));
    else if (typeof x === 'object') checkCond(x, depth + 1);
    else throw new Bad(`"${what}" must be an array of conditions`);
  };
  list(f.must, 'must'); list(f.should, 'should'); list(f.must_not, 'must_not');
  if (f.min_should !== undefined && f.min_should !== null) {
    const m = f.min_should;
    if (!Array.isArray(m.conditions)) throw new Bad('min_should.conditions must be an array');
    uint(m.min_count, 'min_should.min_count');
    m.conditions.forEach((c) => checkCond(c, depth + 1));
  }
}
function checkCond(c, depth) {
  if (!c || typeof c !== 'object' || Array.isArray(c)) throw new Bad('a condition must be an object');
  if (['must', 'should', 'must_not', 'min_should'].some((k) => k in c)) return checkFilter(c, depth);
  if ('has_id' in c) { if (!Array.isArray(c.has_id)) throw new Bad('has_id must be an array'); c.has_id.forEach((x) => parseId(x)); return; }
  if ('is_empty' in c || 'is_null' in c) { const o = c.is_empty ?? c.is_null; if (!o || typeof o.key !== 'string') throw new Bad('is_empty/is_null need a key'); return; }
  if (typeof c.key !== 'string') throw new Bad('condition needs a key');
  if (('match' in c) === ('range' in c)) throw new Bad('condition needs exactly one of match, range');
  if (c.match) {
    const ks = ['value', 'any', 'except'].filter((k) => k in c.match);
    if (ks.length !== 1) throw new Bad('match needs exactly one of value, any, except');
    if ('value' in c.match && !['string', 'number', 'boolean'].includes(typeof c.match.value)) throw new Bad('bad match value');
    if (('any' in c.match && !Array.isArray(c.match.any)) || ('except' in c.match && !Array.isArray(c.match.except))) throw new Bad('any/except need arrays');
  } else {
    if (!c.range || typeof c.range !== 'object') throw new Bad('bad range');
    for (const [k, v] of Object.entries(c.range)) {
      if (!['gt', 'gte', 'lt', 'lte'].includes(k)) throw new Bad(`bad range key ${k}`);
      if (v !== null && typeof v !== 'number') throw new Bad('range values must be numbers');
    }
  }
}
function selectPayload(payload, wp) {
  if (wp === true) return payload;
  if (Array.isArray(wp)) return Object.fromEntries(Object.entries(payload).filter(([k]) => wp.includes(k)));
  if (wp && typeof wp === 'object') {
    if (Array.isArray(wp.include)) return selectPayload(payload, wp.include);
    if (Array.isArray(wp.exclude)) return Object.fromEntries(Object.entries(payload).filter(([k]) => !wp.exclude.includes(k)));
  }
  throw new Bad('bad with_payload');
}

/* ---------------- state ---------------- */
const collections = new Map();
let opId = 0;
const VERSION = '1.18.0';
const DISTANCES = ['Cosine', 'Euclid', 'Dot', 'Manhattan'];

function coll(name) {
  const c = collections.get(name);
  if (!c) throw new Bad(`Not found: Collection \`${name}\` doesn't exist!`, 404);
  return c;
}
function norm32(v) {
  let s = 0; for (const x of v) s += x * x;
  const n = Math.sqrt(s);
  return v.map((x) => Math.fround(x / n));
}
function score(c, a, b) {
  const d = c.config.params.vectors.distance;
  if (d === 'Cosine' || d === 'Dot') { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * b[i]; return s; }
  if (d === 'Euclid') { let s = 0; for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2; return Math.sqrt(s); }
  let s = 0; for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]); return s;
}
const higher = (c) => ['Cosine', 'Dot'].includes(c.config.params.vectors.distance);

function record(p, wp, wv) {
  const r = { id: p.id.out };
  if (wp !== false && wp !== undefined && wp !== null) r.payload = selectPayload(p.payload, wp);
  if (wv === true) r.vector = p.vector;
  return r;
}
function asPoint(p) { return { id: p.id.out, payload: p.payload }; }
function filtered(c, filter) {
  checkFilter(filter);
  return [...c.points.values()].filter((p) => !filter || matchesFilter(filter, asPoint(p)));
}

function upsertPoints(c, list, { allowString = false } = {}) {
  const dim = c.config.params.vectors.size;
  const prepared = list.map((p) => {
    if (!p || typeof p !== 'object') throw new Bad('bad point');
    const id = parseId(p.id, { allowString });
    let v = vector(p.vector, dim);
    if (c.config.params.vectors.distance === 'Cosine') v = norm32(v);
    return { id, vector: v, payload: payloadObj(p.payload) };
  });
  for (const p of prepared) c.points.set(p.id.key, p);
  return prepared.length;
}
function selectPoints(c, body) {
  if (Array.isArray(body.points)) return body.points.map((x) => c.points.get(parseId(x).key)).filter(Boolean);
  if (body.filter !== undefined) return filtered(c, body.filter);
  throw new Bad('either points or filter must be given');
}
function updateResult(waited) { return { operation_id: opId++, status: waited ? 'completed' : 'acknowledged' }; }

function searchCore(c, { vec, filter, limit, offset, threshold, wp, wv }) {
  const dim = c.config.params.vectors.size;
  let q = vector(vec, dim);
  if (c.config.params.vectors.distance === 'Cosine') q = norm32(q);
  const hb = higher(c);
  let res = filtered(c, filter).map((p) => ({ p, s: score(c, p.vector, q) }));
  if (threshold !== undefined && threshold !== null) res = res.filter((r) => (hb ? r.s >= threshold : r.s <= threshold));
  res.sort((a, b) => (hb ? b.s - a.s : a.s - b.s));
  return res.slice(offset, offset + limit).map((r) => ({ ...record(r.p, wp, wv), version: 0, score: r.s }));
}

/* ---------------- routes ---------------- */
function route(method, parts, query, body) {
  const wait = query.get('wait') === 'true';
  if (parts.length === 0 && method === 'GET') return { raw: { title: 'qdrant - vector search engine', version: VERSION, commit: 'selfcheck' } };
  if (parts.length === 1 && ['healthz', 'livez', 'readyz'].includes(parts[0]) && method === 'GET') return { text: 'ok' };
  if (parts[0] === 'v1') {
    if (parts[1] !== 'collections' || parts[3] !== 'points' || method !== 'POST') throw new Bad('not found', 404);
    const c = coll(parts[2]);
    if (parts.length === 4) {
      if (!Array.isArray(body?.points)) throw new Bad('points must be an array');
      return { raw: { upserted: upsertPoints(c, body.points, { allowString: true }) } };
    }
    if (parts.length === 5 && parts[4] === 'search') {
      const limit = uint(body.top_k, 'top_k', { max: 10000, def: 10 });
      const res = searchCore(c, { vec: body.vector, limit, offset: 0, wp: true });
      return { raw: { results: res.map((r) => ({ id: r.id, score: r.score, payload: r.payload })) } };
    }
    throw new Bad('not found', 404);
  }
  if (parts[0] !== 'collections') throw new Bad('not found', 404);
  if (parts.length === 1 && method === 'GET') return { result: { collections: [...collections.keys()].map((name) => ({ name })) } };
  const name = parts[1];
  if (parts.length === 2) {
    if (method === 'PUT') {
      if (collections.has(name)) throw new Bad(`Wrong input: Collection \`${name}\` already exists!`, 409);
      const v = body?.vectors;
      if (!v || typeof v !== 'object') throw new Bad('vectors is required');
      const size = uint(v.size, 'vectors.size', { max: 65536 });
      if (size < 1) throw new Bad('vectors.size must be at least 1');
      if (!DISTANCES.includes(v.distance)) throw new Bad('bad distance');
      const q = body.quantization_config;
      if (q && !(q.scalar && q.scalar.type === 'int8')) throw new Bad('unsupported quantization_config');
      collections.set(name, {
        points: new Map(),
        indexes: new Map(),
        config: {
          params: { vectors: { size, distance: v.distance }, shard_number: body.shard_number ?? 1, replication_factor: body.replication_factor ?? 1, write_consistency_factor: 1, on_disk_payload: true },
          hnsw_config: { m: 16, ef_construct: 100, full_scan_threshold: 10000, max_indexing_threads: 0, on_disk: false, ...(body.hnsw_config || {}) },
          optimizer_config: { deleted_threshold: 0.2, vacuum_min_vector_number: 1000, default_segment_number: 0, indexing_threshold: 20000, flush_interval_sec: 5, ...(body.optimizers_config || {}) },
          wal_config: { wal_capacity_mb: 32, wal_segments_ahead: 0 },
          quantization_config: q || null,
        },
      });
      return { result: true };
    }
    if (method === 'GET') {
      const c = coll(name);
      const payload_schema = {};
      for (const [f, t] of c.indexes) payload_schema[f] = { data_type: t, points: [...c.points.values()].filter((p) => f in p.payload).length };
      return { result: { status: 'green', optimizer_status: 'ok', segments_count: 1, points_count: c.points.size, indexed_vectors_count: c.points.size, config: c.config, payload_schema } };
    }
    if (method === 'PATCH') {
      const c = coll(name);
      if (body.hnsw_config) Object.assign(c.config.hnsw_config, body.hnsw_config);
      if (body.optimizers_config) Object.assign(c.config.optimizer_config, body.optimizers_config);
      return { result: true };
    }
    if (method === 'DELETE') return { result: collections.delete(name) };
  }
  if (parts.length === 3 && parts[2] === 'exists' && method === 'GET') return { result: { exists: collections.has(name) } };
  const c = coll(name);
  const sub = parts.slice(2).join('/');
  if (sub === 'index' && method === 'PUT') {
    if (!['keyword', 'integer', 'float', 'bool', 'geo', 'text', 'datetime', 'uuid'].includes(body.field_schema)) throw new Bad('bad field_schema');
    c.indexes.set(body.field_name, body.field_schema);
    return { result: updateResult(wait) };
  }
  if (parts[2] === 'index' && parts.length === 4 && method === 'DELETE') { c.indexes.delete(parts[3]); return { result: updateResult(wait) }; }
  if (sub === 'points' && method === 'PUT') {
    if (Array.isArray(body.points)) upsertPoints(c, body.points);
    else if (body.batch) {
      const { ids, vectors, payloads } = body.batch;
      if (!Array.isArray(ids) || !Array.isArray(vectors) || ids.length !== vectors.length || (payloads && payloads.length !== ids.length)) throw new Bad('batch lengths differ');
      upsertPoints(c, ids.map((id, i) => ({ id, vector: vectors[i], payload: payloads?.[i] })));
    } else throw new Bad('points or batch required');
    return { result: updateResult(wait) };
  }
  if (sub === 'points' && method === 'POST') {
    if (!Array.isArray(body.ids)) throw new Bad('ids required');
    const keys = body.ids.map((x) => parseId(x).key);
    return { result: keys.map((k) => c.points.get(k)).filter(Boolean).map((p) => record(p, body.with_payload ?? true, body.with_vector)) };
  }
  if (parts[2] === 'points' && parts.length === 4 && method === 'GET' && !['search', 'query', 'scroll', 'count'].includes(parts[3])) {
    const p = c.points.get(idFromPath(decodeURIComponent(parts[3])).key);
    if (!p) throw new Bad('Not found: point not found', 404);
    return { result: record(p, true, true) };
  }
  if (sub === 'points/delete' && method === 'POST') {
    for (const p of selectPoints(c, body)) c.points.delete(p.id.key);
    return { result: updateResult(wait) };
  }
  if (sub === 'points/payload' && (method === 'POST' || method === 'PUT')) {
    const pl = body.payload;
    if (!pl || typeof pl !== 'object' || Array.isArray(pl)) throw new Bad('payload must be an object');
    for (const p of selectPoints(c, body)) p.payload = method === 'POST' ? { ...p.payload, ...pl } : { ...pl };
    return { result: updateResult(wait) };
  }
  if (sub === 'points/payload/delete' && method === 'POST') {
    if (!Array.isArray(body.keys)) throw new Bad('keys must be a list');
    for (const p of selectPoints(c, body)) for (const k of body.keys) delete p.payload[k];
    return { result: updateResult(wait) };
  }
  if (sub === 'points/payload/clear' && method === 'POST') {
    for (const p of selectPoints(c, body)) p.payload = {};
    return { result: updateResult(wait) };
  }
  if (sub === 'points/scroll' && method === 'POST') {
    const limit = uint(body.limit, 'limit', { max: 10000, def: 10 });
    let all = filtered(c, body.filter).sort((a, b) => cmpKeys(a.id, b.id));
    if (body.offset !== undefined && body.offset !== null) { const o = parseId(body.offset); all = all.filter((p) => cmpKeys(p.id, o) >= 0); }
    const page = all.slice(0, limit);
    return { result: { points: page.map((p) => record(p, body.with_payload ?? true, body.with_vector)), next_page_offset: all.length > limit ? all[limit].id.out : null } };
  }
  if (sub === 'points/count' && method === 'POST') return { result: { count: filtered(c, body.filter).length } };
  if (sub === 'points/search' && method === 'POST') {
    const limit = uint(body.limit, 'limit', { max: 10000 });
    const offset = uint(body.offset, 'offset', { def: 0 });
    return { result: searchCore(c, { vec: body.vector, filter: body.filter, limit, offset, threshold: body.score_threshold, wp: body.with_payload ?? false, wv: body.with_vector }) };
  }
  if (sub === 'points/query' && method === 'POST') {
    const limit = uint(body.limit, 'limit', { max: 10000, def: 10 });
    const offset = uint(body.offset, 'offset', { def: 0 });
    let q = body.query;
    let mmr = null;
    if (q && !Array.isArray(q) && typeof q === 'object' && 'nearest' in q) { mmr = q.mmr ?? null; q = q.nearest; }
    const wp = body.with_payload ?? false;
    if (!mmr) return { result: { points: searchCore(c, { vec: q, filter: body.filter, limit, offset, threshold: body.score_threshold, wp, wv: body.with_vector }) } };
    const cand = searchCore(c, { vec: q, filter: body.filter, limit: mmr.candidates_limit ?? limit, offset: 0, wp, wv: true });
    const lambda = 1 - (mmr.diversity ?? 0.5);
    const chosen = [];
    const dim = c.config.params.vectors.size;
    const qv = vector(q, dim);
    while (chosen.length < limit && cand.length) {
      let best = 0; let bestV = -Infinity;
      cand.forEach((x, i) => {
        const rel = score(c, x.vector, qv);
        const red = chosen.length ? Math.max(...chosen.map((y) => score(c, x.vector, y.vector))) : 0;
        const v = lambda * rel - (1 - lambda) * red;
        if (v > bestV) { bestV = v; best = i; }
      });
      chosen.push(cand.splice(best, 1)[0]);
    }
    return { result: { points: chosen } };
  }
  throw new Bad('not found', 404);
}

const port = Number(process.argv[2] || 6333);
http.createServer((req, res) => {
  const t0 = process.hrtime.bigint();
  const chunks = [];
  req.on('data', (d) => chunks.push(d));
  req.on('end', () => {
    const u = new URL(req.url, 'http://x');
    const parts = u.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const time = () => Number(process.hrtime.bigint() - t0) / 1e9;
    const send = (code, obj, type = 'application/json') => {
      const s = typeof obj === 'string' ? obj : toJson(obj);
      res.writeHead(code, { 'content-type': type, 'content-length': Buffer.byteLength(s) });
      res.end(s);
    };
    try {
      const text = Buffer.concat(chunks).toString('utf8');
      let body = {};
      if (text.length) {
        try { body = parseJson(text); } catch (e) { throw new Bad(`Format error in JSON body: ${e.message}`); }
        if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Bad('body must be an object');
      }
      const out = route(req.method, parts, u.searchParams, body);
      if (out.text !== undefined) return send(200, out.text, 'text/plain');
      if (out.raw !== undefined) return send(200, out.raw);
      send(200, { result: out.result, status: 'ok', time: time() });
    } catch (e) {
      if (!(e instanceof Bad)) console.error(e);
      send(e instanceof Bad ? e.code : 500, { status: { error: e.message }, time: time() });
    }
  });
}).listen(port, '127.0.0.1', () => console.log(`reference server on ${port}`));
