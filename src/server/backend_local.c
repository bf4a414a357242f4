/*
 * backend_local.c - the API's backend over a local runtime (backend.h):
 * `vectron serve`.  A vx_bcol is the runtime's vx_collection; shard
 * operations run on the shard objects of this process.
 */
#include "server/backend.h"

#include "base/err.h"
#include "store/store.h"

#include <stdlib.h>
#include <string.h>

static vx_collection *col(vx_bcol *c) { return (vx_collection *)c; }

static int l_list(void *self, char ***names, size_t *n) { return vx_rt_list_collections(self, names, n); }

static int l_create(void *self, const char *name, const vx_collection_config *cfg, const char *body,
                    char *errbuf)
{
    (void)body;
    return vx_rt_create_collection(self, name, cfg, errbuf);
}

static int l_update(void *self, const char *name, const vx_collection_config *cfg, char *errbuf)
{
    return vx_rt_update_collection(self, name, cfg, errbuf);
}

static int l_drop(void *self, const char *name, char *errbuf) { return vx_rt_delete_collection(self, name, errbuf); }

static vx_bcol *l_open(void *self, const char *name, int *why)
{
    *why = VX_ENOTFOUND;
    return (vx_bcol *)vx_rt_collection_get(self, name);
}

static void l_close(vx_bcol *c) { vx_rt_collection_put(col(c)); }

static bool l_ready(void *self) { return vx_runtime_ready(self); }

static const vx_collection_config *l_config(vx_bcol *c) { return vx_collection_get_config(col(c)); }

static uint32_t l_nshards(vx_bcol *c) { return vx_collection_shards(col(c)); }

static uint32_t l_route(vx_bcol *c, const vx_point_id *id) { return vx_collection_route(col(c), id); }

static int l_propose(vx_bcol *c, uint32_t i, uint8_t *cmd, size_t len, int timeout_ms, int *status,
                     char *errbuf)
{
    (void)errbuf;
    return vx_collection_propose(col(c), i, cmd, len, timeout_ms, status);
}

static int l_barrier(vx_bcol *c, uint32_t i, int timeout_ms) { return vx_collection_barrier(col(c), i, timeout_ms); }

static int l_search(vx_bcol *c, uint32_t i, const float *q, uint32_t k, const vx_search_params *p,
                    const vx_bfilter *f, const vx_read_opts *ro, vx_shard_hit *out, uint32_t *n)
{
    (void)ro; /* in process: no deadline to keep, the shard is this replica */
    vx_shard *sh = vx_collection_shard_acquire(col(c), i);
    int rc = vx_shard_search_filtered(sh, q, k, p, f ? f->expr : NULL, out, n);
    vx_collection_shard_release(col(c), i);
    return rc;
}

static int l_get(vx_bcol *c, uint32_t i, const vx_point_id *id, float *vec, char **payload,
                 uint64_t *version)
{
    vx_shard *sh = vx_collection_shard_acquire(col(c), i);
    int rc = vx_shard_get(sh, id, vec, payload, version);
    vx_collection_shard_release(col(c), i);
    return rc;
}

typedef struct scan_acc {
    vx_point_id *ids;
    size_t n, cap;
    uint64_t count;
} scan_acc;

static int collect_cb(void *ctx, const vx_point_id *id, const vx_record *rec)
{
    scan_acc *a = ctx;
    (void)rec;
    if (a->n == a->cap) return 1;
    a->ids[a->n++] = *id;
    return 0;
}

static int l_scan_ids(vx_bcol *c, uint32_t i, const vx_point_id *start, const vx_bfilter *f, size_t limit,
                      vx_point_id *ids, size_t *n)
{
    scan_acc a = {ids, 0, limit, 0};
    *n = 0;
    if (limit == 0) return 0;
    vx_shard *sh = vx_collection_shard_acquire(col(c), i);
    int rc = vx_shard_scan(sh, start, f ? f->expr : NULL, collect_cb, &a);
    vx_collection_shard_release(col(c), i);
    *n = a.n;
    return rc;
}

static int count_cb(void *ctx, const vx_point_id *id, const vx_record *rec)
{
    (void)id;
    (void)rec;
    ((scan_acc *)ctx)->count++;
    return 0;
}

static int l_count(vx_bcol *c, uint32_t i, const vx_bfilter *f, uint64_t *n)
{
    vx_shard *sh = vx_collection_shard_acquire(col(c), i);
    int rc = 0;
    if (f == NULL || f->expr == NULL) {
        *n = vx_shard_count(sh);
    } else {
        scan_acc a = {NULL, 0, 0, 0};
        rc = vx_shard_scan(sh, NULL, f->expr, count_cb, &a);
        *n = a.count;
    }
    vx_collection_shard_release(col(c), i);
    return rc;
}

static int l_stats(vx_bcol *c, uint32_t i, vx_bshard_stats *st)
{
    memset(st, 0, sizeof *st);
    vx_shard_stats rs;
    vx_collection_shard_stats(col(c), i, &rs);
    st->applied = rs.applied;
    st->leader = rs.leader;
    st->last_commit_seconds = rs.last_commit_seconds;
    vx_shard *sh = vx_collection_shard_acquire(col(c), i);
    st->points = vx_shard_count(sh);
    st->backlog = vx_shard_backlog(sh);
    vx_index_stats is;
    vx_index_get_stats(vx_shard_index(sh), &is);
    st->indexed = is.live;
    vx_shard_optimizer op;
    vx_shard_optimizer_status(sh, &op);
    st->optimizing = op.running;
    st->deleted = op.deleted;
    st->vacuums = op.runs;
    st->reclaimed = op.reclaimed;
    if (vx_shard_payload_indexes(sh, &st->pindex, &st->npindex) != 0) {
        st->pindex = NULL;
        st->npindex = 0;
    }
    vx_collection_shard_release(col(c), i);
    return 0;
}

static int l_auth_change(void *self, const struct Vxpd__Command *cmd, char *errbuf)
{
    return vx_rt_catalog_change(self, cmd, errbuf);
}

void vx_backend_local(vx_runtime *rt, vx_backend *out)
{
    *out = (vx_backend){
        .self = rt,
        .kind = "local",
        .list = l_list,
        .create = l_create,
        .update = l_update,
        .drop = l_drop,
        .open = l_open,
        .close = l_close,
        .ready = l_ready,
        .config = l_config,
        .nshards = l_nshards,
        .route = l_route,
        .propose = l_propose,
        .barrier = l_barrier,
        .search = l_search,
        .get = l_get,
        .scan_ids = l_scan_ids,
        .count = l_count,
        .stats = l_stats,
        .auth_change = l_auth_change,
    };
}
