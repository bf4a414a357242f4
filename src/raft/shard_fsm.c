/*
 * shard_fsm.c - see shard_fsm.h.
 */
#include "raft/shard_fsm.h"

#include "base/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SNAP_MAGIC 0x5658534e41505331ull /* "VXSNAPS1" */
#define SNAP_LEN 32

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    vx_shard_fsm *f = fsm->data;
    uint64_t index = f->raft->last_applied + 1;
    vx_apply_result res;
    int rc = vx_shard_apply(f->shard, index, f->raft->current_term, buf->base, buf->len, &res);
    if (rc != 0) return RAFT_IOERR; /* fail-stop: the shard refuses everything from now on */
    *result = (void *)(uintptr_t)((index << 8) | (uint8_t)(int8_t)res.status);
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    vx_shard_fsm *f = fsm->data;
    char err[VX_SHARD_ERRMSG_LEN];
    if (vx_shard_checkpoint(f->shard, err) != 0) {
        fprintf(stderr, "snapshot: %s\n", err);
        return RAFT_IOERR;
    }
    uint64_t digest, applied;
    if (vx_shard_digest(f->shard, &digest, &applied) != 0) return RAFT_IOERR;
    struct raft_buffer *b = raft_malloc(sizeof(*b));
    uint8_t *d = raft_malloc(SNAP_LEN);
    if (b == NULL || d == NULL) {
        raft_free(b);
        raft_free(d);
        return RAFT_NOMEM;
    }
    uint64_t magic = SNAP_MAGIC, version = 1;
    memcpy(d, &magic, 8);
    memcpy(d + 8, &version, 8);
    memcpy(d + 16, &applied, 8);
    memcpy(d + 24, &digest, 8);
    b->base = d;
    b->len = SNAP_LEN;
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    vx_shard_fsm *f = fsm->data;
    uint64_t magic = 0, applied = 0;
    if (buf->len == SNAP_LEN) {
        memcpy(&magic, buf->base, 8);
        memcpy(&applied, (const uint8_t *)buf->base + 16, 8);
    }
    raft_free(buf->base);
    if (magic != SNAP_MAGIC) return RAFT_MALFORMED;
    if (applied <= vx_shard_applied(f->shard)) return 0; /* the store already covers it */
    fprintf(stderr,
            "restore: this replica's store is at %llu, the snapshot at %llu: the data must be "
            "streamed from the leader, which is not supported yet\n",
            (unsigned long long)vx_shard_applied(f->shard), (unsigned long long)applied);
    return RAFT_IOERR;
}

void vx_shard_fsm_init(vx_shard_fsm *f, vx_shard *shard)
{
    memset(f, 0, sizeof(*f));
    f->shard = shard;
    f->fsm.version = 1;
    f->fsm.data = f;
    f->fsm.apply = fsm_apply;
    f->fsm.snapshot = fsm_snapshot;
    f->fsm.restore = fsm_restore;
}
