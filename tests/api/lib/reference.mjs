// Reference implementations computed in JS: distances, brute-force k-NN and
// Qdrant's filter semantics (compat doc §2.5 "Score semantics", §2.6).
import assert from 'node:assert/strict';

export function dot(a, b) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
export function norm(a) {
  return Math.sqrt(dot(a, a));
}
export function normalize(a) {
  const n = norm(a);
  return a.map((x) => x / n);
}
export function l2(a, b) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) * (a[i] - b[i]);
  return Math.sqrt(s);
}

// Qdrant scores: Cosine = cosine similarity, Dot = inner product (higher is
// better); Euclid = L2 distance sqrt(sum d^2) (lower is better).
export const METRICS = {
  Cosine: { score: (a, b) => dot(a, b) / (norm(a) * norm(b)), higherIsBetter: true },
  Dot: { score: (a, b) => dot(a, b), higherIsBetter: true },
  Euclid: { score: (a, b) => l2(a, b), higherIsBetter: false },
};

export function better(distance, x, y) {
  return METRICS[distance].higherIsBetter ? x > y : x < y;
}

// points: [{id, vector, payload}]; returns every candidate scored and sorted
// best first: [{id, score}].  Options: filter, scoreThreshold.
export function bruteForce(points, query, distance, { filter, scoreThreshold } = {}) {
  const m = METRICS[distance];
  const out = [];
  for (const p of points) {
    if (filter && !matchesFilter(filter, p)) continue;
    const score = m.score(p.vector, query);
    if (scoreThreshold !== undefined) {
      if (m.higherIsBetter ? score < scoreThreshold : score > scoreThreshold) continue;
    }
    out.push({ id: p.id, score });
  }
  out.sort((a, b) => (m.higherIsBetter ? b.score - a.score : a.score - b.score));
  return out;
}

export function close(actual, expected, rel = 1e-4) {
  return Math.abs(actual - expected) <= rel * Math.max(1, Math.abs(expected));
}
export function assertClose(actual, expected, rel = 1e-4, what = '') {
  assert.equal(typeof actual, 'number', `${what}: not a number: ${actual}`);
  assert.ok(close(actual, expected, rel), `${what}: ${actual} is not within ${rel} (relative) of ${expected}`);
}

// Compare a server's scored list with the brute-force ranking `ranked` (all
// candidates, best first) at positions [offset, offset + actual.length).
// Ids must match position by position; the only freedom allowed is between
// candidates whose true scores are equal within `tieRel` (float32 rounding
// can swap those).  Each returned score must equal the true score of the id
// returned.
export function assertRanking(actual, ranked, { offset = 0, limit, rel = 1e-4, tieRel = 1e-5, what = '' } = {}) {
  const expectedLen = Math.max(0, Math.min(limit ?? Infinity, ranked.length - offset));
  assert.equal(actual.length, expectedLen, `${what}: expected ${expectedLen} results, got ${actual.length}: ${JSON.stringify(actual.map((p) => p.id))}`);
  const trueScore = new Map(ranked.map((r) => [String(r.id), r.score]));
  const seen = new Set();
  for (let i = 0; i < actual.length; i++) {
    const got = actual[i];
    const want = ranked[offset + i];
    const key = String(got.id);
    assert.ok(!seen.has(key), `${what}: id ${key} returned twice`);
    seen.add(key);
    assert.ok(trueScore.has(key), `${what}: id ${key} at rank ${i} is not a candidate (filtered out or unknown)`);
    const ts = trueScore.get(key);
    assertClose(got.score, ts, rel, `${what}: score of id ${key}`);
    if (key !== String(want.id)) {
      assert.ok(close(ts, want.score, tieRel),
        `${what}: rank ${offset + i}: expected id ${want.id} (score ${want.score}), got id ${key} (true score ${ts})`);
    }
  }
}

// Recall of the server's ids against the true top-k.
export function recall(actualIds, ranked, k) {
  const truth = new Set(ranked.slice(0, k).map((r) => String(r.id)));
  let hit = 0;
  for (const id of actualIds) if (truth.has(String(id))) hit++;
  return hit / Math.max(1, Math.min(k, ranked.length));
}

/* ------------------------------------------------------------------ */
/* Filters                                                            */
/* ------------------------------------------------------------------ */

// Values found at a dot path; an array met on the way or at the end is
// searched element by element.  A missing key yields [].
export function valuesAt(payload, key) {
  const parts = key.replace(/\[\]/g, '').split('.');
  let cur = [payload];
  for (const part of parts) {
    const next = [];
    for (const v of cur) {
      const xs = Array.isArray(v) ? v : [v];
      for (const x of xs) {
        if (x && typeof x === 'object' && !Array.isArray(x) && part in x) next.push(x[part]);
      }
    }
    cur = next;
  }
  const out = [];
  for (const v of cur) {
    if (Array.isArray(v)) out.push(...v);
    else out.push(v);
  }
  return out;
}

function exactAt(payload, key) {
  let cur = payload;
  for (const part of key.split('.')) {
    if (!cur || typeof cur !== 'object' || Array.isArray(cur) || !(part in cur)) return undefined;
    cur = cur[part];
  }
  return cur;
}

function idEq(a, b) {
  return String(a).toLowerCase() === String(b).toLowerCase();
}

function asList(x) {
  if (x === undefined || x === null) return [];
  return Array.isArray(x) ? x : [x];
}

export function matchesCondition(c, point) {
  const payload = point.payload || {};
  if (c.must !== undefined || c.should !== undefined || c.must_not !== undefined || c.min_should !== undefined) {
    return matchesFilter(c, point);
  }
  if (c.has_id) return c.has_id.some((id) => idEq(id, point.id));
  if (c.is_empty) {
    const vals = valuesAt(payload, c.is_empty.key);
    return vals.every((v) => v === null);
  }
  if (c.is_null) return exactAt(payload, c.is_null.key) === null;
  if (c.key !== undefined && c.match) {
    const vals = valuesAt(payload, c.key);
    if ('value' in c.match) return vals.some((v) => v === c.match.value);
    if ('any' in c.match) return vals.some((v) => c.match.any.includes(v));
    if ('except' in c.match) {
      // Only used in the tests on scalar keys present on every point, where
      // Qdrant's and Vectron's readings agree.
      const real = vals.filter((v) => v !== null);
      return real.length > 0 && real.every((v) => !c.match.except.includes(v));
    }
  }
  if (c.key !== undefined && c.range) {
    const r = c.range;
    return valuesAt(payload, c.key).some((v) => typeof v === 'number'
      && (r.gt === undefined || v > r.gt) && (r.gte === undefined || v >= r.gte)
      && (r.lt === undefined || v < r.lt) && (r.lte === undefined || v <= r.lte));
  }
  throw new Error(`reference filter: unsupported condition ${JSON.stringify(c)}`);
}

export function matchesFilter(f, point) {
  if (!f) return true;
  const must = asList(f.must);
  const should = asList(f.should);
  const mustNot = asList(f.must_not);
  if (!must.every((c) => matchesCondition(c, point))) return false;
  if (should.length && !should.some((c) => matchesCondition(c, point))) return false;
  if (mustNot.some((c) => matchesCondition(c, point))) return false;
  if (f.min_should) {
    const n = asList(f.min_should.conditions).filter((c) => matchesCondition(c, point)).length;
    if (n < f.min_should.min_count) return false;
  }
  return true;
}

// A score threshold placed in the widest gap between consecutive ranked
// scores at positions lo..hi, so float rounding cannot move a point across
// it.  Returns {thr, count}: count points lie on the good side.
export function thresholdSplit(ranked, lo, hi) {
  let best = lo;
  for (let k = lo; k <= hi; k++) {
    if (Math.abs(ranked[k - 1].score - ranked[k].score) > Math.abs(ranked[best - 1].score - ranked[best].score)) best = k;
  }
  return { thr: (ranked[best - 1].score + ranked[best].score) / 2, count: best };
}
