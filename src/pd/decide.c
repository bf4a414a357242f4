/*
 * decide.c - placement, health, repair and balancing decisions (decide.h).
 *
 * Every entry point builds a private context from the cluster snapshot:
 * worker ids sorted for lookup, zones and (zone, rack) pairs interned to
 * small integers, each replica resolved to a worker index, and a simulated
 * per-worker state (replicas hosted, qps, disk used, moves in flight) that
 * the plan updates as it decides, so later decisions in the same call see
 * the earlier ones.  The context is freed before returning; the cluster is
 * only read, except by vx_pd_health_step which writes worker states.
 *
 * Determinism: workers are visited in array order but every comparison
 * ends in the worker id and sums over workers run in id order; shards are
 * visited in array order (hot shards by qps, then group id, then
 * position); no hash or address decides anything.
 */
#include "pd/decide.h"

#include "base/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NOLIMIT UINT32_MAX

typedef struct id_entry {
    uint64_t id;
    uint32_t idx;
} id_entry;

typedef struct ctx {
    const vx_pd_cluster *c;
    size_t nw, ns;
    id_entry *byid;     /* nw, sorted by id */
    uint32_t *zone;     /* nw: interned zone */
    uint32_t *rack;     /* nw: interned (zone, rack) */
    int32_t *ridx;      /* ns * VX_PD_MAX_REPLICAS: worker index or -1 */
    uint8_t *mark;      /* nw scratch, all zero between uses */
    uint32_t *count;    /* nw: replicas hosted (simulated) */
    double *load;       /* nw: qps (simulated) */
    uint64_t *disk;     /* nw: disk used (simulated) */
    uint32_t *inflight; /* nw: moves in flight touching the worker */
    uint32_t *order;    /* nw scratch for sorted visits */
} ctx;

/* ---- scores ---------------------------------------------------------------- */

const char *vx_pd_state_name(vx_pd_worker_state s)
{
    switch (s) {
    case VX_PD_JOINING:
        return "JOINING";
    case VX_PD_READY:
        return "READY";
    case VX_PD_ACTIVE:
        return "ACTIVE";
    case VX_PD_STANDBY:
        return "STANDBY";
    case VX_PD_UNHEALTHY:
        return "UNHEALTHY";
    case VX_PD_DRAINING:
        return "DRAINING";
    case VX_PD_ERROR:
        return "ERROR";
    case VX_PD_REMOVED:
        return "REMOVED";
    }
    return "?";
}

double vx_pd_capacity_score(const vx_pd_worker *w)
{
    return VX_PD_CPU_WEIGHT * (double)w->cpu_cores / VX_PD_CPU_UNIT +
           VX_PD_MEM_WEIGHT * (double)w->mem_bytes / VX_PD_MEM_UNIT +
           VX_PD_DISK_WEIGHT * (double)w->disk_bytes / VX_PD_DISK_UNIT;
}

static double headroom(uint64_t cap, uint64_t used)
{
    return used >= cap ? 0.0 : (double)(cap - used);
}

/* Free score with the disk use taken from the simulation. */
static double free_score_at(const vx_pd_worker *w, uint64_t disk_used)
{
    double util = w->cpu_util;
    if (!(util >= 0.0)) util = isnan(util) ? 1.0 : 0.0;
    if (util > 1.0) util = 1.0;
    return VX_PD_CPU_WEIGHT * (double)w->cpu_cores / VX_PD_CPU_UNIT * (1.0 - util) +
           VX_PD_MEM_WEIGHT * headroom(w->mem_bytes, w->mem_used) / VX_PD_MEM_UNIT +
           VX_PD_DISK_WEIGHT * headroom(w->disk_bytes, disk_used) / VX_PD_DISK_UNIT;
}

double vx_pd_free_score(const vx_pd_worker *w)
{
    return free_score_at(w, w->disk_used);
}

/* ---- context --------------------------------------------------------------- */

static int id_cmp(const void *a, const void *b)
{
    uint64_t x = ((const id_entry *)a)->id, y = ((const id_entry *)b)->id;
    return x < y ? -1 : x > y;
}

static int32_t find_worker(const ctx *x, uint64_t id)
{
    size_t lo = 0, hi = x->nw;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (x->byid[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < x->nw && x->byid[lo].id == id ? (int32_t)x->byid[lo].idx : -1;
}

static void ctx_free(ctx *x)
{
    free(x->byid);
    free(x->zone);
    free(x->rack);
    free(x->ridx);
    free(x->mark);
    free(x->count);
    free(x->load);
    free(x->disk);
    free(x->inflight);
    free(x->order);
    memset(x, 0, sizeof *x);
}

static bool same_name(const char *a, const char *b)
{
    return strncmp(a, b, VX_PD_DOMAIN_MAX) == 0;
}

/* Intern zones, then (zone, rack) pairs: worker i gets the id of the first
 * worker j <= i with the same name(s).  Quadratic in the distinct names. */
static void intern_domains(ctx *x)
{
    const vx_pd_worker *w = x->c->workers;
    uint32_t *zfirst = x->order; /* first worker of each zone / rack */
    uint32_t nz = 0;
    for (size_t i = 0; i < x->nw; i++) {
        uint32_t z = 0;
        while (z < nz && !same_name(w[zfirst[z]].zone, w[i].zone))
            z++;
        if (z == nz) zfirst[nz++] = (uint32_t)i;
        x->zone[i] = z;
    }
    uint32_t nr = 0;
    for (size_t i = 0; i < x->nw; i++) {
        uint32_t r = 0;
        while (r < nr &&
               !(x->zone[zfirst[r]] == x->zone[i] && same_name(w[zfirst[r]].rack, w[i].rack)))
            r++;
        if (r == nr) zfirst[nr++] = (uint32_t)i;
        x->rack[i] = r;
    }
}

static int ctx_init(ctx *x, const vx_pd_cluster *c)
{
    memset(x, 0, sizeof *x);
    if (c == NULL || (c->nworkers > 0 && c->workers == NULL) ||
        (c->nshards > 0 && c->shards == NULL))
        return VX_EINVAL;
    if (c->nworkers >= (size_t)INT32_MAX ||
        c->nshards > SIZE_MAX / VX_PD_MAX_REPLICAS / sizeof(int32_t))
        return VX_EINVAL;
    x->c = c;
    x->nw = c->nworkers;
    x->ns = c->nshards;
    size_t nw = x->nw ? x->nw : 1;
    x->byid = calloc(nw, sizeof *x->byid);
    x->zone = calloc(nw, sizeof *x->zone);
    x->rack = calloc(nw, sizeof *x->rack);
    x->ridx = calloc(x->ns ? x->ns * VX_PD_MAX_REPLICAS : 1, sizeof *x->ridx);
    x->mark = calloc(nw, sizeof *x->mark);
    x->count = calloc(nw, sizeof *x->count);
    x->load = calloc(nw, sizeof *x->load);
    x->disk = calloc(nw, sizeof *x->disk);
    x->inflight = calloc(nw, sizeof *x->inflight);
    x->order = calloc(nw, sizeof *x->order);
    if (!x->byid || !x->zone || !x->rack || !x->ridx || !x->mark || !x->count || !x->load ||
        !x->disk || !x->inflight || !x->order) {
        ctx_free(x);
        return VX_ENOMEM;
    }

    for (size_t i = 0; i < x->nw; i++) {
        const vx_pd_worker *w = &c->workers[i];
        if (w->id == 0) goto err_invalid;
        x->byid[i].id = w->id;
        x->byid[i].idx = (uint32_t)i;
        x->load[i] = isfinite(w->qps) ? w->qps : 0.0;
        x->disk[i] = w->disk_used;
    }
    qsort(x->byid, x->nw, sizeof *x->byid, id_cmp);
    for (size_t i = 1; i < x->nw; i++)
        if (x->byid[i].id == x->byid[i - 1].id) goto err_invalid;
    intern_domains(x);

    for (size_t s = 0; s < x->ns; s++) {
        const vx_pd_shard *sh = &c->shards[s];
        if (sh->n > VX_PD_MAX_REPLICAS || sh->rf == 0 || sh->rf > VX_PD_MAX_REPLICAS)
            goto err_invalid;
        for (unsigned r = 0; r < sh->n; r++) {
            uint64_t id = sh->replicas[r].worker;
            if (id == 0) goto err_invalid;
            for (unsigned q = 0; q < r; q++)
                if (sh->replicas[q].worker == id) goto err_invalid;
            int32_t wi = find_worker(x, id);
            x->ridx[s * VX_PD_MAX_REPLICAS + r] = wi;
            if (wi >= 0) {
                x->count[wi]++;
                if (sh->moving) x->inflight[wi]++;
            }
        }
    }
    return 0;

err_invalid:
    ctx_free(x);
    return VX_EINVAL;
}

static const vx_pd_worker *W(const ctx *x, int32_t i)
{
    return &x->c->workers[i];
}

static bool healthy(const ctx *x, int32_t i)
{
    if (i < 0) return false;
    vx_pd_worker_state st = W(x, i)->state;
    return st != VX_PD_UNHEALTHY && st != VX_PD_ERROR && st != VX_PD_REMOVED;
}

static bool gone(const ctx *x, int32_t i)
{
    return i < 0 || W(x, i)->state == VX_PD_ERROR || W(x, i)->state == VX_PD_REMOVED;
}

static bool eligible(const ctx *x, int32_t i)
{
    vx_pd_worker_state st = W(x, i)->state;
    return st == VX_PD_READY || st == VX_PD_ACTIVE;
}

static bool fits(const ctx *x, int32_t i, uint64_t size)
{
    uint64_t cap = W(x, i)->disk_bytes;
    return cap == 0 || (x->disk[i] <= cap && cap - x->disk[i] >= size);
}

static double place_score(const ctx *x, int32_t i)
{
    return free_score_at(W(x, i), x->disk[i]) / (1.0 + (double)x->count[i]);
}

/* Worker indices of shard s's healthy replicas into h; returns how many. */
static unsigned healthy_replicas(const ctx *x, size_t s, int32_t *h)
{
    unsigned nh = 0;
    for (unsigned r = 0; r < x->c->shards[s].n; r++) {
        int32_t wi = x->ridx[s * VX_PD_MAX_REPLICAS + r];
        if (healthy(x, wi)) h[nh++] = wi;
    }
    return nh;
}

/* Can the shard's Raft group commit a membership change: are more than
 * half of its voters on healthy workers?  Without that, adding or removing
 * a replica would wait forever (an operator's job, not the PD's). */
static bool has_quorum(const ctx *x, size_t s)
{
    const vx_pd_shard *sh = &x->c->shards[s];
    unsigned voters = 0, up = 0;
    for (unsigned r = 0; r < sh->n; r++) {
        if (!sh->replicas[r].voter) continue;
        voters++;
        up += healthy(x, x->ridx[s * VX_PD_MAX_REPLICAS + r]);
    }
    return 2 * up > voters;
}

static void mark_holders(ctx *x, size_t s, uint8_t v)
{
    for (unsigned r = 0; r < x->c->shards[s].n; r++) {
        int32_t wi = x->ridx[s * VX_PD_MAX_REPLICAS + r];
        if (wi >= 0) x->mark[wi] = v;
    }
}

static bool holds(const ctx *x, size_t s, int32_t wi)
{
    for (unsigned r = 0; r < x->c->shards[s].n; r++)
        if (x->ridx[s * VX_PD_MAX_REPLICAS + r] == wi) return true;
    return false;
}

/* Distinct zones and racks over a list of worker indices. */
static void spread(const ctx *x, const int32_t *v, unsigned n, unsigned *zones, unsigned *racks)
{
    unsigned nz = 0, nr = 0;
    for (unsigned i = 0; i < n; i++) {
        bool newz = true, newr = true;
        for (unsigned j = 0; j < i; j++) {
            if (x->zone[v[j]] == x->zone[v[i]]) newz = false;
            if (x->rack[v[j]] == x->rack[v[i]]) newr = false;
        }
        nz += newz;
        nr += newr;
    }
    *zones = nz;
    *racks = nr;
}

/* Would replacing src by dst in the healthy set h keep as many distinct
 * zones and racks? */
static bool spread_kept(const ctx *x, const int32_t *h, unsigned nh, int32_t src, int32_t dst)
{
    int32_t after[VX_PD_MAX_REPLICAS];
    unsigned na = 0;
    for (unsigned i = 0; i < nh; i++)
        after[na++] = h[i] == src ? dst : h[i];
    unsigned zb, rb, za, ra;
    spread(x, h, nh, &zb, &rb);
    spread(x, after, na, &za, &ra);
    return za >= zb && ra >= rb;
}

static void domain_key(const ctx *x, const int32_t *have, unsigned nhave, int32_t i, unsigned *zc,
                       unsigned *rc)
{
    unsigned z = 0, r = 0;
    for (unsigned j = 0; j < nhave; j++) {
        z += x->zone[have[j]] == x->zone[i];
        r += x->rack[have[j]] == x->rack[i];
    }
    *zc = z;
    *rc = r;
}

/* Best target for one more replica next to `have`: among eligible, unmarked
 * workers with room for size, the lowest (replicas in its zone, in its
 * rack); among those with moves in flight under `limit`, the highest
 * placement score, then the lowest id.  -1 if the best domain key has no
 * worker under the limit (a worse spread is never chosen instead). */
static int32_t pick_target(const ctx *x, const int32_t *have, unsigned nhave, uint64_t size,
                           uint32_t limit)
{
    unsigned bz = UINT32_MAX, br = UINT32_MAX;
    for (size_t i = 0; i < x->nw; i++) {
        int32_t wi = (int32_t)i;
        if (x->mark[i] || !eligible(x, wi) || !fits(x, wi, size)) continue;
        unsigned zc, rc;
        domain_key(x, have, nhave, wi, &zc, &rc);
        if (zc < bz || (zc == bz && rc < br)) {
            bz = zc;
            br = rc;
        }
    }
    int32_t best = -1;
    double best_score = 0.0;
    for (size_t i = 0; i < x->nw && bz != UINT32_MAX; i++) {
        int32_t wi = (int32_t)i;
        if (x->mark[i] || !eligible(x, wi) || !fits(x, wi, size) || x->inflight[i] >= limit)
            continue;
        unsigned zc, rc;
        domain_key(x, have, nhave, wi, &zc, &rc);
        if (zc != bz || rc != br) continue;
        double sc = place_score(x, wi);
        if (best < 0 || sc > best_score || (sc == best_score && W(x, wi)->id < W(x, best)->id)) {
            best = wi;
            best_score = sc;
        }
    }
    return best;
}

/* ---- placement --------------------------------------------------------------- */

int vx_pd_place(const vx_pd_cluster *c, unsigned rf, const uint64_t *exclude, size_t nexclude,
                uint64_t *out_workers)
{
    if (out_workers == NULL || rf == 0 || rf > VX_PD_MAX_REPLICAS ||
        (nexclude > 0 && exclude == NULL))
        return VX_EINVAL;
    ctx x;
    int rc = ctx_init(&x, c);
    if (rc != 0) return rc;
    for (size_t e = 0; e < nexclude; e++) {
        int32_t wi = find_worker(&x, exclude[e]);
        if (wi >= 0) x.mark[wi] = 1;
    }
    int32_t chosen[VX_PD_MAX_REPLICAS];
    for (unsigned k = 0; k < rf; k++) {
        int32_t t = pick_target(&x, chosen, k, 0, NOLIMIT);
        if (t < 0) {
            ctx_free(&x);
            return VX_EFULL;
        }
        chosen[k] = t;
        x.mark[t] = 1;
    }
    for (unsigned k = 0; k < rf; k++)
        out_workers[k] = W(&x, chosen[k])->id;
    ctx_free(&x);
    return 0;
}

/* ---- health ------------------------------------------------------------------ */

static bool hosts_replica(const vx_pd_cluster *c, uint64_t id)
{
    for (size_t s = 0; s < c->nshards; s++)
        for (unsigned r = 0; r < c->shards[s].n && r < VX_PD_MAX_REPLICAS; r++)
            if (c->shards[s].replicas[r].worker == id) return true;
    return false;
}

/* The state worker w should be in at now_ms; its own state if none. */
static vx_pd_worker_state health_next(const vx_pd_cluster *c, const vx_pd_worker *w,
                                      uint64_t now_ms)
{
    bool silent = now_ms > w->last_heartbeat_ms &&
                  now_ms - w->last_heartbeat_ms >= VX_PD_HEARTBEAT_TIMEOUT_MS;
    switch (w->state) {
    case VX_PD_READY:
    case VX_PD_ACTIVE:
    case VX_PD_STANDBY:
    case VX_PD_DRAINING:
        return silent ? VX_PD_UNHEALTHY : w->state;
    case VX_PD_UNHEALTHY:
        if (silent) return w->state;
        return hosts_replica(c, w->id) ? VX_PD_ACTIVE : VX_PD_READY;
    default:
        return w->state;
    }
}

int vx_pd_health_step(vx_pd_cluster *c, uint64_t now_ms, vx_pd_state_change *out, size_t cap,
                      size_t *n)
{
    if (c == NULL || n == NULL || (c->nworkers > 0 && c->workers == NULL) ||
        (c->nshards > 0 && c->shards == NULL) || (cap > 0 && out == NULL))
        return VX_EINVAL;
    size_t due = 0;
    for (size_t i = 0; i < c->nworkers; i++)
        due += health_next(c, &c->workers[i], now_ms) != c->workers[i].state;
    *n = due;
    if (due > cap) return VX_EFULL;
    size_t k = 0;
    for (size_t i = 0; i < c->nworkers; i++) {
        vx_pd_worker *w = &c->workers[i];
        vx_pd_worker_state to = health_next(c, w, now_ms);
        if (to == w->state) continue;
        out[k].worker = w->id;
        out[k].from = w->state;
        out[k].to = to;
        k++;
        w->state = to;
    }
    return 0;
}

/* ---- repair ------------------------------------------------------------------ */

static void emit(vx_pd_action *out, size_t *k, vx_pd_action_kind kind, uint64_t group,
                 uint64_t from, uint64_t to, const char *why)
{
    vx_pd_action *a = &out[(*k)++];
    a->kind = kind;
    a->group_id = group;
    a->from_worker = from;
    a->to_worker = to;
    a->reason = why;
}

/* The surplus replica among h to remove: not the leader if avoidable, most
 * crowded zone, DRAINING, most crowded rack, lowest placement score, lowest
 * id. */
static int32_t pick_surplus(const ctx *x, const vx_pd_shard *sh, const int32_t *h, unsigned nh)
{
    int32_t best = -1;
    bool bl = false, bd = false;
    unsigned bz = 0, br = 0;
    double bs = 0.0;
    for (unsigned i = 0; i < nh; i++) {
        int32_t wi = h[i];
        bool lead = sh->leader_hint != 0 && W(x, wi)->id == sh->leader_hint;
        bool drain = W(x, wi)->state == VX_PD_DRAINING;
        unsigned zc, rc;
        domain_key(x, h, nh, wi, &zc, &rc);
        double sc = place_score(x, wi);
        int cmp = 0; /* < 0: wi is the better victim */
        if (best < 0)
            cmp = -1;
        else if (lead != bl)
            cmp = lead ? 1 : -1;
        else if (zc != bz)
            cmp = zc > bz ? -1 : 1;
        else if (drain != bd)
            cmp = drain ? -1 : 1;
        else if (rc != br)
            cmp = rc > br ? -1 : 1;
        else if (sc != bs)
            cmp = sc < bs ? -1 : 1;
        else
            cmp = W(x, wi)->id < W(x, best)->id ? -1 : 1;
        if (cmp < 0) {
            best = wi;
            bl = lead;
            bd = drain;
            bz = zc;
            br = rc;
            bs = sc;
        }
    }
    return best;
}

int vx_pd_repair(const vx_pd_cluster *c, vx_pd_action *out, size_t cap, size_t *n)
{
    if (n == NULL || (cap > 0 && out == NULL)) return VX_EINVAL;
    *n = 0;
    ctx x;
    int rc = ctx_init(&x, c);
    if (rc != 0) return rc;
    size_t k = 0;
    for (size_t s = 0; s < x.ns && k < cap; s++) {
        const vx_pd_shard *sh = &c->shards[s];
        if (sh->moving || !has_quorum(&x, s)) continue;
        const int32_t *ri = &x.ridx[s * VX_PD_MAX_REPLICAS];
        int32_t h[VX_PD_MAX_REPLICAS];
        unsigned nh = healthy_replicas(&x, s, h);
        int dead = -1, down = -1; /* first replica on a gone / unhealthy worker */
        for (unsigned r = 0; r < sh->n; r++) {
            if (gone(&x, ri[r])) {
                if (dead < 0) dead = (int)r;
            } else if (!healthy(&x, ri[r]) && down < 0) {
                down = (int)r;
            }
        }
        if (nh < sh->rf) {
            if (sh->n == VX_PD_MAX_REPLICAS) {
                int r = dead >= 0 ? dead : down;
                emit(out, &k, VX_PD_REMOVE_REPLICA, sh->group_id, sh->replicas[r].worker, 0,
                     "replica set full: drop an unhealthy replica");
                continue;
            }
            mark_holders(&x, s, 1);
            int32_t t = pick_target(&x, h, nh, sh->size_bytes, NOLIMIT);
            mark_holders(&x, s, 0);
            if (t < 0) continue;
            emit(out, &k, VX_PD_ADD_REPLICA, sh->group_id, 0, W(&x, t)->id, "under-replicated");
            x.count[t]++;
            x.disk[t] += sh->size_bytes;
        } else if (dead >= 0) {
            emit(out, &k, VX_PD_REMOVE_REPLICA, sh->group_id, sh->replicas[dead].worker, 0,
                 "replica on a failed or removed worker");
        } else if (nh > sh->rf) {
            int32_t v = pick_surplus(&x, sh, h, nh);
            emit(out, &k, VX_PD_REMOVE_REPLICA, sh->group_id, W(&x, v)->id, 0, "over-replicated");
            x.count[v]--;
            x.disk[v] -= x.disk[v] < sh->size_bytes ? x.disk[v] : sh->size_bytes;
        }
    }
    *n = k;
    ctx_free(&x);
    return 0;
}

/* ---- balance ----------------------------------------------------------------- */

typedef struct plan {
    ctx *x;
    const vx_pd_balance_opts *o;
    uint8_t *acted; /* ns: already given a move in this plan */
    uint32_t total; /* moves in flight, in-flight plus new */
    vx_pd_action *out;
    size_t cap, k;
} plan;

static bool plan_full(const plan *p)
{
    return p->k >= p->cap || p->total >= p->o->max_moves;
}

static bool under_limit(const plan *p, int32_t wi)
{
    return p->x->inflight[wi] < p->o->max_moves_per_worker;
}

/* A shard balance may touch: not moving, not moved in this plan, exactly rf
 * healthy replicas (repair owns the rest), a healthy voter majority.
 * Fills h. */
static bool movable(const plan *p, size_t s, int32_t *h, unsigned *nh)
{
    const vx_pd_shard *sh = &p->x->c->shards[s];
    if (sh->moving || p->acted[s]) return false;
    *nh = healthy_replicas(p->x, s, h);
    return *nh == sh->rf && has_quorum(p->x, s);
}

static double replica_qps(const vx_pd_shard *sh, unsigned nh)
{
    return nh > 0 && isfinite(sh->qps) && sh->qps > 0 ? sh->qps / nh : 0.0;
}

static void plan_move(plan *p, size_t s, int32_t src, int32_t dst, double d, const char *why)
{
    ctx *x = p->x;
    const vx_pd_shard *sh = &x->c->shards[s];
    emit(p->out, &p->k, VX_PD_MOVE_REPLICA, sh->group_id, W(x, src)->id, W(x, dst)->id, why);
    p->acted[s] = 1;
    p->total++;
    x->inflight[src]++;
    x->inflight[dst]++;
    x->count[src]--;
    x->count[dst]++;
    x->load[src] -= d;
    x->load[dst] += d;
    x->disk[src] -= x->disk[src] < sh->size_bytes ? x->disk[src] : sh->size_bytes;
    x->disk[dst] += sh->size_bytes;
}

/* 1. Every replica on a DRAINING worker goes, to the best failure-domain
 *    target; workers in id order, shards in order. */
static void balance_drain(plan *p)
{
    ctx *x = p->x;
    for (size_t b = 0; b < x->nw && !plan_full(p); b++) {
        int32_t src = (int32_t)x->byid[b].idx;
        if (W(x, src)->state != VX_PD_DRAINING) continue;
        for (size_t s = 0; s < x->ns && !plan_full(p) && under_limit(p, src); s++) {
            int32_t h[VX_PD_MAX_REPLICAS], have[VX_PD_MAX_REPLICAS];
            unsigned nh, nhave = 0;
            if (!holds(x, s, src) || !movable(p, s, h, &nh)) continue;
            for (unsigned i = 0; i < nh; i++)
                if (h[i] != src) have[nhave++] = h[i];
            const vx_pd_shard *sh = &x->c->shards[s];
            mark_holders(x, s, 1);
            int32_t t = pick_target(x, have, nhave, sh->size_bytes, p->o->max_moves_per_worker);
            mark_holders(x, s, 0);
            if (t >= 0) plan_move(p, s, src, t, replica_qps(sh, nh), "drain");
        }
    }
}

/* Can shard s (healthy set h) move from src to dst? */
static bool move_ok(const plan *p, size_t s, const int32_t *h, unsigned nh, int32_t src,
                    int32_t dst)
{
    const ctx *x = p->x;
    return dst != src && eligible(x, dst) && !holds(x, s, dst) &&
           fits(x, dst, x->c->shards[s].size_bytes) && under_limit(p, src) && under_limit(p, dst) &&
           spread_kept(x, h, nh, src, dst);
}

/* Means of replicas hosted and of qps over READY/ACTIVE workers, summed in
 * id order so that rounding does not depend on the worker array's order. */
static void means(const ctx *x, double *mc, double *ml)
{
    double c = 0.0, l = 0.0;
    size_t ne = 0;
    for (size_t b = 0; b < x->nw; b++) {
        uint32_t i = x->byid[b].idx;
        if (!eligible(x, (int32_t)i)) continue;
        c += x->count[i];
        l += x->load[i];
        ne++;
    }
    *mc = ne ? c / (double)ne : 0.0;
    *ml = ne ? l / (double)ne : 0.0;
}

/* Change of the imbalance potential
 *     phi = sum_w (count_w / mean_count)^2 + sum_w (qps_w / mean_qps)^2
 * over READY/ACTIVE workers when one replica carrying qps d moves from src
 * to dst.  Both means are invariant under such a move, so a plan of moves
 * that each lower phi can never come back to where it started: balancing by
 * count and balancing by load cannot undo each other, within a plan or
 * across rounds (as long as the reported qps follows the replicas).  A move
 * must lower phi by more than PHI_EPS of rounding. */
#define PHI_EPS 1e-9

static double phi_delta(const ctx *x, int32_t src, int32_t dst, double d, double mc, double ml)
{
    double cs = x->count[src], ct = x->count[dst];
    double dc = mc > 0.0 ? 2.0 * (1.0 - cs + ct) / (mc * mc) : 0.0;
    double dl = ml > 0.0 ? 2.0 * d * (d - (x->load[src] - x->load[dst])) / (ml * ml) : 0.0;
    return dc + dl;
}

/* 2. Hot shards, hottest first: the replica on the busiest worker goes to the
 *    least loaded worker that stays below that worker's load. */
static void balance_hot(plan *p)
{
    ctx *x = p->x;
    const vx_pd_shard *sh = x->c->shards;
    if (x->ns == 0) return;
    double sum = 0.0;
    for (size_t s = 0; s < x->ns; s++)
        sum += isfinite(sh[s].qps) && sh[s].qps > 0 ? sh[s].qps : 0.0;
    double mean = sum / (double)x->ns;
    if (!(mean > 0.0)) return;
    for (;;) {
        /* the hottest shard not yet considered (acted marks both) */
        size_t hot = SIZE_MAX;
        for (size_t s = 0; s < x->ns; s++) {
            if (p->acted[s] || sh[s].moving || !(sh[s].qps > 2.0 * mean)) continue;
            if (hot == SIZE_MAX || sh[s].qps > sh[hot].qps ||
                (sh[s].qps == sh[hot].qps && sh[s].group_id < sh[hot].group_id))
                hot = s;
        }
        if (hot == SIZE_MAX || plan_full(p)) return;
        int32_t h[VX_PD_MAX_REPLICAS];
        unsigned nh;
        if (!movable(p, hot, h, &nh)) {
            p->acted[hot] = 2; /* considered, no move */
            continue;
        }
        double d = replica_qps(&sh[hot], nh), mc, ml;
        means(x, &mc, &ml);
        /* sources: healthy READY/ACTIVE replicas, busiest first */
        int32_t src[VX_PD_MAX_REPLICAS];
        unsigned ns = 0;
        for (unsigned i = 0; i < nh; i++) {
            if (!eligible(x, h[i])) continue;
            unsigned j = ns++;
            while (j > 0 && (x->load[src[j - 1]] < x->load[h[i]] ||
                             (x->load[src[j - 1]] == x->load[h[i]] &&
                              W(x, src[j - 1])->id > W(x, h[i])->id))) {
                src[j] = src[j - 1];
                j--;
            }
            src[j] = h[i];
        }
        bool moved = false;
        for (unsigned i = 0; i < ns && !moved; i++) {
            int32_t best = -1;
            for (size_t t = 0; t < x->nw; t++) {
                int32_t ti = (int32_t)t;
                if (!(x->load[ti] + d < x->load[src[i]]) || !move_ok(p, hot, h, nh, src[i], ti) ||
                    !(phi_delta(x, src[i], ti, d, mc, ml) < -PHI_EPS))
                    continue;
                if (best < 0 || x->load[ti] < x->load[best] ||
                    (x->load[ti] == x->load[best] && W(x, ti)->id < W(x, best)->id))
                    best = ti;
            }
            if (best >= 0) {
                plan_move(p, hot, src[i], best, d, "hot shard");
                moved = true;
            }
        }
        if (!moved) p->acted[hot] = 2;
    }
}

/* Eligible workers into x->order sorted by key(i) ascending, ties by id;
 * returns how many. */
static size_t sorted_eligible(ctx *x, double (*key)(const ctx *, int32_t))
{
    size_t m = 0;
    for (size_t i = 0; i < x->nw; i++) {
        int32_t wi = (int32_t)i;
        if (!eligible(x, wi)) continue;
        double kv = key(x, wi);
        size_t j = m++;
        while (j > 0) {
            int32_t prev = (int32_t)x->order[j - 1];
            double kp = key(x, prev);
            if (kp < kv || (kp == kv && W(x, prev)->id < W(x, wi)->id)) break;
            x->order[j] = x->order[j - 1];
            j--;
        }
        x->order[j] = (uint32_t)i;
    }
    return m;
}

static double key_count(const ctx *x, int32_t i)
{
    return (double)x->count[i];
}
static double key_load(const ctx *x, int32_t i)
{
    return x->load[i];
}

/* Steps 3 and 4 differ only in the metric that triggers them. */
typedef struct metric {
    double (*key)(const ctx *, int32_t);
    bool counts;
    const char *why;
} metric;

/* The replica of src to move to dst, or SIZE_MAX: one that lowers phi,
 * preferring a non-leader, then the largest drop of phi (for a count move
 * that is the replica whose qps best fits the load gap; for a load move the
 * count term is the same for every candidate, so it is the qps share
 * closest to half the gap), then the smallest shard, then shard order. */
static size_t pick_replica(plan *p, int32_t src, int32_t dst, double mc, double ml, double *dq)
{
    ctx *x = p->x;
    size_t best = SIZE_MAX;
    double bd = 0.0, bphi = 0.0;
    bool blead = false;
    uint64_t bsize = 0;
    for (size_t s = 0; s < x->ns; s++) {
        int32_t h[VX_PD_MAX_REPLICAS];
        unsigned nh;
        if (!holds(x, s, src) || !movable(p, s, h, &nh) || !move_ok(p, s, h, nh, src, dst))
            continue;
        const vx_pd_shard *sh = &x->c->shards[s];
        double d = replica_qps(sh, nh);
        double phi = phi_delta(x, src, dst, d, mc, ml);
        if (!(phi < -PHI_EPS)) continue;
        bool lead = sh->leader_hint == W(x, src)->id;
        bool better;
        if (best == SIZE_MAX)
            better = true;
        else if (lead != blead)
            better = !lead;
        else if (phi != bphi)
            better = phi < bphi;
        else
            better = sh->size_bytes < bsize;
        if (better) {
            best = s;
            bd = d;
            bphi = phi;
            blead = lead;
            bsize = sh->size_bytes;
        }
    }
    *dq = bd;
    return best;
}

/* 3 / 4: while the spread between the fullest and emptiest eligible worker
 * exceeds the threshold, move one replica from a fuller to an emptier
 * worker whose own gap exceeds it too. */
static void balance_metric(plan *p, const metric *m)
{
    ctx *x = p->x;
    double thr = p->o->threshold;
    while (!plan_full(p)) {
        size_t ne = sorted_eligible(x, m->key);
        if (ne < 2) return;
        double mc, ml;
        means(x, &mc, &ml);
        double mean = m->counts ? mc : ml;
        double lo = m->key(x, (int32_t)x->order[0]), hi = m->key(x, (int32_t)x->order[ne - 1]);
        bool empty_new = m->counts && lo == 0.0 && hi >= 2.0;
        if (!(mean > 0.0) || !((hi - lo) / mean > thr || empty_new)) return;
        bool moved = false;
        for (size_t a = ne; a-- > 0 && !moved;) {
            int32_t src = (int32_t)x->order[a];
            if (!under_limit(p, src)) continue;
            for (size_t b = 0; b < a && !moved; b++) {
                int32_t dst = (int32_t)x->order[b];
                double gap = m->key(x, src) - m->key(x, dst);
                bool pair = (gap / mean > thr || (m->counts && m->key(x, dst) == 0.0)) &&
                            (m->counts ? gap >= 2.0 : gap > 0.0);
                if (!pair) break; /* later targets are fuller */
                double d;
                size_t s = pick_replica(p, src, dst, mc, ml, &d);
                if (s == SIZE_MAX) continue;
                plan_move(p, s, src, dst, d,
                          empty_new && m->key(x, dst) == 0.0 ? "new worker" : m->why);
                moved = true;
            }
        }
        if (!moved) return;
    }
}

int vx_pd_balance(const vx_pd_cluster *c, const vx_pd_balance_opts *o, vx_pd_action *out,
                  size_t cap, size_t *n)
{
    static const vx_pd_balance_opts defaults = VX_PD_BALANCE_OPTS_DEFAULT;
    if (o == NULL) o = &defaults;
    if (n == NULL || (cap > 0 && out == NULL) || !(o->threshold >= 0.0)) return VX_EINVAL;
    *n = 0;
    ctx x;
    int rc = ctx_init(&x, c);
    if (rc != 0) return rc;
    plan p = {.x = &x, .o = o, .out = out, .cap = cap};
    p.acted = calloc(x.ns ? x.ns : 1, 1);
    if (p.acted == NULL) {
        ctx_free(&x);
        return VX_ENOMEM;
    }
    for (size_t s = 0; s < x.ns; s++)
        p.total += c->shards[s].moving;

    balance_drain(&p);
    balance_hot(&p);
    for (size_t s = 0; s < x.ns; s++)
        if (p.acted[s] == 2) p.acted[s] = 0; /* considered by step 2 but not moved */
    static const metric by_count = {key_count, true, "shard count imbalance"};
    static const metric by_load = {key_load, false, "load imbalance"};
    balance_metric(&p, &by_count);
    balance_metric(&p, &by_load);

    *n = p.k;
    free(p.acted);
    ctx_free(&x);
    return 0;
}
