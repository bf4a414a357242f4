/*
 * store.c - the LMDB shard store (see store.h for format and durability).
 */
#include "store/store.h"

#include "base/err.h"
#include "store/hitmap.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the record format is little-endian; add byte swapping for this host"
#endif

#define REC_FORMAT 1
#define REC_HDR 32 /* checksum 8, format/flags/reserved 4, dim 4, version 8, label 8 */
#define STORE_FORMAT 2u /* 2: labels map to (version, id); 1: to id (upgraded on open) */
#define LABEL_HDR 8      /* the version in front of the id in a labels value */

struct vx_store {
    MDB_env *env;
    MDB_dbi points, labels, meta, keys;
    bool sync_each_commit;
    _Atomic bool fatal;
    _Atomic bool inject_sync_failure;
    pthread_mutex_t msg_mu;
    char errmsg[VX_STORE_ERRMSG_LEN];
    char dir[512];
    /* labels in memory (hitmap.h): on unless opened with no_hit_map; off
     * for good if an update of it ever fails (reads go to LMDB then) */
    _Atomic bool map_on;
    vx_hitmap map;
    pthread_rwlock_t map_lock;
    /* held from a commit to its map update: LMDB's writer lock ends with
     * the commit, and the map must take commits one at a time, in order */
    pthread_mutex_t commit_mu;
};

/* A write transaction's label changes, for the map once it commits. */
typedef struct label_change {
    uint64_t label, version; /* version UINT64_MAX: deleted */
    size_t off;              /* id bytes at ids + off */
    uint16_t len;
} label_change;

struct vx_store_txn {
    vx_store *st;
    MDB_txn *txn;
    bool write;
    bool labels_dirty;
    uint64_t next_label;
    label_change *chg;
    size_t nchg, capchg;
    uint8_t *ids;
    size_t lenids, capids;
};

static int store_err(vx_store *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int store_err(vx_store *st, int code, const char *fmt, ...)
{
    pthread_mutex_lock(&st->msg_mu);
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(st->errmsg, sizeof st->errmsg, "store %s: ", st->dir);
    if (n > 0 && (size_t)n < sizeof st->errmsg) vsnprintf(st->errmsg + n, sizeof st->errmsg - n, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&st->msg_mu);
    return code;
}

static bool log_change(vx_store_txn *t, uint64_t label, uint64_t version, const vx_point_id *id)
{
    if (!atomic_load(&t->st->map_on)) return true;
    if (t->nchg == t->capchg) {
        size_t cap = t->capchg ? t->capchg * 2 : 64;
        label_change *c = realloc(t->chg, cap * sizeof(*c));
        if (c == NULL) return false;
        t->chg = c;
        t->capchg = cap;
    }
    size_t len = id ? id->len : 0;
    if (t->lenids + len > t->capids) {
        size_t cap = t->capids ? t->capids * 2 : 4096;
        while (cap < t->lenids + len) cap *= 2;
        uint8_t *b = realloc(t->ids, cap);
        if (b == NULL) return false;
        t->ids = b;
        t->capids = cap;
    }
    if (len) memcpy(t->ids + t->lenids, id->b, len);
    t->chg[t->nchg++] = (label_change){label, version, t->lenids, (uint16_t)len};
    t->lenids += len;
    return true;
}

/* After a commit: the map takes the transaction's changes.  Growing copies
 * the table first, without the lock: only this (the single) writer changes
 * the map, and readers keep reading the old table meanwhile. */
static void map_apply(vx_store *st, vx_store_txn *t)
{
    if (!atomic_load(&st->map_on) || t->nchg == 0) return;
    vx_hitmap bigger = {0};
    bool grow = vx_hitmap_needs_grow(&st->map, t->nchg);
    if (grow && vx_hitmap_grow(&st->map, t->nchg, &bigger) != 0) goto off;
    pthread_rwlock_wrlock(&st->map_lock);
    vx_hitmap old = st->map;
    if (grow) st->map = bigger;
    int rc = 0;
    for (size_t i = 0; i < t->nchg && rc == 0; i++) {
        const label_change *c = &t->chg[i];
        if (c->version == UINT64_MAX) vx_hitmap_del(&st->map, c->label);
        else rc = vx_hitmap_put(&st->map, c->label, c->version, t->ids + c->off, c->len);
    }
    if (rc != 0) atomic_store(&st->map_on, false);
    pthread_rwlock_unlock(&st->map_lock);
    if (grow) vx_hitmap_free_shallow(&old);
    return;
off:
    atomic_store(&st->map_on, false);
}

static void txn_free(vx_store_txn *t)
{
    free(t->chg);
    free(t->ids);
    free(t);
}

static int map_mdb(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_NOTFOUND:
        return VX_ENOTFOUND;
    case MDB_MAP_FULL:
        return VX_EFULL;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
        return VX_ECORRUPT;
    case MDB_INVALID: /* not an LMDB file */
    case MDB_VERSION_MISMATCH:
        return VX_EFORMAT;
    case ENOMEM:
        return VX_ENOMEM;
    default:
        return VX_EIO;
    }
}

/* Latch the fail-stop state.  Never cleared while the store is open. */
static int store_fail(vx_store *st, int mdb_rc, const char *what)
{
    atomic_store(&st->fatal, true);
    return store_err(st, VX_EFATAL, "%s failed (%s): replica fail-stopped", what,
                     mdb_rc ? mdb_strerror(mdb_rc) : "injected");
}

const char *vx_store_errmsg(vx_store *st) { return st->errmsg; }
bool vx_store_failed(vx_store *st) { return atomic_load(&st->fatal); }
void vx_store_inject_sync_failure(vx_store *st) { atomic_store(&st->inject_sync_failure, true); }

/* Format 1 -> 2: every labels value gets its point's version in front of
 * the id, read from the point's record; in the opening transaction, so a
 * crash leaves format 1 to upgrade again. */
static int decode_record(vx_store *st, const vx_point_id *id, const MDB_val *v, vx_record *rec);

static int upgrade_labels(vx_store *st, MDB_txn *txn)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->points, &cur);
    if (rc != 0) return rc;
    MDB_val k, v;
    uint8_t buf[LABEL_HDR + VX_ID_MAX_BYTES];
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        vx_point_id id;
        vx_record rec;
        if (vx_id_from_bytes(&id, k.mv_data, k.mv_size) != 0 ||
            decode_record(st, &id, &v, &rec) != 0) {
            rc = MDB_CORRUPTED;
            break;
        }
        memcpy(buf, &rec.version, LABEL_HDR);
        memcpy(buf + LABEL_HDR, id.b, id.len);
        size_t lk = (size_t)rec.label;
        MDB_val kl = {sizeof lk, &lk}, vl = {LABEL_HDR + (size_t)id.len, buf};
        rc = mdb_put(txn, st->labels, &kl, &vl, 0);
        if (rc != 0) break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* The labels table into the map, when the store opens. */
static int build_map(vx_store *st)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) return map_mdb(rc);
    MDB_stat ms;
    rc = mdb_stat(txn, st->labels, &ms);
    if (rc == 0 && vx_hitmap_init(&st->map, ms.ms_entries) != 0) rc = ENOMEM;
    MDB_cursor *cur = NULL;
    if (rc == 0) rc = mdb_cursor_open(txn, st->labels, &cur);
    MDB_val k, v;
    int out = 0;
    for (rc = rc ? rc : mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        size_t lk;
        uint64_t version;
        if (k.mv_size != sizeof lk || v.mv_size <= LABEL_HDR) {
            out = VX_ECORRUPT;
            break;
        }
        memcpy(&lk, k.mv_data, sizeof lk);
        memcpy(&version, v.mv_data, LABEL_HDR);
        if ((out = vx_hitmap_put(&st->map, (uint64_t)lk, version,
                                 (const uint8_t *)v.mv_data + LABEL_HDR,
                                 v.mv_size - LABEL_HDR)) != 0)
            break;
    }
    if (cur) mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (out == 0 && rc != MDB_NOTFOUND) out = rc == ENOMEM ? VX_ENOMEM : map_mdb(rc);
    if (out != 0) {
        vx_hitmap_free(&st->map);
        return out;
    }
    pthread_rwlock_init(&st->map_lock, NULL);
    atomic_store(&st->map_on, true);
    return 0;
}

int vx_store_open(const char *dir, const vx_store_options *opt, vx_store **out, char *errbuf)
{
    static const vx_store_options defaults = {0};
    if (opt == NULL) opt = &defaults;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return vx_errf(errbuf, VX_STORE_ERRMSG_LEN, VX_EIO, "mkdir %s: %s", dir, strerror(errno));
    vx_store *st = calloc(1, sizeof(*st));
    if (st == NULL) return vx_errf(errbuf, VX_STORE_ERRMSG_LEN, VX_ENOMEM, "store");
    pthread_mutex_init(&st->msg_mu, NULL);
    pthread_mutex_init(&st->commit_mu, NULL);
    snprintf(st->dir, sizeof st->dir, "%s", dir);
    st->sync_each_commit = opt->sync_each_commit;
    /* The map is address space, not memory: 1 TiB by default.  Where the
     * address space is limited (ulimit -v, sanitizers), halve it down to
     * 64 MiB rather than fail (a store that outgrows it reports VX_EFULL). */
    size_t map = opt->map_size ? opt->map_size : (size_t)1 << 40;
    unsigned flags = MDB_NOTLS | MDB_NORDAHEAD | (opt->sync_each_commit ? 0 : MDB_NOMETASYNC);
    int rc;
    for (;;) {
        rc = mdb_env_create(&st->env);
        if (rc == 0) rc = mdb_env_set_maxdbs(st->env, 8);
        if (rc == 0) rc = mdb_env_set_mapsize(st->env, map);
        if (rc == 0) rc = mdb_env_open(st->env, dir, flags, 0644);
        if (rc != ENOMEM || opt->map_size || map <= ((size_t)64 << 20)) break;
        mdb_env_close(st->env);
        st->env = NULL;
        map /= 2;
    }
    if (rc != 0) {
        int code = map_mdb(rc);
        vx_errf(errbuf, VX_STORE_ERRMSG_LEN, code, "opening LMDB in %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    MDB_txn *txn;
    rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc == 0) rc = mdb_dbi_open(txn, "points", MDB_CREATE, &st->points);
    if (rc == 0) rc = mdb_dbi_open(txn, "labels", MDB_CREATE | MDB_INTEGERKEY, &st->labels);
    if (rc == 0) rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &st->meta);
    if (rc == 0) rc = mdb_dbi_open(txn, "keys", MDB_CREATE, &st->keys);
    if (rc == 0) {
        MDB_val k = {6, "format"}, v;
        int g = mdb_get(txn, st->meta, &k, &v);
        if (g == MDB_NOTFOUND) {
            uint32_t f = STORE_FORMAT;
            v.mv_size = sizeof f;
            v.mv_data = &f;
            rc = mdb_put(txn, st->meta, &k, &v, 0);
        } else if (g == 0) {
            uint32_t f = 0;
            bool sized = v.mv_size == sizeof f;
            if (sized) memcpy(&f, v.mv_data, sizeof f);
            if (sized && f == 1) {
                rc = upgrade_labels(st, txn);
                if (rc == 0) {
                    f = STORE_FORMAT;
                    MDB_val nv = {sizeof f, &f};
                    rc = mdb_put(txn, st->meta, &k, &nv, 0);
                }
            } else if (!sized || f != STORE_FORMAT) {
                mdb_txn_abort(txn);
                if (sized)
                    vx_errf(errbuf, VX_STORE_ERRMSG_LEN, VX_EFORMAT,
                            "%s: store format %u is not supported (this build reads %u)", dir, f,
                            STORE_FORMAT);
                else
                    vx_errf(errbuf, VX_STORE_ERRMSG_LEN, VX_EFORMAT,
                            "%s: store format marker has %zu bytes, not a Vectron store", dir,
                            v.mv_size);
                rc = -1;
                goto fail_code;
            }
        } else {
            rc = g;
        }
    }
    if (rc == 0) rc = mdb_txn_commit(txn);
    else mdb_txn_abort(txn);
    if (rc == 0 && !opt->sync_each_commit) rc = mdb_env_sync(st->env, 1);
    if (rc != 0) {
        vx_errf(errbuf, VX_STORE_ERRMSG_LEN, map_mdb(rc), "initialising %s: %s", dir,
                mdb_strerror(rc));
        goto fail;
    }
    if (!opt->no_hit_map) {
        rc = build_map(st);
        if (rc != 0) {
            vx_errf(errbuf, VX_STORE_ERRMSG_LEN, rc, "loading the labels of %s: %s", dir,
                    vx_strerror(rc));
            mdb_env_close(st->env);
            pthread_mutex_destroy(&st->commit_mu);
            pthread_mutex_destroy(&st->msg_mu);
            free(st);
            return rc;
        }
    }
    *out = st;
    return 0;
fail:
    rc = map_mdb(rc);
    mdb_env_close(st->env);
    pthread_mutex_destroy(&st->commit_mu);
    pthread_mutex_destroy(&st->msg_mu);
    free(st);
    return rc;
fail_code:
    mdb_env_close(st->env);
    pthread_mutex_destroy(&st->commit_mu);
    pthread_mutex_destroy(&st->msg_mu);
    free(st);
    return VX_EFORMAT;
}

void vx_store_close(vx_store *st)
{
    if (st == NULL) return;
    if (st->map.slot != NULL) {
        vx_hitmap_free(&st->map);
        pthread_rwlock_destroy(&st->map_lock);
    }
    mdb_env_close(st->env);
    pthread_mutex_destroy(&st->commit_mu);
    pthread_mutex_destroy(&st->msg_mu);
    free(st);
}

/* ---- transactions ------------------------------------------------------------ */

static int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t *out, size_t n)
{
    MDB_val k = {strlen(key), (void *)key}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND) {
        memset(out, 0, n * sizeof(uint64_t));
        return 0;
    }
    if (rc != 0) return rc;
    if (v.mv_size != n * sizeof(uint64_t)) return MDB_CORRUPTED;
    memcpy(out, v.mv_data, v.mv_size);
    return 0;
}

static int meta_put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, const uint64_t *vals, size_t n)
{
    MDB_val k = {strlen(key), (void *)key}, v = {n * sizeof(uint64_t), (void *)vals};
    return mdb_put(txn, dbi, &k, &v, 0);
}

int vx_store_wbegin(vx_store *st, vx_store_txn **out)
{
    if (atomic_load(&st->fatal)) return VX_EFATAL;
    vx_store_txn *t = calloc(1, sizeof(*t));
    if (t == NULL) return VX_ENOMEM;
    t->st = st;
    t->write = true;
    int rc = mdb_txn_begin(st->env, NULL, 0, &t->txn);
    if (rc == 0) rc = meta_get_u64(t->txn, st->meta, "next_label", &t->next_label, 1);
    if (rc != 0) {
        if (t->txn) mdb_txn_abort(t->txn);
        free(t);
        return store_err(st, map_mdb(rc), "begin write: %s", mdb_strerror(rc));
    }
    *out = t;
    return 0;
}

int vx_store_rbegin(vx_store *st, vx_store_txn **out)
{
    vx_store_txn *t = calloc(1, sizeof(*t));
    if (t == NULL) return VX_ENOMEM;
    t->st = st;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &t->txn);
    if (rc != 0) {
        free(t);
        return store_err(st, map_mdb(rc), "begin read: %s", mdb_strerror(rc));
    }
    *out = t;
    return 0;
}

void vx_store_rend(vx_store_txn *t)
{
    if (t == NULL) return;
    mdb_txn_abort(t->txn);
    txn_free(t);
}

void vx_store_abort(vx_store_txn *t) { vx_store_rend(t); }

int vx_store_commit(vx_store_txn *t)
{
    vx_store *st = t->st;
    int rc = 0;
    if (atomic_load(&st->fatal)) {
        mdb_txn_abort(t->txn);
        txn_free(t);
        return VX_EFATAL;
    }
    if (t->labels_dirty) rc = meta_put_u64(t->txn, st->meta, "next_label", &t->next_label, 1);
    if (rc != 0) {
        mdb_txn_abort(t->txn);
        txn_free(t);
        return store_err(st, map_mdb(rc), "commit: %s", mdb_strerror(rc));
    }
    pthread_mutex_lock(&st->commit_mu);
    rc = mdb_txn_commit(t->txn);
    if (rc == 0) map_apply(st, t);
    pthread_mutex_unlock(&st->commit_mu);
    txn_free(t);
    if (rc == MDB_MAP_FULL) return store_err(st, VX_EFULL, "commit: map full");
    if (rc != 0) return store_fail(st, rc, "commit");
    if (st->sync_each_commit && atomic_exchange(&st->inject_sync_failure, false))
        return store_fail(st, 0, "fsync on commit");
    return 0;
}

/* ---- records ------------------------------------------------------------------ */

static int decode_record(vx_store *st, const vx_point_id *id, const MDB_val *v, vx_record *rec)
{
    const uint8_t *p = v->mv_data;
    char text[VX_ID_TEXT_MAX];
    if (v->mv_size < REC_HDR + 4) goto corrupt;
    uint64_t sum;
    memcpy(&sum, p, 8);
    if (XXH3_64bits(p + 8, v->mv_size - 8) != sum) goto corrupt;
    if (p[8] != REC_FORMAT) {
        vx_id_format(id, text);
        return store_err(st, VX_EFORMAT, "point %s: record format %u unknown", text, p[8]);
    }
    memcpy(&rec->dim, p + 12, 4);
    memcpy(&rec->version, p + 16, 8);
    memcpy(&rec->label, p + 24, 8);
    size_t vbytes = (size_t)rec->dim * 4;
    if (v->mv_size < REC_HDR + vbytes + 4) goto corrupt;
    rec->vector = p + REC_HDR;
    memcpy(&rec->payload_len, p + REC_HDR + vbytes, 4);
    if (v->mv_size != REC_HDR + vbytes + 4 + rec->payload_len) goto corrupt;
    rec->payload = (const char *)p + REC_HDR + vbytes + 4;
    return 0;
corrupt:
    vx_id_format(id, text);
    return store_err(st, VX_ECORRUPT, "point %s: record failed its checksum or shape check", text);
}

static void encode_record(uint8_t *p, const float *vec, uint32_t dim, const char *payload,
                          uint32_t plen, uint64_t version, uint64_t label)
{
    memset(p + 8, 0, 4);
    p[8] = REC_FORMAT;
    memcpy(p + 12, &dim, 4);
    memcpy(p + 16, &version, 8);
    memcpy(p + 24, &label, 8);
    memcpy(p + REC_HDR, vec, (size_t)dim * 4);
    memcpy(p + REC_HDR + (size_t)dim * 4, &plen, 4);
    if (plen) memcpy(p + REC_HDR + (size_t)dim * 4 + 4, payload, plen);
    size_t total = REC_HDR + (size_t)dim * 4 + 4 + plen;
    uint64_t sum = XXH3_64bits(p + 8, total - 8);
    memcpy(p, &sum, 8);
}

int vx_store_get(vx_store_txn *t, const vx_point_id *id, vx_record *rec)
{
    MDB_val k = {id->len, (void *)id->b}, v;
    int rc = mdb_get(t->txn, t->st->points, &k, &v);
    if (rc != 0) return rc == MDB_NOTFOUND ? VX_ENOTFOUND : store_err(t->st, map_mdb(rc), "get: %s", mdb_strerror(rc));
    return decode_record(t->st, id, &v, rec);
}

/* labels[label] from LMDB: the point's version and id. */
static int read_label(vx_store_txn *t, uint64_t label, vx_point_id *id, uint64_t *version)
{
    size_t lk = (size_t)label;
    MDB_val k = {sizeof lk, &lk}, v;
    int rc = mdb_get(t->txn, t->st->labels, &k, &v);
    if (rc != 0) return rc == MDB_NOTFOUND ? VX_ENOTFOUND : store_err(t->st, map_mdb(rc), "label: %s", mdb_strerror(rc));
    if (v.mv_size <= LABEL_HDR ||
        vx_id_from_bytes(id, (const uint8_t *)v.mv_data + LABEL_HDR, v.mv_size - LABEL_HDR) != 0)
        return store_err(t->st, VX_ECORRUPT, "label %llu maps to a malformed id",
                         (unsigned long long)label);
    memcpy(version, v.mv_data, LABEL_HDR);
    return 0;
}

int vx_store_get_by_label(vx_store_txn *t, uint64_t label, vx_point_id *id, vx_record *rec)
{
    uint64_t version;
    int rc = read_label(t, label, id, &version);
    if (rc != 0) return rc;
    rc = vx_store_get(t, id, rec);
    if (rc == 0 && rec->label != label)
        return store_err(t->st, VX_ECORRUPT, "label %llu maps to a point with label %llu",
                         (unsigned long long)label, (unsigned long long)rec->label);
    return rc;
}

int vx_store_hits_by_labels(vx_store_txn *t, const uint64_t *labels, size_t n, vx_point_id *ids,
                            uint64_t *versions, bool *found)
{
    vx_store *st = t->st;
    if (t->write || !atomic_load(&st->map_on)) { /* a write txn sees its own changes in LMDB */
        for (size_t i = 0; i < n; i++) {
            int rc = read_label(t, labels[i], &ids[i], &versions[i]);
            if (rc != 0 && rc != VX_ENOTFOUND) return rc;
            found[i] = rc == 0;
        }
        return 0;
    }
    uint64_t bad_label = 0;
    bool bad = false;
    pthread_rwlock_rdlock(&st->map_lock);
    for (size_t i = 0; i < n; i++) vx_hitmap_prefetch(&st->map, labels[i]);
    for (size_t i = 0; i < n && !bad; i++) {
        const uint8_t *b;
        size_t len;
        found[i] = vx_hitmap_get(&st->map, labels[i], &versions[i], &b, &len);
        if (found[i] && vx_id_from_bytes(&ids[i], b, len) != 0) {
            bad = true;
            bad_label = labels[i];
        }
    }
    pthread_rwlock_unlock(&st->map_lock);
    if (bad)
        return store_err(st, VX_ECORRUPT, "label %llu maps to a malformed id",
                         (unsigned long long)bad_label);
    return 0;
}

int vx_store_hit_by_label(vx_store_txn *t, uint64_t label, vx_point_id *id, uint64_t *version)
{
    bool found;
    int rc = vx_store_hits_by_labels(t, &label, 1, id, version, &found);
    return rc != 0 ? rc : found ? 0 : VX_ENOTFOUND;
}

/* labels[label] = (version, id): written with every record, in its txn. */
static int put_label(vx_store_txn *t, uint64_t label, const vx_point_id *id, uint64_t version)
{
    uint8_t buf[LABEL_HDR + VX_ID_MAX_BYTES];
    memcpy(buf, &version, LABEL_HDR);
    memcpy(buf + LABEL_HDR, id->b, id->len);
    size_t lk = (size_t)label;
    MDB_val k = {sizeof lk, &lk}, v = {LABEL_HDR + (size_t)id->len, buf};
    return mdb_put(t->txn, t->st->labels, &k, &v, 0);
}

static int write_record(vx_store_txn *t, const vx_point_id *id, const float *vec, uint32_t dim,
                        const char *payload, uint32_t plen, uint64_t version, uint64_t label)
{
    MDB_val k = {id->len, (void *)id->b};
    MDB_val v = {REC_HDR + (size_t)dim * 4 + 4 + plen, NULL};
    int rc = mdb_put(t->txn, t->st->points, &k, &v, MDB_RESERVE);
    if (rc != 0) return rc;
    encode_record(v.mv_data, vec, dim, payload, plen, version, label);
    return 0;
}

int vx_store_put(vx_store_txn *t, const vx_point_id *id, const float *vec, uint32_t dim,
                 const char *payload, uint32_t plen, uint64_t version, uint64_t *label_out,
                 bool *existed)
{
    if (!t->write || dim == 0 || vec == NULL) return VX_EINVAL;
    if (atomic_load(&t->st->fatal)) return VX_EFATAL;
    vx_record old;
    uint64_t label;
    int rc = vx_store_get(t, id, &old);
    if (rc == 0) {
        label = old.label;
        *existed = true;
    } else if (rc == VX_ENOTFOUND) {
        label = t->next_label++;
        t->labels_dirty = true;
        *existed = false;
    } else {
        return rc;
    }
    int m = put_label(t, label, id, version);
    if (m != 0) return store_err(t->st, map_mdb(m), "label put: %s", mdb_strerror(m));
    if (!log_change(t, label, version, id)) return VX_ENOMEM;
    rc = write_record(t, id, vec, dim, payload, plen, version, label);
    if (rc != 0) return store_err(t->st, map_mdb(rc), "put: %s", mdb_strerror(rc));
    *label_out = label;
    return 0;
}

int vx_store_put_payload(vx_store_txn *t, const vx_point_id *id, const char *payload,
                         uint32_t plen, uint64_t version)
{
    if (!t->write) return VX_EINVAL;
    if (atomic_load(&t->st->fatal)) return VX_EFATAL;
    vx_record old;
    int rc = vx_store_get(t, id, &old);
    if (rc != 0) return rc;
    /* the old value lives in the map and is overwritten by the put: copy */
    float *vec = malloc((size_t)old.dim * 4 + 1);
    if (vec == NULL) return VX_ENOMEM;
    memcpy(vec, old.vector, (size_t)old.dim * 4);
    uint64_t label = old.label;
    rc = write_record(t, id, vec, old.dim, payload, plen, version, label);
    free(vec);
    if (rc == 0) rc = put_label(t, label, id, version);
    if (rc == 0 && !log_change(t, label, version, id)) return VX_ENOMEM;
    if (rc != 0) return store_err(t->st, map_mdb(rc), "put payload: %s", mdb_strerror(rc));
    return 0;
}

int vx_store_del(vx_store_txn *t, const vx_point_id *id, uint64_t *label_out)
{
    if (!t->write) return VX_EINVAL;
    if (atomic_load(&t->st->fatal)) return VX_EFATAL;
    vx_record old;
    int rc = vx_store_get(t, id, &old);
    if (rc != 0) return rc;
    MDB_val k = {id->len, (void *)id->b};
    size_t lk = (size_t)old.label;
    MDB_val kl = {sizeof lk, &lk};
    rc = mdb_del(t->txn, t->st->points, &k, NULL);
    if (rc == 0) rc = mdb_del(t->txn, t->st->labels, &kl, NULL);
    if (rc != 0) return store_err(t->st, map_mdb(rc), "delete: %s", mdb_strerror(rc));
    if (!log_change(t, (uint64_t)lk, UINT64_MAX, NULL)) return VX_ENOMEM;
    *label_out = (uint64_t)lk;
    return 0;
}

int vx_store_set_applied(vx_store_txn *t, uint64_t index, uint64_t term)
{
    if (!t->write) return VX_EINVAL;
    if (atomic_load(&t->st->fatal)) return VX_EFATAL;
    uint64_t v[2] = {index, term};
    int rc = meta_put_u64(t->txn, t->st->meta, "applied", v, 2);
    return rc ? store_err(t->st, map_mdb(rc), "set applied: %s", mdb_strerror(rc)) : 0;
}

int vx_store_iterate(vx_store_txn *t, const vx_point_id *start, vx_store_iter_cb cb, void *ctx)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(t->txn, t->st->points, &cur);
    if (rc != 0) return store_err(t->st, map_mdb(rc), "cursor: %s", mdb_strerror(rc));
    MDB_val k, v;
    if (start) {
        k.mv_size = start->len;
        k.mv_data = (void *)start->b;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    int out = 0;
    while (rc == 0) {
        vx_point_id id;
        vx_record rec;
        if (vx_id_from_bytes(&id, k.mv_data, k.mv_size) != 0) {
            out = store_err(t->st, VX_ECORRUPT, "malformed point key of %zu bytes", k.mv_size);
            break;
        }
        out = decode_record(t->st, &id, &v, &rec);
        if (out != 0) break;
        out = cb(ctx, &id, &rec);
        if (out != 0) break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (out == 0 && rc != MDB_NOTFOUND && rc != 0)
        out = store_err(t->st, map_mdb(rc), "iterate: %s", mdb_strerror(rc));
    return out;
}

/* ---- state ------------------------------------------------------------------------ */

int vx_store_applied(vx_store *st, uint64_t *index, uint64_t *term)
{
    vx_store_txn *t;
    int rc = vx_store_rbegin(st, &t);
    if (rc != 0) return rc;
    uint64_t v[2];
    int m = meta_get_u64(t->txn, st->meta, "applied", v, 2);
    vx_store_rend(t);
    if (m != 0) return store_err(st, map_mdb(m), "read applied: %s", mdb_strerror(m));
    *index = v[0];
    if (term) *term = v[1];
    return 0;
}

uint64_t vx_store_count(vx_store *st)
{
    vx_store_txn *t;
    if (vx_store_rbegin(st, &t) != 0) return 0;
    MDB_stat s;
    uint64_t n = mdb_stat(t->txn, st->points, &s) == 0 ? s.ms_entries : 0;
    vx_store_rend(t);
    return n;
}

int vx_store_sync(vx_store *st)
{
    if (atomic_load(&st->fatal)) return VX_EFATAL;
    if (atomic_exchange(&st->inject_sync_failure, false)) return store_fail(st, 0, "fsync");
    int rc = mdb_env_sync(st->env, 1);
    if (rc != 0) return store_fail(st, rc, "fsync");
    return 0;
}

typedef struct digest_ctx {
    XXH3_state_t *h;
} digest_ctx;

static int digest_cb(void *ctx, const vx_point_id *id, const vx_record *rec)
{
    digest_ctx *d = ctx;
    uint16_t len = id->len;
    XXH3_64bits_update(d->h, &len, sizeof len);
    XXH3_64bits_update(d->h, id->b, id->len);
    XXH3_64bits_update(d->h, &rec->version, 8);
    XXH3_64bits_update(d->h, &rec->label, 8);
    XXH3_64bits_update(d->h, &rec->dim, 4);
    XXH3_64bits_update(d->h, rec->vector, (size_t)rec->dim * 4);
    XXH3_64bits_update(d->h, &rec->payload_len, 4);
    XXH3_64bits_update(d->h, rec->payload, rec->payload_len);
    return 0;
}

/* The definitions (meta keys "def:...") belong in the digest: replicas must
 * agree on them.  Secondary keys are derived from records and definitions. */
static int digest_defs(vx_store_txn *t, XXH3_state_t *h)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(t->txn, t->st->meta, &cur);
    if (rc != 0) return store_err(t->st, map_mdb(rc), "cursor: %s", mdb_strerror(rc));
    MDB_val k = {4, "def:"}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size >= 4 && memcmp(k.mv_data, "def:", 4) == 0) {
        XXH3_64bits_update(h, k.mv_data, k.mv_size);
        XXH3_64bits_update(h, v.mv_data, v.mv_size);
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : store_err(t->st, map_mdb(rc), "digest: %s", mdb_strerror(rc));
}

int vx_store_digest(vx_store *st, uint64_t *digest, uint64_t *applied)
{
    vx_store_txn *t;
    int rc = vx_store_rbegin(st, &t);
    if (rc != 0) return rc;
    uint64_t ap[2], nl;
    rc = meta_get_u64(t->txn, st->meta, "applied", ap, 2);
    if (rc == 0) rc = meta_get_u64(t->txn, st->meta, "next_label", &nl, 1);
    if (rc != 0) {
        vx_store_rend(t);
        return store_err(st, map_mdb(rc), "digest meta: %s", mdb_strerror(rc));
    }
    digest_ctx d = {XXH3_createState()};
    if (d.h == NULL) {
        vx_store_rend(t);
        return VX_ENOMEM;
    }
    XXH3_64bits_reset(d.h);
    /* content only: the applied index is reported beside it (a replica may
     * have recorded a later non-command entry as applied, same content) */
    XXH3_64bits_update(d.h, &nl, 8);
    rc = digest_defs(t, d.h);
    if (rc == 0) rc = vx_store_iterate(t, NULL, digest_cb, &d);
    *digest = XXH3_64bits_digest(d.h);
    *applied = ap[0];
    XXH3_freeState(d.h);
    vx_store_rend(t);
    return rc;
}

int vx_store_copy_fd(vx_store *st, int fd)
{
    int rc = mdb_env_copyfd2(st->env, fd, MDB_CP_COMPACT);
    if (rc != 0) return store_err(st, VX_EIO, "copy: %s", mdb_strerror(rc));
    return 0;
}

/* ---- secondary keys and definitions ------------------------------------------------ */

int vx_store_key_put(vx_store_txn *t, const void *key, size_t len)
{
    if (!t->write) return VX_EINVAL;
    if (atomic_load(&t->st->fatal)) return VX_EFATAL;
    if (len == 0 || len > 511) return VX_EINVAL; /* LMDB's default key size limit */
    MDB_val k = {len, (void *)key}, v = {0, ""};
    int rc = mdb_put(t->txn, t->st->keys, &k, &v, 0);
    return rc ? store_err(t->st, map_mdb(rc), "key put: %s", mdb_strerror(rc)) : 0;
}

int vx_store_key_del(vx_store_txn *t, const void *key, size_t len)
{
    if (!t->write) return VX_EINVAL;
    if (atomic_load(&t->st->fatal)) return VX_EFATAL;
    if (len == 0 || len > 511) return 0;
    MDB_val k = {len, (void *)key};
    int rc = mdb_del(t->txn, t->st->keys, &k, NULL);
    if (rc == MDB_NOTFOUND) return 0;
    return rc ? store_err(t->st, map_mdb(rc), "key del: %s", mdb_strerror(rc)) : 0;
}

int vx_store_key_scan(vx_store_txn *t, const void *lo, size_t lo_len, const void *hi,
                      size_t hi_len, vx_store_key_cb cb, void *ctx)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(t->txn, t->st->keys, &cur);
    if (rc != 0) return store_err(t->st, map_mdb(rc), "cursor: %s", mdb_strerror(rc));
    MDB_val k = {lo_len, (void *)lo}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    int out = 0;
    while (rc == 0) {
        size_t n = k.mv_size < hi_len ? k.mv_size : hi_len;
        int c = memcmp(k.mv_data, hi, n);
        if (c > 0 || (c == 0 && k.mv_size >= hi_len)) break; /* key >= hi */
        out = cb(ctx, k.mv_data, k.mv_size);
        if (out != 0) break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (out > 0) out = 0; /* the callback asked to stop */
    if (out == 0 && rc != 0 && rc != MDB_NOTFOUND)
        out = store_err(t->st, map_mdb(rc), "key scan: %s", mdb_strerror(rc));
    return out;
}

int vx_store_key_del_range(vx_store_txn *t, const void *lo, size_t lo_len, const void *hi,
                           size_t hi_len)
{
    if (!t->write) return VX_EINVAL;
    if (atomic_load(&t->st->fatal)) return VX_EFATAL;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(t->txn, t->st->keys, &cur);
    if (rc != 0) return store_err(t->st, map_mdb(rc), "cursor: %s", mdb_strerror(rc));
    MDB_val k = {lo_len, (void *)lo}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        size_t n = k.mv_size < hi_len ? k.mv_size : hi_len;
        int c = memcmp(k.mv_data, hi, n);
        if (c > 0 || (c == 0 && k.mv_size >= hi_len)) break;
        rc = mdb_cursor_del(cur, 0);
        if (rc != 0) break;
        k.mv_size = lo_len; /* every key before lo..deleted is gone: seek again */
        k.mv_data = (void *)lo;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return store_err(t->st, map_mdb(rc), "key delete: %s", mdb_strerror(rc));
    return 0;
}

static int def_key(const char *name, char *buf, size_t n, MDB_val *k)
{
    int len = snprintf(buf, n, "def:%s", name);
    if (len < 0 || (size_t)len >= n) return VX_EINVAL;
    k->mv_size = (size_t)len;
    k->mv_data = buf;
    return 0;
}

int vx_store_def_put(vx_store_txn *t, const char *name, const void *val, size_t len)
{
    if (!t->write) return VX_EINVAL;
    if (atomic_load(&t->st->fatal)) return VX_EFATAL;
    char buf[512];
    MDB_val k, v = {len, (void *)val};
    if (def_key(name, buf, sizeof buf, &k) != 0) return VX_EINVAL;
    int rc = mdb_put(t->txn, t->st->meta, &k, &v, 0);
    return rc ? store_err(t->st, map_mdb(rc), "def put: %s", mdb_strerror(rc)) : 0;
}

int vx_store_def_del(vx_store_txn *t, const char *name)
{
    if (!t->write) return VX_EINVAL;
    if (atomic_load(&t->st->fatal)) return VX_EFATAL;
    char buf[512];
    MDB_val k;
    if (def_key(name, buf, sizeof buf, &k) != 0) return VX_EINVAL;
    int rc = mdb_del(t->txn, t->st->meta, &k, NULL);
    if (rc == MDB_NOTFOUND) return VX_ENOTFOUND;
    return rc ? store_err(t->st, map_mdb(rc), "def del: %s", mdb_strerror(rc)) : 0;
}

int vx_store_def_iterate(vx_store_txn *t, vx_store_def_cb cb, void *ctx)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(t->txn, t->st->meta, &cur);
    if (rc != 0) return store_err(t->st, map_mdb(rc), "cursor: %s", mdb_strerror(rc));
    MDB_val k = {4, "def:"}, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    int out = 0;
    while (rc == 0 && k.mv_size > 4 && memcmp(k.mv_data, "def:", 4) == 0) {
        char name[512];
        size_t n = k.mv_size - 4 < sizeof name - 1 ? k.mv_size - 4 : sizeof name - 1;
        memcpy(name, (const char *)k.mv_data + 4, n);
        name[n] = '\0';
        out = cb(ctx, name, v.mv_data, v.mv_size);
        if (out != 0) break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (out == 0 && rc != 0 && rc != MDB_NOTFOUND)
        out = store_err(t->st, map_mdb(rc), "def iterate: %s", mdb_strerror(rc));
    return out;
}

