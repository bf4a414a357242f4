/*
 * pd_fsm.c - the PD state machine as libraft's struct raft_fsm (pd_fsm.h).
 */
#include "pd/pd_fsm.h"

#include "base/err.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int vx_pd_entry(const Vxpd__Command *cmd, struct raft_buffer *out)
{
    size_t n = vxpd__command__get_packed_size(cmd), padded = (4 + n + 7) & ~(size_t)7;
    uint8_t *b = raft_malloc(padded);
    if (b == NULL) return VX_ENOMEM;
    memset(b, 0, padded);
    uint32_t n32 = (uint32_t)n;
    memcpy(b, &n32, 4);
    vxpd__command__pack(cmd, b + 4);
    out->base = b;
    out->len = padded;
    return 0;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    vx_pd_fsm *f = fsm->data;
    uint64_t index = raft_last_applied(f->raft) + 1;
    uint32_t n = 0;
    if (buf->len >= 4) memcpy(&n, buf->base, 4);
    vx_pd_result res;
    int rc = buf->len >= 4 && n <= buf->len - 4
                 ? vx_pd_state_apply(f->st, (const uint8_t *)buf->base + 4, n, &res)
                 : VX_EFORMAT;
    if (rc == VX_ENOMEM) return RAFT_NOMEM;
    if (rc != 0) {
        fprintf(stderr, "pd: entry %" PRIu64 " is not a command this version knows; stopping\n", index);
        _exit(70);
    }
    if (f->on_result) f->on_result(f->data, index, &res);
    *result = NULL;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    vx_pd_fsm *f = fsm->data;
    uint8_t *enc;
    size_t len;
    if (vx_pd_state_encode(f->st, &enc, &len) != 0) return RAFT_NOMEM;
    struct raft_buffer *b = raft_malloc(sizeof *b);
    void *d = raft_malloc(len ? len : 1);
    if (b == NULL || d == NULL) {
        raft_free(b);
        raft_free(d);
        free(enc);
        return RAFT_NOMEM;
    }
    memcpy(d, enc, len);
    free(enc);
    b->base = d;
    b->len = len;
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    vx_pd_fsm *f = fsm->data;
    int rc = vx_pd_state_restore(f->st, buf->base, buf->len);
    raft_free(buf->base);
    if (rc == VX_ENOMEM) return RAFT_NOMEM;
    if (rc != 0) return RAFT_MALFORMED;
    if (f->on_restore) f->on_restore(f->data);
    return 0;
}

void vx_pd_fsm_init(vx_pd_fsm *f, vx_pd_state *st, vx_pd_result_cb on_result, void *data)
{
    memset(f, 0, sizeof *f);
    f->fsm.version = 1;
    f->fsm.data = f;
    f->fsm.apply = fsm_apply;
    f->fsm.snapshot = fsm_snapshot;
    f->fsm.restore = fsm_restore;
    f->st = st;
    f->on_result = on_result;
    f->data = data;
}
