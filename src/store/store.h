/*
 * store.h - the shard store: one LMDB environment per shard replica.
 *
 * What it holds (one named LMDB database each):
 *   points  canonical point id (base/pointid.h) -> record
 *   labels  index label (u64, MDB_INTEGERKEY)   -> u64 version, canonical
 *           point id (the version repeated, so that a search hit -- label to
 *           id and version -- is one lookup in this small table, not two)
 *   meta    "applied" -> u64 raft index, u64 term; "next_label" -> u64;
 *           "format" -> u32: 2 (a format 1 store, whose labels held the id
 *           only, is upgraded when opened)
 *
 * Record (value of `points`), format 1, little-endian:
 *   u64 checksum   XXH3-64 of every byte after it
 *   u8 format (1), u8 flags (0), u16 reserved
 *   u32 dim, u64 version (raft index of the entry that last wrote it),
 *   u64 label (the point's label in the vector index; stable for its life)
 *   f32 vector[dim], u32 payload_len, payload (JSON text, UTF-8)
 * LMDB has no checksums of its own; every read verifies the record's and
 * reports VX_ECORRUPT naming the point, never returns damaged data.
 *
 * Durability: the Raft log is the write-ahead log.  A write transaction
 * carries the records of one Raft entry *and* the applied index, so after a
 * crash the store is exactly "everything up to applied", and replaying the
 * log from applied+1 is exact and idempotent.  The environment runs with
 * MDB_NOMETASYNC: each commit syncs its data pages but not the meta page, so
 * an OS crash or power loss may roll back the last transactions yet never
 * breaks the database's integrity (MDB_NOSYNC could, on file systems that
 * reorder writes) -- the rolled-back entries are still in the Raft log and
 * are replayed.  A killed process loses nothing.  vx_store_sync() forces
 * everything, meta page included, to disk and must succeed before Raft may
 * drop log entries (snapshot / compaction).  Any failed fsync or commit
 * latches the store into a fatal state: every later write returns
 * VX_EFATAL (fail-stop; the replica is rebuilt from its peers).  An fsync is
 * never retried.
 *
 * Labels are assigned from next_label in apply order, so every replica
 * assigns the same label to the same point and digests agree.
 *
 * Threading: one writer at a time (the shard's apply path); any number of
 * concurrent read transactions from any thread (MDB_NOTLS).
 */
#ifndef VX_STORE_STORE_H
#define VX_STORE_STORE_H

#include "base/pointid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VX_STORE_ERRMSG_LEN 256

typedef struct vx_store vx_store;
typedef struct vx_store_txn vx_store_txn;

typedef struct vx_store_options {
    size_t map_size;       /* reserved address space; 0 = 1 TiB (sparse) */
    bool sync_each_commit; /* full fsync (meta page too) on every commit */
    bool no_hit_map;       /* no labels in memory (a store opened only to check or copy it) */
} vx_store_options;

/* A point as read: views into the map, valid until the read txn ends. */
typedef struct vx_record {
    uint64_t version;
    uint64_t label;
    uint32_t dim;
    const void *vector; /* dim float32, possibly unaligned: copy with memcpy */
    const char *payload;
    uint32_t payload_len;
} vx_record;

/* Open (creating) the environment in directory `dir` (created if absent). */
int vx_store_open(const char *dir, const vx_store_options *opt, vx_store **out, char *errbuf);
void vx_store_close(vx_store *st);
const char *vx_store_errmsg(vx_store *st);
bool vx_store_failed(vx_store *st);

/* ---- write transactions (one at a time) ---------------------------------- */
int vx_store_wbegin(vx_store *st, vx_store_txn **txn);
/* Insert or replace.  *label_out gets the point's label (new, or the one
 * it already had); *existed whether it replaced a record. */
int vx_store_put(vx_store_txn *txn, const vx_point_id *id, const float *vec, uint32_t dim,
                 const char *payload, uint32_t payload_len, uint64_t version,
                 uint64_t *label_out, bool *existed);
/* Replace only the payload of an existing point (VX_ENOTFOUND otherwise). */
int vx_store_put_payload(vx_store_txn *txn, const vx_point_id *id, const char *payload,
                         uint32_t payload_len, uint64_t version);
/* Delete; *label_out gets its label.  VX_ENOTFOUND when absent. */
int vx_store_del(vx_store_txn *txn, const vx_point_id *id, uint64_t *label_out);
/* Record the Raft position this transaction brings the store to. */
int vx_store_set_applied(vx_store_txn *txn, uint64_t index, uint64_t term);
/* Commit (no fsync unless sync_each_commit).  On failure the store is
 * fail-stopped and VX_EFATAL returned; the txn is gone either way. */
int vx_store_commit(vx_store_txn *txn);
void vx_store_abort(vx_store_txn *txn);

/* ---- reads ------------------------------------------------------------------ */
int vx_store_rbegin(vx_store *st, vx_store_txn **txn);
/* Works inside read and write transactions.  VX_ENOTFOUND / VX_ECORRUPT. */
int vx_store_get(vx_store_txn *txn, const vx_point_id *id, vx_record *rec);
int vx_store_get_by_label(vx_store_txn *txn, uint64_t label, vx_point_id *id, vx_record *rec);
/* A search hit's id and version, from its index label.  Read transactions
 * answer from the labels held in memory (store/hitmap.h: about 60 bytes a
 * point, built when the store opens, changed by each commit), write
 * transactions and stores opened with no_hit_map from the labels table.
 * VX_ENOTFOUND / VX_ECORRUPT. */
int vx_store_hit_by_label(vx_store_txn *txn, uint64_t label, vx_point_id *id, uint64_t *version);
/* The same for n labels at once (one lock, their lookups overlapped):
 * found[i] tells whether labels[i] is there; VX_ECORRUPT stops it. */
int vx_store_hits_by_labels(vx_store_txn *txn, const uint64_t *labels, size_t n, vx_point_id *ids,
                            uint64_t *versions, bool *found);
/* Iterate points in key order from `start` (NULL = first): cb returns
 * non-zero to stop (and that value is returned). */
typedef int (*vx_store_iter_cb)(void *ctx, const vx_point_id *id, const vx_record *rec);
int vx_store_iterate(vx_store_txn *txn, const vx_point_id *start, vx_store_iter_cb cb, void *ctx);
void vx_store_rend(vx_store_txn *txn);

/* ---- state ------------------------------------------------------------------- */
/* Last applied Raft index/term (0, 0 for a new store). */
int vx_store_applied(vx_store *st, uint64_t *index, uint64_t *term);
uint64_t vx_store_count(vx_store *st);
/* Force all committed transactions to disk.  Failure is fatal (fail-stop). */
int vx_store_sync(vx_store *st);
/* Content digest: XXH3-64 over the definitions, next_label and every
 * (id, record) in key order; *applied is the applied index beside it.
 * Equal digests = identical replicas (applied may differ by entries that
 * changed nothing, see vx_shard_mark_applied). */
int vx_store_digest(vx_store *st, uint64_t *digest, uint64_t *applied);

/* ---- secondary keys and definitions ---------------------------------------------
 * A sorted set of opaque keys (at most 511 bytes) beside the records, for
 * the shard's payload indexes, and named definitions (small values) that
 * are part of the digest.  Both change only in write transactions, so they
 * stay consistent with the records they describe. */
int vx_store_key_put(vx_store_txn *txn, const void *key, size_t len);
int vx_store_key_del(vx_store_txn *txn, const void *key, size_t len); /* absent: 0 */
/* Delete every key in [lo, hi). */
int vx_store_key_del_range(vx_store_txn *txn, const void *lo, size_t lo_len, const void *hi,
                           size_t hi_len);
/* cb for every key in [lo, hi) in order; a positive return stops the scan
 * (returns 0), a negative one is returned. */
typedef int (*vx_store_key_cb)(void *ctx, const void *key, size_t len);
int vx_store_key_scan(vx_store_txn *txn, const void *lo, size_t lo_len, const void *hi,
                      size_t hi_len, vx_store_key_cb cb, void *ctx);
int vx_store_def_put(vx_store_txn *txn, const char *name, const void *val, size_t len);
int vx_store_def_del(vx_store_txn *txn, const char *name); /* VX_ENOTFOUND */
typedef int (*vx_store_def_cb)(void *ctx, const char *name, const void *val, size_t len);
int vx_store_def_iterate(vx_store_txn *txn, vx_store_def_cb cb, void *ctx);

/* Write a compacted, consistent copy of the environment (one read
 * transaction: writers go on meanwhile) to `fd`, a file, pipe or socket.
 * The copy is an LMDB data file: open a directory holding it as data.mdb. */
int vx_store_copy_fd(vx_store *st, int fd);

/* Test hook: make the next sync/commit fail as if fsync returned EIO. */
void vx_store_inject_sync_failure(vx_store *st);

#endif
