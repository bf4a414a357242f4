/*
 * shard.c - the shard replica state machine (see shard.h).
 */
#include "shard/shard.h"

#include "base/err.h"
#include "base/fsutil.h"
#include "index/distance.h"
#include "shard/command.h"
#include "shard/filter.h"
#include "shard/pindex.h"
#include "store/store.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { OP_ADD = 1, OP_DEL = 2 };

typedef struct index_op {
    uint64_t raft_index;
    uint64_t label;
    int op;
    float *vec; /* OP_ADD: dim floats, owned */
} index_op;

struct vx_shard {
    char dir[512];
    vx_shard_config cfg;
    uint32_t dim;
    vx_store *store;
    vx_index *index;
    vx_workpool *pool;

    /* queue of index changes, FIFO ring */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    index_op *q;
    size_t q_head, q_len, q_cap;
    size_t q_bytes; /* vector bytes held by the queue */
    bool drain_scheduled;
    uint64_t applied;      /* last applied raft index (under q_mu) */
    uint64_t indexed_upto; /* every change of entries <= this is in the index */

    pthread_mutex_t index_mu; /* serializes draining with checkpoints and vacuums */
    _Atomic bool fatal;

    /* compaction (vx_shard_config.vacuum_*): policy and counts under q_mu */
    bool vacuum, closing;
    double vacuum_ratio;
    uint64_t vacuum_min;
    bool vacuum_scheduled, vacuum_running;
    uint64_t vacuum_runs, vacuum_reclaimed;
    double vacuum_seconds;

    /* payload indexes: changed by apply (write lock), read by filtered reads */
    pthread_rwlock_t pidx_lock;
    vx_pidx_set pidx;
};

/* ---- the index queue ---------------------------------------------------------------- */

static void drain_job(void *arg);
static void vacuum_job(void *arg);
static void schedule_drain(vx_shard *sh);

/* Caller holds q_mu.  Schedule a vacuum when the policy says so and no
 * index work is waiting (the drain goes first: a vacuum holds the index's
 * structure lock, and queued writes would wait behind it). */
static void maybe_vacuum(vx_shard *sh)
{
    if (!sh->vacuum || sh->closing || sh->vacuum_scheduled || sh->q_len > 0 || sh->index == NULL)
        return;
    vx_index_stats st;
    vx_index_get_stats(sh->index, &st);
    if (st.deleted == 0 || st.deleted < sh->vacuum_min) return;
    uint64_t used = st.live + st.deleted;
    if ((double)st.deleted < sh->vacuum_ratio * (double)used) return;
    sh->vacuum_scheduled = true;
    if (vx_workpool_submit(sh->pool, vacuum_job, sh) != 0) sh->vacuum_scheduled = false;
}

static void vacuum_job(void *arg)
{
    vx_shard *sh = arg;
    pthread_mutex_lock(&sh->index_mu); /* not with a drain or a checkpoint */
    pthread_mutex_lock(&sh->q_mu);
    sh->vacuum_running = true;
    pthread_mutex_unlock(&sh->q_mu);
    vx_index_stats before, after;
    vx_index_get_stats(sh->index, &before);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = vx_index_vacuum(sh->index);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    vx_index_get_stats(sh->index, &after);
    pthread_mutex_unlock(&sh->index_mu);
    if (rc != 0) fprintf(stderr, "shard %s: vacuum failed (%d); the deleted nodes stay\n", sh->dir, rc);
    pthread_mutex_lock(&sh->q_mu);
    sh->vacuum_running = false;
    sh->vacuum_scheduled = false;
    if (rc == 0) {
        sh->vacuum_runs++;
        sh->vacuum_reclaimed += before.deleted > after.deleted ? before.deleted - after.deleted : 0;
        sh->vacuum_seconds += (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    }
    schedule_drain(sh); /* writes that queued meanwhile */
    pthread_cond_broadcast(&sh->q_cv); /* close() waits for this state change */
    pthread_mutex_unlock(&sh->q_mu);
}

void vx_shard_set_optimizer(vx_shard *sh, double vacuum_ratio, uint64_t vacuum_min)
{
    pthread_mutex_lock(&sh->q_mu);
    sh->vacuum = true;
    sh->vacuum_ratio = vacuum_ratio;
    sh->vacuum_min = vacuum_min;
    maybe_vacuum(sh);
    pthread_mutex_unlock(&sh->q_mu);
}

bool vx_shard_compacting(vx_shard *sh)
{
    pthread_mutex_lock(&sh->q_mu);
    bool c = sh->vacuum_scheduled;
    pthread_mutex_unlock(&sh->q_mu);
    return c;
}

void vx_shard_optimizer_status(vx_shard *sh, vx_shard_optimizer *out)
{
    vx_index_stats st;
    vx_index_get_stats(sh->index, &st);
    pthread_mutex_lock(&sh->q_mu);
    out->running = sh->vacuum_scheduled;
    out->deleted = st.deleted;
    out->runs = sh->vacuum_runs;
    out->reclaimed = sh->vacuum_reclaimed;
    out->seconds = sh->vacuum_seconds;
    pthread_mutex_unlock(&sh->q_mu);
}

/* Queued vectors are scored as the index would score them: unit length for
 * COSINE (the store keeps them as written). */
static void normalize_queued(const vx_shard *sh, float *vec)
{
    if (sh->cfg.index.metric != VX_METRIC_COSINE) return;
    double norm = 0.0;
    for (uint32_t d = 0; d < sh->dim; d++) norm += (double)vec[d] * vec[d];
    if (norm > 0.0)
        for (uint32_t d = 0; d < sh->dim; d++) vec[d] = (float)(vec[d] / sqrt(norm));
}

static int queue_push(vx_shard *sh, index_op op)
{
    if (sh->q_len == sh->q_cap) {
        size_t cap = sh->q_cap ? sh->q_cap * 2 : 1024;
        index_op *q = malloc(cap * sizeof(index_op));
        if (q == NULL) return VX_ENOMEM;
        for (size_t i = 0; i < sh->q_len; i++) q[i] = sh->q[(sh->q_head + i) % sh->q_cap];
        free(sh->q);
        sh->q = q;
        sh->q_cap = cap;
        sh->q_head = 0;
    }
    sh->q[(sh->q_head + sh->q_len) % sh->q_cap] = op;
    sh->q_len++;
    if (op.op == OP_ADD) sh->q_bytes += (size_t)sh->dim * sizeof(float);
    return 0;
}

/* Caller holds q_mu. */
static void update_indexed(vx_shard *sh)
{
    sh->indexed_upto = sh->q_len == 0 ? sh->applied : sh->q[sh->q_head].raft_index - 1;
    pthread_cond_broadcast(&sh->q_cv);
}

static void schedule_drain(vx_shard *sh)
{
    if (sh->drain_scheduled || sh->q_len == 0) return;
    sh->drain_scheduled = true;
    if (vx_workpool_submit(sh->pool, drain_job, sh) != 0) sh->drain_scheduled = false;
}

static void drain_job(void *arg)
{
    vx_shard *sh = arg;
    pthread_mutex_lock(&sh->index_mu);
    for (int n = 0; n < 256; n++) {
        pthread_mutex_lock(&sh->q_mu);
        if (sh->q_len == 0) {
            pthread_mutex_unlock(&sh->q_mu);
            break;
        }
        index_op op = sh->q[sh->q_head]; /* stays queued (visible to searches) until done */
        pthread_mutex_unlock(&sh->q_mu);
        if (op.op == OP_ADD) {
            char err[VX_ERRMSG_LEN];
            if (vx_index_add(sh->index, op.label, op.vec, err) != 0)
                fprintf(stderr, "shard %s: index add of label %" PRIu64 " failed: %s\n", sh->dir,
                        op.label, err);
        } else {
            vx_index_delete(sh->index, op.label); /* absent is fine */
        }
        pthread_mutex_lock(&sh->q_mu);
        sh->q_head = (sh->q_head + 1) % sh->q_cap;
        sh->q_len--;
        if (op.op == OP_ADD) sh->q_bytes -= (size_t)sh->dim * sizeof(float);
        update_indexed(sh);
        pthread_mutex_unlock(&sh->q_mu);
        free(op.vec);
    }
    pthread_mutex_unlock(&sh->index_mu);
    pthread_mutex_lock(&sh->q_mu);
    sh->drain_scheduled = false;
    schedule_drain(sh); /* more left: go to the back of the pool's queue */
    maybe_vacuum(sh);   /* none left: compact when enough is deleted */
    pthread_cond_broadcast(&sh->q_cv); /* close() waits for this state change */
    pthread_mutex_unlock(&sh->q_mu);
}

/* ---- open / restart ------------------------------------------------------------------- */

/* True when name is exactly "index-<N>.vxi" (not a leftover .tmp). */
static bool checkpoint_name(const char *name, uint64_t *n)
{
    unsigned long long v;
    char again[64];
    if (sscanf(name, "index-%llu.vxi", &v) != 1) return false;
    snprintf(again, sizeof again, "index-%llu.vxi", v);
    if (strcmp(again, name) != 0) return false;
    *n = v;
    return true;
}

/* Newest DIR/index-<N>.vxi with N <= max_n; 0 when none. */
static uint64_t newest_checkpoint(const char *dir, uint64_t max_n)
{
    DIR *d = opendir(dir);
    if (d == NULL) return 0;
    uint64_t best = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t n;
        if (checkpoint_name(e->d_name, &n) && n <= max_n && n > best) best = n;
    }
    closedir(d);
    return best;
}

typedef struct reindex_ctx {
    vx_shard *sh;
    uint64_t after;
    float *vec;
    int rc;
    uint64_t added, queued;
} reindex_ctx;

static int reindex_cb(void *ctx, const vx_point_id *id, const vx_record *rec)
{
    reindex_ctx *c = ctx;
    if (rec->version <= c->after) return 0;
    if (rec->dim != c->sh->dim) return VX_EDIM;
    size_t bytes = (size_t)rec->dim * sizeof(float);
    /* at most half of either backlog bound: searches score the queue exactly
     * (its bound keeps that cheap), and writes are not held back from the start */
    const vx_shard_config *cfg = &c->sh->cfg;
    if (cfg->background_recovery && c->sh->q_len < cfg->max_backlog / 2 &&
        c->sh->q_bytes + bytes <= cfg->max_backlog_bytes / 2) {
        /* for the background indexer: every change up to the checkpoint is in
         * the index, so the queued ones count as the entry after it */
        index_op op = {.raft_index = c->after + 1, .label = rec->label, .op = OP_ADD,
                       .vec = malloc(bytes)};
        if (op.vec != NULL) {
            memcpy(op.vec, rec->vector, bytes);
            normalize_queued(c->sh, op.vec);
            if (queue_push(c->sh, op) == 0) {
                c->queued++;
                return 0;
            }
            free(op.vec);
        }
    }
    memcpy(c->vec, rec->vector, bytes);
    char err[VX_ERRMSG_LEN];
    int rc = vx_index_add(c->sh->index, rec->label, c->vec, err);
    if (rc != 0) return rc;
    c->added++;
    return 0;
}

typedef struct stale_ctx {
    vx_store_txn *txn;
    uint64_t *labels;
    size_t n, cap;
} stale_ctx;

static int stale_cb(void *ctx, uint64_t label)
{
    stale_ctx *c = ctx;
    vx_point_id id;
    vx_record rec;
    int rc = vx_store_get_by_label(c->txn, label, &id, &rec);
    if (rc == 0) return 0;
    if (rc != VX_ENOTFOUND) return rc;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        uint64_t *l = realloc(c->labels, cap * sizeof(uint64_t));
        if (l == NULL) return VX_ENOMEM;
        c->labels = l;
        c->cap = cap;
    }
    c->labels[c->n++] = label;
    return 0;
}

/* Bring the index in line with the store (which is at `applied`). */
static int recover_index(vx_shard *sh, uint64_t applied, char *errbuf)
{
    char path[600], err[VX_ERRMSG_LEN];
    uint64_t n = newest_checkpoint(sh->dir, applied);
    uint64_t covered = 0;
    if (n > 0) {
        snprintf(path, sizeof path, "%s/index-%" PRIu64 ".vxi", sh->dir, n);
        vx_index *loaded;
        if (vx_index_load(path, &loaded, err) == 0) {
            const vx_index_config *lc = vx_index_get_config(loaded);
            if (lc->dim == sh->cfg.index.dim && lc->metric == sh->cfg.index.metric &&
                lc->quant == sh->cfg.index.quant) {
                vx_index_free(sh->index);
                sh->index = loaded;
                covered = n;
            } else {
                fprintf(stderr, "shard %s: checkpoint %s has other parameters; rebuilding\n",
                        sh->dir, path);
                vx_index_free(loaded);
            }
        } else {
            fprintf(stderr, "shard %s: checkpoint unusable (%s); rebuilding from the store\n",
                    sh->dir, err);
        }
    }
    vx_store_txn *txn;
    int rc = vx_store_rbegin(sh->store, &txn);
    if (rc != 0) return vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, rc, "%s", vx_store_errmsg(sh->store));
    /* labels deleted after the checkpoint */
    stale_ctx sc = {.txn = txn};
    if (covered > 0) rc = vx_index_for_each_label(sh->index, stale_cb, &sc);
    for (size_t i = 0; rc == 0 && i < sc.n; i++) vx_index_delete(sh->index, sc.labels[i]);
    free(sc.labels);
    /* records written after it */
    reindex_ctx rc_ctx = {.sh = sh, .after = covered, .vec = malloc((size_t)sh->dim * 4)};
    if (rc == 0) rc = rc_ctx.vec ? vx_store_iterate(txn, NULL, reindex_cb, &rc_ctx) : VX_ENOMEM;
    free(rc_ctx.vec);
    vx_store_rend(txn);
    if (rc != 0)
        return vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, rc, "re-indexing from the store: %s",
                       rc == VX_EDIM ? "a record has another dimension" : vx_strerror(rc));
    char queued[64] = "";
    if (rc_ctx.queued)
        snprintf(queued, sizeof queued, "; %" PRIu64 " queued for the background indexer",
                 rc_ctx.queued);
    if (rc_ctx.added || rc_ctx.queued || sc.n)
        fprintf(stderr,
                "shard %s: index recovered from checkpoint %" PRIu64 ": %" PRIu64
                " re-indexed, %zu removed%s\n",
                sh->dir, covered, rc_ctx.added, sc.n, queued);
    return 0;
}


/* ---- replacing a replica's data (snapshot install) ------------------------------ */

/* Finish or undo a replacement a crash interrupted: DIR.old is the previous
 * data, kept until DIR holds the new data; DIR.incoming is a transfer. */
static void recover_replacement(const char *dir)
{
    char old[600], inc[600];
    snprintf(old, sizeof old, "%s.old", dir);
    snprintf(inc, sizeof inc, "%s.incoming", dir);
    struct stat st;
    if (stat(dir, &st) != 0 && errno == ENOENT && stat(old, &st) == 0) {
        fprintf(stderr, "shard %s: an interrupted replacement left %s: restoring it\n", dir, old);
        if (rename(old, dir) != 0) return;
    }
    vx_rm_rf(old);
    vx_rm_rf(inc);
}

int vx_shard_open(const char *dir, const vx_shard_config *cfg, vx_workpool *pool,
                  vx_shard **out, char *errbuf)
{
    if (strlen(dir) >= 400) return vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EINVAL, "path too long");
    recover_replacement(dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EIO, "mkdir %s: %s", dir, strerror(errno));
    vx_shard *sh = calloc(1, sizeof(*sh));
    if (sh == NULL) return vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_ENOMEM, "shard");
    snprintf(sh->dir, sizeof sh->dir, "%s", dir);
    sh->cfg = *cfg;
    if (sh->cfg.max_backlog == 0) sh->cfg.max_backlog = 20000;
    if (sh->cfg.max_backlog_bytes == 0) sh->cfg.max_backlog_bytes = (size_t)256 << 20;
    sh->dim = cfg->index.dim;
    sh->pool = pool;
    sh->vacuum = cfg->vacuum;
    sh->vacuum_ratio = cfg->vacuum_ratio;
    sh->vacuum_min = cfg->vacuum_min;
    pthread_mutex_init(&sh->q_mu, NULL);
    pthread_cond_init(&sh->q_cv, NULL);
    pthread_mutex_init(&sh->index_mu, NULL);
    char path[600], err[VX_ERRMSG_LEN];
    snprintf(path, sizeof path, "%s/store", dir);
    int rc = vx_store_open(path, NULL, &sh->store, err);
    if (rc != 0) {
        vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, rc, "%s", err);
        goto fail;
    }
    rc = vx_index_new(&cfg->index, &sh->index, err);
    if (rc != 0) {
        vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, rc, "index: %s", err);
        goto fail;
    }
    pthread_rwlock_init(&sh->pidx_lock, NULL);
    rc = vx_store_applied(sh->store, &sh->applied, NULL);
    if (rc == 0) {
        vx_store_txn *t;
        rc = vx_store_rbegin(sh->store, &t);
        if (rc == 0) {
            rc = vx_pidx_load(t, &sh->pidx);
            vx_store_rend(t);
        }
        if (rc != 0) vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, rc, "payload indexes: %s", vx_strerror(rc));
    }
    if (rc == 0) rc = recover_index(sh, sh->applied, errbuf);
    if (rc != 0) goto fail;
    pthread_mutex_lock(&sh->q_mu);
    update_indexed(sh); /* the checkpoint's index while recovered records are queued */
    schedule_drain(sh);
    pthread_mutex_unlock(&sh->q_mu);
    *out = sh;
    return 0;
fail:
    for (size_t i = 0; i < sh->q_len; i++) free(sh->q[(sh->q_head + i) % sh->q_cap].vec);
    free(sh->q);
    vx_pidx_set_free(&sh->pidx);
    vx_index_free(sh->index);
    vx_store_close(sh->store);
    pthread_mutex_destroy(&sh->q_mu);
    pthread_cond_destroy(&sh->q_cv);
    pthread_mutex_destroy(&sh->index_mu);
    free(sh);
    return rc;
}

void vx_shard_close(vx_shard *sh)
{
    if (sh == NULL) return;
    pthread_mutex_lock(&sh->q_mu);
    sh->closing = true; /* no new vacuum; one running is waited for */
    while (sh->q_len > 0 || sh->drain_scheduled || sh->vacuum_scheduled) {
        if (!sh->drain_scheduled) schedule_drain(sh);
        if (!sh->drain_scheduled && sh->q_len > 0) { /* the pool refused (shutting down): drain here */
            sh->drain_scheduled = true;
            pthread_mutex_unlock(&sh->q_mu);
            drain_job(sh);
            pthread_mutex_lock(&sh->q_mu);
            continue;
        }
        pthread_cond_wait(&sh->q_cv, &sh->q_mu);
    }
    pthread_mutex_unlock(&sh->q_mu);
    /* a drain job may still be on its way out of drain_job */
    pthread_mutex_lock(&sh->index_mu);
    pthread_mutex_unlock(&sh->index_mu);
    pthread_mutex_lock(&sh->q_mu);
    pthread_mutex_unlock(&sh->q_mu);
    vx_index_free(sh->index);
    vx_store_close(sh->store);
    vx_pidx_set_free(&sh->pidx);
    pthread_rwlock_destroy(&sh->pidx_lock);
    free(sh->q);
    pthread_mutex_destroy(&sh->q_mu);
    pthread_cond_destroy(&sh->q_cv);
    pthread_mutex_destroy(&sh->index_mu);
    free(sh);
}

/* ---- apply ------------------------------------------------------------------------------- */

/* Merge (set) or replace (overwrite) a JSON object payload; *out malloc'd. */
static int payload_update(const char *old, uint32_t old_len, const char *json, uint32_t len,
                          bool merge, char **out)
{
    cJSON *upd = cJSON_ParseWithLength(json, len);
    if (upd == NULL || !cJSON_IsObject(upd)) {
        cJSON_Delete(upd);
        return VX_EINVAL;
    }
    cJSON *base = NULL;
    if (merge && old_len > 0) base = cJSON_ParseWithLength(old, old_len);
    if (base == NULL || !cJSON_IsObject(base)) {
        cJSON_Delete(base);
        base = cJSON_CreateObject();
    }
    if (merge) {
        cJSON *it = upd->child;
        while (it) {
            cJSON *next = it->next;
            cJSON_DetachItemViaPointer(upd, it);
            cJSON_DeleteItemFromObjectCaseSensitive(base, it->string);
            cJSON_AddItemToObject(base, it->string, it);
            it = next;
        }
    } else {
        cJSON_Delete(base);
        base = upd;
        upd = NULL;
    }
    *out = cJSON_PrintUnformatted(base);
    cJSON_Delete(base);
    cJSON_Delete(upd);
    return *out ? 0 : VX_ENOMEM;
}

static int payload_delete_keys(const char *old, uint32_t old_len, vx_cmd_reader *keys_reader,
                               uint32_t nkeys, char **out)
{
    cJSON *base = old_len ? cJSON_ParseWithLength(old, old_len) : NULL;
    if (base == NULL || !cJSON_IsObject(base)) {
        cJSON_Delete(base);
        base = cJSON_CreateObject();
    }
    vx_cmd_reader r = *keys_reader;
    for (uint32_t i = 0; i < nkeys; i++) {
        const char *k;
        uint32_t kl;
        if (vx_cmd_key(&r, &k, &kl) != 0) {
            cJSON_Delete(base);
            return VX_EINVAL;
        }
        char *key = strndup(k, kl);
        if (key == NULL) {
            cJSON_Delete(base);
            return VX_ENOMEM;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(base, key);
        free(key);
    }
    *out = cJSON_PrintUnformatted(base);
    cJSON_Delete(base);
    return *out ? 0 : VX_ENOMEM;
}

/* Points of the store a filter matches, collected in key order as their
 * canonical bytes ([u16 len][bytes]...): ~12 bytes for an integer id. */
typedef struct match_ctx {
    const vx_filter_expr *f;
    uint8_t *buf;
    size_t len, cap, n;
} match_ctx;

static int match_cb(void *ctx, const vx_point_id *id, const vx_record *rec)
{
    match_ctx *m = ctx;
    if (!vx_filter_eval_text(m->f, id, rec->payload, rec->payload_len)) return 0;
    size_t need = 2 + id->len;
    if (m->len + need > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 4096;
        while (cap < m->len + need) cap *= 2;
        uint8_t *b = realloc(m->buf, cap);
        if (b == NULL) return VX_ENOMEM;
        m->buf = b;
        m->cap = cap;
    }
    memcpy(m->buf + m->len, &id->len, 2);
    memcpy(m->buf + m->len + 2, id->b, id->len);
    m->len += need;
    m->n++;
    return 0;
}

/* Collect into *mc the points of the store that filter_json matches, as of
 * txn.  A filter that does not compile is VX_EINVAL (a no-op command). */
static int collect_matches(vx_store_txn *txn, const char *filter_json, uint32_t len,
                           match_ctx *mc)
{
    vx_filter_expr *f;
    char ferr[VX_FILTER_ERRMSG_LEN];
    int rc = vx_filter_compile_text(filter_json, len, &f, ferr);
    if (rc != 0) return rc == VX_ENOMEM ? rc : VX_EINVAL;
    mc->f = f;
    rc = vx_store_iterate(txn, NULL, match_cb, mc);
    vx_filter_free(f);
    mc->f = NULL;
    if (rc != 0) {
        free(mc->buf);
        mc->buf = NULL;
    }
    return rc;
}

/* The payload of `id` before a change, copied (NULL when there is no such
 * point), for the payload indexes; nothing when there are none. */
static int old_payload(vx_shard *sh, vx_store_txn *txn, const vx_point_id *id, char **out,
                       size_t *len)
{
    *out = NULL;
    *len = 0;
    if (sh->pidx.n == 0) return 0;
    vx_record rec;
    int rc = vx_store_get(txn, id, &rec);
    if (rc == VX_ENOTFOUND) return 0;
    if (rc != 0) return rc;
    *out = malloc(rec.payload_len + 1);
    if (*out == NULL) return VX_ENOMEM;
    memcpy(*out, rec.payload, rec.payload_len);
    *len = rec.payload_len;
    return 0;
}

/* Move the payload-index keys of `id` from old (consumed) to the new payload. */
static int pidx_after(vx_shard *sh, vx_store_txn *txn, const vx_point_id *id, char *old,
                      size_t old_len, const char *np, size_t np_len)
{
    int rc = sh->pidx.n ? vx_pidx_update(txn, &sh->pidx, id, old, old_len, np, np_len) : 0;
    free(old);
    return rc;
}

/* CREATE_INDEX / DROP_INDEX on a copy of the declarations (*next), which
 * replaces the shard's once the transaction commits. */
static int apply_index_cmd(vx_shard *sh, vx_store_txn *txn, vx_cmd_reader *r, vx_pidx_set *next,
                           vx_apply_result *res)
{
    const char *json;
    uint32_t jlen;
    int rc = vx_cmd_json(r, &json, &jlen);
    if (rc != 0) return rc;
    cJSON *j = cJSON_ParseWithLength(json, jlen);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "field_name");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "field_schema");
    int type = cJSON_IsString(t) ? vx_pidx_type_parse(t->valuestring) : 0;
    bool create = r->type == VX_CMD_CREATE_INDEX;
    if (!cJSON_IsString(f) || (create && type == 0)) {
        cJSON_Delete(j);
        return VX_EINVAL;
    }
    next->n = sh->pidx.n;
    next->v = malloc((sh->pidx.n + 1) * sizeof(vx_pidx_def));
    if (next->v == NULL) {
        cJSON_Delete(j);
        return VX_ENOMEM;
    }
    if (sh->pidx.n) memcpy(next->v, sh->pidx.v, sh->pidx.n * sizeof(vx_pidx_def));
    rc = create ? vx_pidx_create(txn, next, f->valuestring, type)
                : vx_pidx_drop(txn, next, f->valuestring);
    cJSON_Delete(j);
    if (rc == VX_ENOTFOUND) { /* dropping what is not there: done already */
        res->not_found++;
        return 0;
    }
    if (rc == 0) res->written++;
    return rc;
}

/* Apply the command's store changes inside txn; collect index changes. */
static int apply_cmd(vx_shard *sh, vx_store_txn *txn, uint64_t index, const void *cmd,
                     size_t len, vx_apply_result *res, index_op **ops, size_t *nops,
                     vx_pidx_set *next_pidx)
{
    vx_cmd_reader r;
    int rc = vx_cmd_validate(cmd, len);
    if (rc != 0) return rc;
    vx_cmd_open(&r, cmd, len);
    size_t cap = r.count ? r.count : 1;
    *ops = calloc(cap, sizeof(index_op));
    if (*ops == NULL) return VX_ENOMEM;
    if (r.type == VX_CMD_UPSERT) {
        vx_cmd_point pt;
        while ((rc = vx_cmd_next_point(&r, &pt)) == 0) {
            if (pt.dim != sh->dim) return VX_EDIM;
            float *vec = malloc((size_t)pt.dim * 4);
            if (vec == NULL) return VX_ENOMEM;
            memcpy(vec, pt.vector, (size_t)pt.dim * 4);
            for (uint32_t d = 0; d < pt.dim; d++)
                if (!isfinite(vec[d])) {
                    free(vec);
                    return VX_EINVAL;
                }
            uint64_t label;
            bool existed;
            char *oldp;
            size_t oldl;
            rc = old_payload(sh, txn, &pt.id, &oldp, &oldl);
            if (rc == 0)
                rc = vx_store_put(txn, &pt.id, vec, pt.dim, pt.payload, pt.payload_len, index,
                                  &label, &existed);
            if (rc == 0) rc = pidx_after(sh, txn, &pt.id, oldp, oldl, pt.payload, pt.payload_len);
            else free(oldp);
            if (rc != 0) {
                free(vec);
                return rc;
            }
            normalize_queued(sh, vec);
            (*ops)[(*nops)++] = (index_op){index, label, OP_ADD, vec};
            res->written++;
        }
        return rc == VX_ENOTFOUND ? 0 : rc;
    }
    vx_point_id id;
    if (r.type == VX_CMD_DELETE_FILTER) {
        const char *json;
        uint32_t jlen;
        rc = vx_cmd_json(&r, &json, &jlen);
        if (rc != 0) return rc;
        match_ctx mc = {0};
        rc = collect_matches(txn, json, jlen, &mc);
        if (rc == 0 && mc.n > 0) {
            index_op *grown = realloc(*ops, mc.n * sizeof(index_op));
            if (grown == NULL) rc = VX_ENOMEM;
            else *ops = grown;
        }
        for (size_t off = 0; rc == 0 && off < mc.len;) {
            uint16_t n;
            memcpy(&n, mc.buf + off, 2);
            vx_point_id pid;
            rc = vx_id_from_bytes(&pid, mc.buf + off + 2, n);
            off += 2 + (size_t)n;
            uint64_t label;
            char *oldp = NULL;
            size_t oldl = 0;
            if (rc == 0) rc = old_payload(sh, txn, &pid, &oldp, &oldl);
            if (rc == 0) rc = vx_store_del(txn, &pid, &label);
            if (rc == 0) rc = pidx_after(sh, txn, &pid, oldp, oldl, NULL, 0);
            else free(oldp);
            if (rc == 0) {
                (*ops)[(*nops)++] = (index_op){index, label, OP_DEL, NULL};
                res->written++;
            }
        }
        free(mc.buf);
        return rc;
    }
    if (r.type == VX_CMD_DELETE_IDS) {
        while ((rc = vx_cmd_next_id(&r, &id)) == 0) {
            uint64_t label;
            char *oldp;
            size_t oldl;
            rc = old_payload(sh, txn, &id, &oldp, &oldl);
            if (rc == 0) rc = vx_store_del(txn, &id, &label);
            if (rc == 0) rc = pidx_after(sh, txn, &id, oldp, oldl, NULL, 0);
            else free(oldp);
            if (rc == VX_ENOTFOUND) {
                res->not_found++;
                continue;
            }
            if (rc != 0) return rc;
            (*ops)[(*nops)++] = (index_op){index, label, OP_DEL, NULL};
            res->written++;
        }
        return rc == VX_ENOTFOUND ? 0 : rc;
    }
    if (r.type == VX_CMD_CREATE_INDEX || r.type == VX_CMD_DROP_INDEX)
        return apply_index_cmd(sh, txn, &r, next_pidx, res);
    /* payload commands: ids (or a target filter) first, then the JSON or keys */
    vx_cmd_reader ids = r;
    while ((rc = vx_cmd_next_id(&r, &id)) == 0) {
    }
    match_ctx targets = {0};
    size_t toff = 0;
    if (r.by_filter) {
        const char *fj;
        uint32_t fl;
        rc = vx_cmd_target_filter(&r, &fj, &fl);
        if (rc == 0) rc = collect_matches(txn, fj, fl, &targets);
        if (rc != 0) return rc;
    }
    const char *json = NULL;
    uint32_t jlen = 0, nkeys = 0;
    if (r.type == VX_CMD_DELETE_PAYLOAD_KEYS)
        rc = vx_cmd_keys(&r, &nkeys);
    else
        rc = vx_cmd_json(&r, &json, &jlen);
    if (rc != 0) {
        free(targets.buf);
        return rc;
    }
    for (;;) {
        if (r.by_filter) {
            if (toff >= targets.len) {
                rc = VX_ENOTFOUND;
                break;
            }
            uint16_t n;
            memcpy(&n, targets.buf + toff, 2);
            rc = vx_id_from_bytes(&id, targets.buf + toff + 2, n);
            toff += 2 + (size_t)n;
            if (rc != 0) break;
        } else if ((rc = vx_cmd_next_id(&ids, &id)) != 0) {
            break;
        }
        vx_record old;
        rc = vx_store_get(txn, &id, &old);
        if (rc == VX_ENOTFOUND) {
            res->not_found++;
            continue;
        }
        if (rc != 0) break;
        char *np = NULL, *oldp = NULL;
        size_t oldl = old.payload_len;
        if (sh->pidx.n && (oldp = malloc(oldl + 1)) == NULL) {
            rc = VX_ENOMEM;
            break;
        }
        if (oldp) memcpy(oldp, old.payload, oldl); /* the view ends with the next write */
        if (r.type == VX_CMD_DELETE_PAYLOAD_KEYS)
            rc = payload_delete_keys(old.payload, old.payload_len, &r, nkeys, &np);
        else
            rc = payload_update(old.payload, old.payload_len, json, jlen,
                                r.type == VX_CMD_SET_PAYLOAD, &np);
        if (rc == 0) rc = vx_store_put_payload(txn, &id, np, (uint32_t)strlen(np), index);
        if (rc == 0) rc = pidx_after(sh, txn, &id, oldp, oldl, np, strlen(np));
        else free(oldp);
        free(np);
        if (rc != 0) break;
        res->written++;
    }
    free(targets.buf);
    return rc == VX_ENOTFOUND ? 0 : rc;
}

int vx_shard_apply(vx_shard *sh, uint64_t index, uint64_t term, const void *cmd, size_t len,
                   vx_apply_result *res)
{
    memset(res, 0, sizeof(*res));
    if (atomic_load(&sh->fatal)) return VX_EFATAL;
    pthread_mutex_lock(&sh->q_mu);
    uint64_t applied = sh->applied;
    pthread_mutex_unlock(&sh->q_mu);
    if (index <= applied) return 0; /* replay of an entry already in the store */

    vx_store_txn *txn;
    int rc = vx_store_wbegin(sh->store, &txn);
    if (rc != 0) goto store_failed;
    index_op *ops = NULL;
    size_t nops = 0;
    vx_pidx_set next_pidx = {0};
    int st = apply_cmd(sh, txn, index, cmd, len, res, &ops, &nops, &next_pidx);
    if (st != 0) vx_pidx_set_free(&next_pidx);
    if (st == VX_EFATAL || st == VX_EIO || st == VX_ECORRUPT || st == VX_ENOMEM || st == VX_EFULL) {
        rc = st;
        vx_store_abort(txn);
        goto ops_failed;
    }
    if (st != 0) {
        /* A bad command: no-op, identically on every replica. */
        vx_store_abort(txn);
        for (size_t i = 0; i < nops; i++) free(ops[i].vec);
        nops = 0;
        memset(res, 0, sizeof(*res));
        res->status = st;
        rc = vx_store_wbegin(sh->store, &txn);
        if (rc != 0) goto ops_failed;
    }
    rc = vx_store_set_applied(txn, index, term);
    if (rc == 0) rc = vx_store_commit(txn);
    else vx_store_abort(txn);
    if (rc != 0) {
        vx_pidx_set_free(&next_pidx);
        goto ops_failed;
    }
    if (next_pidx.v != NULL) { /* the declarations changed with this entry */
        pthread_rwlock_wrlock(&sh->pidx_lock);
        vx_pidx_set_free(&sh->pidx);
        sh->pidx = next_pidx;
        pthread_rwlock_unlock(&sh->pidx_lock);
    }

    pthread_mutex_lock(&sh->q_mu);
    sh->applied = index;
    for (size_t i = 0; i < nops; i++) {
        if (queue_push(sh, ops[i]) != 0) { /* cannot queue: apply directly, in order */
            pthread_mutex_unlock(&sh->q_mu);
            pthread_mutex_lock(&sh->index_mu);
            if (ops[i].op == OP_ADD)
                vx_index_add(sh->index, ops[i].label, ops[i].vec, NULL);
            else
                vx_index_delete(sh->index, ops[i].label);
            pthread_mutex_unlock(&sh->index_mu);
            free(ops[i].vec);
            pthread_mutex_lock(&sh->q_mu);
        }
    }
    update_indexed(sh);
    schedule_drain(sh);
    pthread_mutex_unlock(&sh->q_mu);
    free(ops);
    return 0;

ops_failed:
    for (size_t i = 0; i < nops; i++) free(ops[i].vec);
    free(ops);
store_failed:
    /* Applying a committed entry failed for a storage reason: fail-stop. */
    atomic_store(&sh->fatal, true);
    fprintf(stderr, "shard %s: apply of entry %" PRIu64 " failed (%s): %s; replica stopped\n",
            sh->dir, index, vx_strerror(rc), vx_store_errmsg(sh->store));
    return VX_EFATAL;
}

/* ---- reads --------------------------------------------------------------------------------- */

typedef struct pending {
    uint64_t label;
    size_t seq; /* position in the queue: later changes win */
    int op;
    const float *vec;
} pending;

static int pending_cmp(const void *a, const void *b)
{
    const pending *x = a, *y = b;
    if (x->label != y->label) return (x->label > y->label) - (x->label < y->label);
    return (x->seq > y->seq) - (x->seq < y->seq);
}

static bool pending_has(const pending *p, size_t n, uint64_t label)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p[mid].label < label)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && p[lo].label == label;
}

static int hit_cmp(const void *a, const void *b)
{
    const vx_hit *x = a, *y = b;
    if (x->distance != y->distance) return x->distance < y->distance ? -1 : 1;
    return (x->label > y->label) - (x->label < y->label);
}

typedef struct label_filter {
    vx_store_txn *txn;
    const vx_filter_expr *f;
} label_filter;

/* The index's predicate: look the point up by label, test its payload. */
static bool label_matches(void *ctx, uint64_t label)
{
    label_filter *lf = ctx;
    vx_point_id id;
    vx_record rec;
    if (vx_store_get_by_label(lf->txn, label, &id, &rec) != 0) return false;
    return vx_filter_eval_text(lf->f, &id, rec.payload, rec.payload_len);
}

static int shard_hit_cmp(const void *a, const void *b)
{
    const vx_shard_hit *x = a, *y = b;
    if (x->distance != y->distance) return x->distance < y->distance ? -1 : 1;
    size_t n = x->id.len < y->id.len ? x->id.len : y->id.len;
    int c = memcmp(x->id.b, y->id.b, n);
    return c ? c : (x->id.len > y->id.len) - (x->id.len < y->id.len);
}

/* Exact k nearest among the candidates a payload index named (the store is
 * the applied state, queued changes included); q is normalized already. */
static int search_candidates(vx_shard *sh, vx_store_txn *txn, const float *q, uint32_t k,
                             const vx_filter_expr *flt, const vx_point_id *ids, size_t n,
                             vx_shard_hit *out, uint32_t *n_out)
{
    vx_shard_hit *hits = malloc((n ? n : 1) * sizeof(vx_shard_hit));
    float *v = malloc((size_t)sh->dim * 4);
    if (hits == NULL || v == NULL) {
        free(hits);
        free(v);
        return VX_ENOMEM;
    }
    size_t m = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        vx_record rec;
        int g = vx_store_get(txn, &ids[i], &rec);
        if (g == VX_ENOTFOUND) continue;
        if (g != 0) {
            rc = g;
            break;
        }
        if (rec.dim != sh->dim || !vx_filter_eval_text(flt, &ids[i], rec.payload, rec.payload_len))
            continue;
        memcpy(v, rec.vector, (size_t)sh->dim * 4);
        float d;
        if (sh->cfg.index.metric == VX_METRIC_L2) {
            d = vx_kern.l2sq_f32(q, v, sh->dim);
        } else {
            d = -vx_kern.dot_f32(q, v, sh->dim);
            if (sh->cfg.index.metric == VX_METRIC_COSINE) {
                double norm = 0;
                for (uint32_t j = 0; j < sh->dim; j++) norm += (double)v[j] * v[j];
                if (norm > 0) d = (float)(d / sqrt(norm));
            }
        }
        hits[m++] = (vx_shard_hit){ids[i], d, rec.version};
    }
    if (rc == 0) {
        qsort(hits, m, sizeof(vx_shard_hit), shard_hit_cmp);
        *n_out = (uint32_t)(m < k ? m : k);
        memcpy(out, hits, *n_out * sizeof(vx_shard_hit));
    }
    free(hits);
    free(v);
    return rc;
}

int vx_shard_search(vx_shard *sh, const float *query, uint32_t k, const vx_search_params *params,
                    vx_shard_hit *out, uint32_t *n_out)
{
    return vx_shard_search_filtered(sh, query, k, params, NULL, out, n_out);
}

static int search_once(vx_shard *sh, const float *query, uint32_t k, const vx_search_params *params,
                       const vx_filter_expr *flt, vx_shard_hit *out, uint32_t *n_out,
                       uint32_t *missed);

/* The store's read transaction is taken before the queue and the index are
 * read, so a point written (and indexed) in between is named by a label the
 * transaction does not know yet, and skipped: with writes racing the search
 * that could leave fewer than k hits although enough points exist (seen
 * while a compaction held the index and a backlog drained behind it).  Such
 * an answer is searched again on a fresh transaction, a few times at most. */
int vx_shard_search_filtered(vx_shard *sh, const float *query, uint32_t k,
                             const vx_search_params *params, const vx_filter_expr *flt,
                             vx_shard_hit *out, uint32_t *n_out)
{
    for (int attempt = 0;; attempt++) {
        uint32_t missed = 0;
        int rc = search_once(sh, query, k, params, flt, out, n_out, &missed);
        if (rc != 0 || *n_out >= k || missed == 0 || attempt == 3) return rc;
    }
}

static int search_once(vx_shard *sh, const float *query, uint32_t k, const vx_search_params *params,
                       const vx_filter_expr *flt, vx_shard_hit *out, uint32_t *n_out,
                       uint32_t *missed)
{
    *n_out = 0;
    if (k == 0) return 0;
    /* One read transaction serves the filter and the label -> id lookups. */
    vx_store_txn *txn;
    int trc = vx_store_rbegin(sh->store, &txn);
    if (trc != 0) return trc;
    label_filter lf = {txn, flt};
    vx_filter idx_filter = {.match = label_matches, .ctx = &lf, .selectivity = -1.0};
    const vx_index_config *ic = &sh->cfg.index;
    float *q = malloc((size_t)sh->dim * 4);
    if (q == NULL) {
        vx_store_rend(txn);
        return VX_ENOMEM;
    }
    memcpy(q, query, (size_t)sh->dim * 4);
    if (ic->metric == VX_METRIC_COSINE) {
        double norm = 0;
        for (uint32_t d = 0; d < sh->dim; d++) norm += (double)q[d] * q[d];
        if (norm > 0)
            for (uint32_t d = 0; d < sh->dim; d++) q[d] = (float)(q[d] / sqrt(norm));
    }
    vx_kernels_init();
    if (flt != NULL && !(params && params->exact)) {
        /* A payload index may name the few points that can match: score
         * exactly those; else its count is the filter's selectivity. */
        uint64_t total = vx_store_count(sh->store);
        size_t limit = 4096 + (size_t)(total / 100), cn = 0;
        vx_point_id *cids = NULL;
        pthread_rwlock_rdlock(&sh->pidx_lock);
        int prc = sh->pidx.n ? vx_pidx_candidates(txn, &sh->pidx, flt, limit, &cids, &cn)
                             : VX_ENOTFOUND;
        pthread_rwlock_unlock(&sh->pidx_lock);
        if (prc == 0) {
            int rc = search_candidates(sh, txn, q, k, flt, cids, cn, out, n_out);
            free(cids);
            free(q);
            vx_store_rend(txn);
            return rc;
        }
        if (prc == VX_EFULL && total > 0 && cn <= limit * 4 + 1024)
            idx_filter.selectivity = (double)cn / (double)total > 1.0 ? 1.0 : (double)cn / total;
        else if (prc != VX_EFULL && prc != VX_ENOTFOUND) {
            free(q);
            vx_store_rend(txn);
            return prc;
        }
    }
    /* Score the queued changes exactly, under the queue lock (it is bounded
     * by the backlog limit); the last change of a label wins. */
    pthread_mutex_lock(&sh->q_mu);
    size_t np = sh->q_len;
    pending *pend = np ? malloc(np * sizeof(pending)) : NULL;
    vx_hit *cand = malloc((np + k) * sizeof(vx_hit));
    if ((np && pend == NULL) || cand == NULL) {
        pthread_mutex_unlock(&sh->q_mu);
        free(pend);
        free(cand);
        free(q);
        vx_store_rend(txn);
        return VX_ENOMEM;
    }
    for (size_t i = 0; i < np; i++) {
        const index_op *op = &sh->q[(sh->q_head + i) % sh->q_cap];
        pend[i] = (pending){op->label, i, op->op, op->vec};
    }
    if (np) qsort(pend, np, sizeof(pending), pending_cmp); /* by label, then queue order */
    size_t nc = 0;
    for (size_t i = 0; i < np; i++) {
        if (i + 1 < np && pend[i + 1].label == pend[i].label) continue;
        if (pend[i].op != OP_ADD) continue;
        if (flt != NULL && !label_matches(&lf, pend[i].label)) continue;
        float d = ic->metric == VX_METRIC_L2 ? vx_kern.l2sq_f32(q, pend[i].vec, sh->dim)
                                             : -vx_kern.dot_f32(q, pend[i].vec, sh->dim);
        cand[nc++] = (vx_hit){pend[i].label, d};
    }
    pthread_mutex_unlock(&sh->q_mu);

    uint32_t kk = k + (uint32_t)(np < 100000 ? np : 100000);
    vx_hit *ih = malloc(kk * sizeof(vx_hit));
    uint32_t ni = 0;
    int rc = ih ? vx_index_search(sh->index, q, kk, params, flt ? &idx_filter : NULL, ih, &ni)
                : VX_ENOMEM;
    if (rc == 0) {
        cand = realloc(cand, (nc + ni) * sizeof(vx_hit) + sizeof(vx_hit));
        for (uint32_t i = 0; i < ni; i++)
            if (!pending_has(pend, np, ih[i].label)) cand[nc++] = ih[i];
        if (nc) qsort(cand, nc, sizeof(vx_hit), hit_cmp);
    }
    free(ih);
    free(pend);
    free(q);
    if (rc != 0) {
        free(cand);
        vx_store_rend(txn);
        return rc;
    }
    /* labels -> ids, in chunks of what is still missing; a point deleted
     * meanwhile is skipped */
    uint32_t n = 0;
    for (size_t i = 0; rc == 0 && i < nc && n < k;) {
        enum { CHUNK = 16 };
        uint64_t labels[CHUNK], versions[CHUNK];
        vx_point_id ids[CHUNK];
        bool found[CHUNK];
        size_t want = k - n < CHUNK ? k - n : CHUNK;
        size_t m = nc - i < want ? nc - i : want;
        for (size_t j = 0; j < m; j++) labels[j] = cand[i + j].label;
        rc = vx_store_hits_by_labels(txn, labels, m, ids, versions, found);
        for (size_t j = 0; rc == 0 && j < m; j++) {
            if (!found[j]) {
                (*missed)++;
                continue;
            }
            out[n] = (vx_shard_hit){.id = ids[j], .version = versions[j],
                                    .distance = cand[i + j].distance};
            n++;
        }
        i += m;
    }
    vx_store_rend(txn);
    free(cand);
    *n_out = n;
    return rc;
}

int vx_shard_get(vx_shard *sh, const vx_point_id *id, float *vec, char **payload,
                 uint64_t *version)
{
    vx_store_txn *txn;
    int rc = vx_store_rbegin(sh->store, &txn);
    if (rc != 0) return rc;
    vx_record rec;
    rc = vx_store_get(txn, id, &rec);
    if (rc == 0) {
        if (vec) memcpy(vec, rec.vector, (size_t)rec.dim * 4);
        if (version) *version = rec.version;
        if (payload) {
            *payload = strndup(rec.payload, rec.payload_len);
            if (*payload == NULL) rc = VX_ENOMEM;
        }
    }
    vx_store_rend(txn);
    return rc;
}

uint64_t vx_shard_applied(vx_shard *sh)
{
    pthread_mutex_lock(&sh->q_mu);
    uint64_t a = sh->applied;
    pthread_mutex_unlock(&sh->q_mu);
    return a;
}

uint64_t vx_shard_count(vx_shard *sh) { return vx_store_count(sh->store); }

size_t vx_shard_backlog(vx_shard *sh)
{
    pthread_mutex_lock(&sh->q_mu);
    size_t n = sh->q_len;
    pthread_mutex_unlock(&sh->q_mu);
    return n;
}

bool vx_shard_backlog_full(vx_shard *sh)
{
    pthread_mutex_lock(&sh->q_mu);
    bool full = sh->q_len >= sh->cfg.max_backlog || sh->q_bytes >= sh->cfg.max_backlog_bytes;
    pthread_mutex_unlock(&sh->q_mu);
    return full;
}

/* now + ms on the clock q_cv waits with (CLOCK_REALTIME, the default) */
static struct timespec deadline_after(int ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    return dl;
}

int vx_shard_wait_backlog(vx_shard *sh, int timeout_ms)
{
    struct timespec dl = deadline_after(timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&sh->q_mu);
    /* the indexer signals q_cv with every change it takes off the queue */
    while ((sh->q_len >= sh->cfg.max_backlog || sh->q_bytes >= sh->cfg.max_backlog_bytes) && rc == 0)
        rc = pthread_cond_timedwait(&sh->q_cv, &sh->q_mu, &dl);
    bool full = sh->q_len >= sh->cfg.max_backlog || sh->q_bytes >= sh->cfg.max_backlog_bytes;
    pthread_mutex_unlock(&sh->q_mu);
    return full ? VX_EFULL : 0;
}

int vx_shard_wait_indexed(vx_shard *sh, int timeout_ms)
{
    struct timespec dl = deadline_after(timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&sh->q_mu);
    while (sh->indexed_upto < sh->applied && rc == 0)
        rc = pthread_cond_timedwait(&sh->q_cv, &sh->q_mu, &dl);
    bool done = sh->indexed_upto >= sh->applied;
    pthread_mutex_unlock(&sh->q_mu);
    return done ? 0 : VX_ESTATE;
}

int vx_shard_digest(vx_shard *sh, uint64_t *digest, uint64_t *applied)
{
    return vx_store_digest(sh->store, digest, applied);
}

bool vx_shard_failed(vx_shard *sh) { return atomic_load(&sh->fatal) || vx_store_failed(sh->store); }
vx_index *vx_shard_index(vx_shard *sh) { return sh->index; }

int vx_shard_checkpoint(vx_shard *sh, char *errbuf)
{
    int rc = vx_store_sync(sh->store);
    if (rc != 0) {
        atomic_store(&sh->fatal, true);
        return vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, rc, "%s", vx_store_errmsg(sh->store));
    }
    pthread_mutex_lock(&sh->index_mu); /* no drain in progress */
    pthread_mutex_lock(&sh->q_mu);
    uint64_t covered = sh->indexed_upto;
    pthread_mutex_unlock(&sh->q_mu);
    if (covered > 0 && newest_checkpoint(sh->dir, UINT64_MAX) == covered) {
        pthread_mutex_unlock(&sh->index_mu); /* nothing new since the last one */
        return 0;
    }
    char path[800], err[VX_ERRMSG_LEN];
    snprintf(path, sizeof path, "%s/index-%" PRIu64 ".vxi", sh->dir, covered);
    rc = vx_index_save(sh->index, path, err);
    pthread_mutex_unlock(&sh->index_mu);
    if (rc != 0) return vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, rc, "index checkpoint: %s", err);
    /* remove older checkpoints */
    DIR *d = opendir(sh->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            uint64_t n;
            if (checkpoint_name(e->d_name, &n) && n != covered) {
                snprintf(path, sizeof path, "%s/%s", sh->dir, e->d_name);
                unlink(path);
            }
        }
        closedir(d);
    }
    return 0;
}

const char *vx_shard_dir(vx_shard *sh) { return sh->dir; }
vx_store *vx_shard_store(vx_shard *sh) { return sh->store; }
const vx_shard_config *vx_shard_get_config(vx_shard *sh) { return &sh->cfg; }

int vx_shard_open_checkpoint(vx_shard *sh, int *fd, uint64_t *index, uint64_t *size)
{
    /* a checkpoint being written meanwhile may remove the one found: look again */
    for (int attempt = 0; attempt < 8; attempt++) {
        uint64_t n = newest_checkpoint(sh->dir, UINT64_MAX);
        if (n == 0) break;
        char path[600];
        snprintf(path, sizeof path, "%s/index-%" PRIu64 ".vxi", sh->dir, n);
        int f = open(path, O_RDONLY | O_CLOEXEC);
        if (f < 0) continue;
        struct stat st;
        if (fstat(f, &st) != 0) {
            close(f);
            return VX_EIO;
        }
        *fd = f;
        *index = n;
        *size = (uint64_t)st.st_size;
        return 0;
    }
    *fd = -1;
    *index = 0;
    *size = 0;
    return VX_ENOTFOUND;
}

int vx_shard_install(vx_shard **shp, char *errbuf)
{
    vx_shard *sh = *shp;
    char dir[512], old[600], inc[600], marker[700], parent[512], err[VX_SHARD_ERRMSG_LEN];
    snprintf(dir, sizeof dir, "%s", sh->dir);
    snprintf(old, sizeof old, "%s.old", dir);
    snprintf(inc, sizeof inc, "%s.incoming", dir);
    snprintf(marker, sizeof marker, "%s/RECEIVED", inc);
    vx_parent_dir(dir, parent, sizeof parent);
    struct stat st;
    if (stat(marker, &st) != 0)
        return vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_ESTATE, "no complete transfer in %s", inc);
    vx_shard_config cfg = sh->cfg;
    vx_workpool *pool = sh->pool;
    /* The data is being replaced: its queued index work is moot, and close()
     * would wait for all of it (on the loop).  The head stays: a drain may
     * be inserting it right now. */
    pthread_mutex_lock(&sh->q_mu);
    for (size_t i = 1; i < sh->q_len; i++) {
        index_op *op = &sh->q[(sh->q_head + i) % sh->q_cap];
        if (op->op == OP_ADD) sh->q_bytes -= (size_t)sh->dim * sizeof(float);
        free(op->vec);
    }
    if (sh->q_len > 1) sh->q_len = 1;
    pthread_mutex_unlock(&sh->q_mu);
    vx_shard_close(sh);
    *shp = NULL;
    vx_rm_rf(old);
    int rc = VX_EIO;
    if (rename(dir, old) != 0) {
        vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EIO, "rename %s: %s", dir, strerror(errno));
        goto reopen_old;
    }
    if (rename(inc, dir) != 0) {
        vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EIO, "rename %s: %s", inc, strerror(errno));
        if (rename(old, dir) != 0) return VX_EFATAL;
        goto reopen_old;
    }
    snprintf(marker, sizeof marker, "%s/RECEIVED", dir);
    unlink(marker);
    if (vx_fsync_dir(parent) != 0) {
        vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EFATAL, "fsync %s: %s", parent, strerror(errno));
        return VX_EFATAL; /* fail-stop: the restart recovers one side or the other */
    }
    rc = vx_shard_open(dir, &cfg, pool, shp, err);
    if (rc == 0) {
        vx_rm_rf(old);
        return 0;
    }
    vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, rc, "the received data does not open: %s", err);
    vx_rm_rf(dir);
    if (rename(old, dir) != 0) return VX_EFATAL;
reopen_old:
    if (vx_shard_open(dir, &cfg, pool, shp, err) != 0) {
        vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EFATAL, "reopening the previous data: %s", err);
        return VX_EFATAL;
    }
    return rc;
}

int vx_shard_payload_indexes(vx_shard *sh, vx_shard_pindex_info **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    vx_store_txn *txn;
    int rc = vx_store_rbegin(sh->store, &txn);
    if (rc != 0) return rc;
    pthread_rwlock_rdlock(&sh->pidx_lock);
    vx_shard_pindex_info *v = calloc(sh->pidx.n ? sh->pidx.n : 1, sizeof(*v));
    if (v == NULL) rc = VX_ENOMEM;
    for (size_t i = 0; rc == 0 && i < sh->pidx.n; i++) {
        snprintf(v[i].field, sizeof v[i].field, "%s", sh->pidx.v[i].field);
        v[i].type = sh->pidx.v[i].type;
        rc = vx_pidx_points(txn, &sh->pidx, v[i].field, &v[i].points);
    }
    size_t count = sh->pidx.n;
    pthread_rwlock_unlock(&sh->pidx_lock);
    vx_store_rend(txn);
    if (rc != 0) {
        free(v);
        return rc;
    }
    *out = v;
    *n = count;
    return 0;
}

typedef struct scan_ctx {
    const vx_filter_expr *flt;
    vx_shard_scan_cb cb;
    void *ctx;
} scan_ctx;

static int scan_adapter(void *ctx, const vx_point_id *id, const vx_record *rec)
{
    scan_ctx *s = ctx;
    if (s->flt && !vx_filter_eval_text(s->flt, id, rec->payload, rec->payload_len)) return 0;
    return s->cb(s->ctx, id, rec);
}

int vx_shard_scan(vx_shard *sh, const vx_point_id *start, const vx_filter_expr *flt,
                  vx_shard_scan_cb cb, void *ctx)
{
    vx_store_txn *txn;
    int rc = vx_store_rbegin(sh->store, &txn);
    if (rc != 0) return rc;
    scan_ctx s = {flt, cb, ctx};
    rc = vx_store_iterate(txn, start, scan_adapter, &s);
    vx_store_rend(txn);
    return rc > 0 ? 0 : rc;
}

int vx_shard_mark_applied(vx_shard *sh, uint64_t index, uint64_t term)
{
    if (atomic_load(&sh->fatal)) return VX_EFATAL;
    pthread_mutex_lock(&sh->q_mu);
    uint64_t applied = sh->applied;
    pthread_mutex_unlock(&sh->q_mu);
    if (index <= applied) return 0;
    vx_store_txn *txn;
    int rc = vx_store_wbegin(sh->store, &txn);
    if (rc == 0) {
        rc = vx_store_set_applied(txn, index, term);
        if (rc == 0) rc = vx_store_commit(txn);
        else vx_store_abort(txn);
    }
    if (rc != 0) {
        atomic_store(&sh->fatal, true);
        return VX_EFATAL;
    }
    pthread_mutex_lock(&sh->q_mu);
    sh->applied = index;
    update_indexed(sh);
    pthread_mutex_unlock(&sh->q_mu);
    return 0;
}

