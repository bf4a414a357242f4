// LangChain: @langchain/qdrant's QdrantVectorStore over the real client,
// with a deterministic fake Embeddings (vectors derived from a text hash).
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { Embeddings } from '@langchain/core/embeddings';
import { Document } from '@langchain/core/documents';
import { QdrantVectorStore } from '@langchain/qdrant';
import { newClient, CollectionTracker, fnv1a, makeRng } from '../lib/common.mjs';
import { METRICS, assertClose } from '../lib/reference.mjs';

const DIM = 12;

// Same text -> same vector; different texts -> unrelated pseudo-random vectors.
class HashEmbeddings extends Embeddings {
  constructor() {
    super({});
  }

  static vector(text) {
    let s = fnv1a(text) || 1;
    const v = [];
    for (let i = 0; i < DIM; i++) {
      // xorshift32
      s ^= s << 13; s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5; s >>>= 0;
      v.push(Math.fround((s / 4294967296) * 2 - 1));
    }
    return v;
  }

  async embedDocuments(texts) {
    return texts.map((t) => HashEmbeddings.vector(t));
  }

  async embedQuery(text) {
    return HashEmbeddings.vector(text);
  }
}

describe('LangChain QdrantVectorStore', { timeout: 120000 }, () => {
  const client = newClient();
  const cols = new CollectionTracker(client);
  after(() => cols.dropAll());

  const rng = makeRng('langchain');
  const texts = Array.from({ length: 24 }, (_, i) => `document ${i}: ${['apples', 'rivers', 'engines', 'violins'][i % 4]} ${rng.int(1e9)}`);
  const docs = texts.map((t, i) => new Document({ pageContent: t, metadata: { k: i % 3, i, source: `s${i % 2}` } }));
  const ids = texts.map(() => rng.uuid());
  const embeddings = new HashEmbeddings();

  it('addDocuments creates the collection, similaritySearch finds the document', async () => {
    const name = cols.name('lc');
    const store = new QdrantVectorStore(embeddings, { client, collectionName: name });
    await store.addDocuments(docs, { ids });

    // ensureCollection() created it with the embedding size and Cosine.
    const info = await client.getCollection(name);
    assert.equal(info.config.params.vectors.size, DIM);
    assert.equal(info.config.params.vectors.distance, 'Cosine');
    assert.equal((await client.count(name)).count, docs.length);
    // Payload layout LangChain writes: {content, metadata}.
    const [p] = await client.retrieve(name, { ids: [ids[5]] });
    assert.equal(p.payload.content, texts[5]);
    assert.deepEqual(p.payload.metadata, docs[5].metadata);

    for (const i of [0, 7, 13, 23]) {
      const res = await store.similaritySearch(texts[i], 1);
      assert.equal(res.length, 1);
      assert.equal(res[0].pageContent, texts[i]);
      assert.deepEqual(res[0].metadata, docs[i].metadata);
      assert.equal(res[0].id, ids[i]);
    }
  });

  it('similaritySearchWithScore: top-k and cosine scores equal brute force', async () => {
    const name = cols.name('lc_scores');
    const store = await QdrantVectorStore.fromDocuments(docs, embeddings, { client, collectionName: name });
    const q = 'a query that is none of the documents';
    const qv = HashEmbeddings.vector(q);
    const ranked = texts.map((t, i) => ({ i, score: METRICS.Cosine.score(HashEmbeddings.vector(t), qv) }))
      .sort((a, b) => b.score - a.score);
    const res = await store.similaritySearchWithScore(q, 5);
    assert.equal(res.length, 5);
    res.forEach(([doc, score], r) => {
      assert.equal(doc.pageContent, texts[ranked[r].i], `rank ${r}`);
      assertClose(score, ranked[r].score, 1e-4, `score at rank ${r}`);
    });
  });

  it('similaritySearch with a metadata filter (nested key metadata.k)', async () => {
    const name = cols.name('lc_filter');
    const store = await QdrantVectorStore.fromDocuments(docs, embeddings, { client, collectionName: name });
    const filter = { must: [{ key: 'metadata.k', match: { value: 1 } }] };
    const res = await store.similaritySearch(texts[4], 4, filter);
    assert.equal(res.length, 4);
    assert.equal(res[0].pageContent, texts[4], 'doc 4 has k=1 and is its own nearest neighbour');
    for (const d of res) assert.equal(d.metadata.k, 1);
    // A document excluded by the filter is never returned, even for its own text.
    const ex = await store.similaritySearch(texts[0], 3, filter);
    assert.ok(ex.every((d) => d.pageContent !== texts[0] && d.metadata.k === 1));
  });

  it('maxMarginalRelevanceSearch ({nearest, mmr}) returns k distinct documents, most relevant first', async () => {
    const name = cols.name('lc_mmr');
    const store = await QdrantVectorStore.fromDocuments(docs, embeddings, { client, collectionName: name });
    const res = await store.maxMarginalRelevanceSearch(texts[9], { k: 3, fetchK: 10 });
    assert.equal(res.length, 3);
    assert.equal(res[0].pageContent, texts[9]);
    assert.equal(new Set(res.map((d) => d.pageContent)).size, 3);
    for (const d of res) assert.ok(texts.includes(d.pageContent));
  });

  it('delete({ids}) and delete({filter}) remove documents', async () => {
    const name = cols.name('lc_delete');
    const store = new QdrantVectorStore(embeddings, { client, collectionName: name });
    await store.addDocuments(docs, { ids });
    await store.delete({ ids: [ids[0], ids[1]] });
    assert.equal((await client.count(name)).count, docs.length - 2);
    const res = await store.similaritySearch(texts[0], 1);
    assert.notEqual(res[0].pageContent, texts[0]);
    await store.delete({ filter: { must: [{ key: 'metadata.source', match: { value: 's1' } }] } });
    const left = docs.filter((d, i) => i > 1 && d.metadata.source !== 's1').length;
    assert.equal((await client.count(name)).count, left);
  });

  it('fromExistingCollection reuses the collection', async () => {
    const name = cols.name('lc_existing');
    await QdrantVectorStore.fromDocuments(docs.slice(0, 6), embeddings, { client, collectionName: name });
    const store = await QdrantVectorStore.fromExistingCollection(embeddings, { client, collectionName: name });
    const res = await store.similaritySearch(texts[2], 1);
    assert.equal(res[0].pageContent, texts[2]);
    assert.equal((await client.count(name)).count, 6);
  });

  it('errors carry status.error through LangChain', async () => {
    const name = cols.name('lc_err');
    await client.createCollection(name, { vectors: { size: DIM + 1, distance: 'Cosine' } });
    const store = new QdrantVectorStore(embeddings, { client, collectionName: name });
    // Wrong dimension: LangChain rethrows `${status} ${message}: ${data.status.error}`.
    await assert.rejects(store.addDocuments(docs.slice(0, 1)), (e) => {
      assert.match(e.message, /^400 /);
      assert.ok(!/undefined$/.test(e.message), `error text lacks status.error: ${e.message}`);
      return true;
    });
  });
});
