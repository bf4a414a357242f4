/*
 * fuzz_pd_state.c - libFuzzer target for the placement driver's state
 * machine (src/pd/state.c): the bytes of a PD Raft entry, and a snapshot.
 *
 * The input is split at 0xff 0x00 markers into several commands applied in
 * turn to a state that already holds workers and a collection, so the
 * fuzzer reaches the replica steps and refusals, not only decoding.  For
 * any input: apply returns 0 (applied or refused) or VX_EFORMAT, never
 * faults; the state stays internally consistent (every shard keeps a voter,
 * no worker twice in a shard); encoding and restoring it gives identical
 * bytes; restoring the raw input as a snapshot either fails cleanly or
 * yields a state that encodes.
 *
 * Seed corpus: tests/fuzz/corpus/pd_state, written by this file built with
 * VX_GEN_CORPUS (one file per command kind).
 */
#include "base/err.h"
#include "pd/state.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void add_worker(vx_pd_state *st, const char *name, const char *zone)
{
    Vxpd__Worker w = VXPD__WORKER__INIT;
    w.name = (char *)name;
    w.rpc_address = (char *)"127.0.0.1:1";
    w.raft_address = (char *)"127.0.0.1:2";
    w.zone = (char *)zone;
    Vxpd__CmdRegisterWorker rw = VXPD__CMD_REGISTER_WORKER__INIT;
    rw.worker = &w;
    Vxpd__Command c = VXPD__COMMAND__INIT;
    c.cmd_case = VXPD__COMMAND__CMD_REGISTER_WORKER;
    c.register_worker = &rw;
    uint8_t *b;
    size_t n;
    vx_pd_result res;
    if (vx_pd_command_pack(&c, &b, &n) == 0) {
        vx_pd_state_apply(st, b, n, &res);
        free(b);
    }
}

static vx_pd_state *base_state(void)
{
    vx_pd_state *st = vx_pd_state_new();
    add_worker(st, "a", "z1");
    add_worker(st, "b", "z2");
    add_worker(st, "c", "z3");
    add_worker(st, "d", "z1");
    uint64_t pl[6] = {1, 2, 3, 2, 3, 4};
    Vxpd__CmdCreateCollection cc = VXPD__CMD_CREATE_COLLECTION__INIT;
    cc.name = (char *)"c";
    cc.config_json = (char *)"{}";
    cc.shard_count = 2;
    cc.replication_factor = 3;
    cc.placement = pl;
    cc.n_placement = 6;
    Vxpd__Command c = VXPD__COMMAND__INIT;
    c.cmd_case = VXPD__COMMAND__CMD_CREATE_COLLECTION;
    c.create_collection = &cc;
    uint8_t *b;
    size_t n;
    vx_pd_result res;
    if (vx_pd_command_pack(&c, &b, &n) == 0) {
        vx_pd_state_apply(st, b, n, &res);
        free(b);
    }
    return st;
}

static void check(const vx_pd_state *st)
{
    const Vxpd__State *s = vx_pd_state_get(st);
    for (size_t i = 0; i < s->n_collections; i++)
        for (size_t j = 0; j < s->collections[i]->n_shards; j++) {
            const Vxpd__Shard *sh = s->collections[i]->shards[j];
            unsigned voters = 0;
            for (size_t r = 0; r < sh->n_replicas; r++) {
                voters += sh->replicas[r]->voter;
                for (size_t q = 0; q < r; q++)
                    if (sh->replicas[q]->worker == sh->replicas[r]->worker) abort();
            }
            if (voters == 0) abort();
        }
    uint8_t *a, *b;
    size_t na, nb;
    if (vx_pd_state_encode(st, &a, &na) != 0) return;
    vx_pd_state *copy = vx_pd_state_new();
    if (vx_pd_state_restore(copy, a, na) != 0) abort();
    if (vx_pd_state_encode(copy, &b, &nb) != 0) abort();
    if (na != nb || memcmp(a, b, na) != 0) abort();
    free(a);
    free(b);
    vx_pd_state_free(copy);
}

#ifdef VX_GEN_CORPUS
static void put(const char *dir, const char *name, const Vxpd__Command *c)
{
    uint8_t *b;
    size_t n;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (vx_pd_command_pack(c, &b, &n) != 0) return;
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(b, 1, n, f);
        fclose(f);
    }
    free(b);
}

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    Vxpd__Command c = VXPD__COMMAND__INIT;
    Vxpd__CmdReplicaStep rs = VXPD__CMD_REPLICA_STEP__INIT;
    rs.group_id = VX_PD_FIRST_GROUP_ID;
    rs.worker = 4;
    rs.from_worker = 3;
    c.cmd_case = VXPD__COMMAND__CMD_REPLICA_STEP;
    c.replica_step = &rs;
    put(argv[1], "begin_move", &c);
    rs.step = VXPD__CMD_REPLICA_STEP__STEP__PROMOTE;
    put(argv[1], "promote", &c);
    rs.step = VXPD__CMD_REPLICA_STEP__STEP__REMOVE;
    rs.worker = 3;
    put(argv[1], "remove", &c);
    Vxpd__CmdSetWorkerState ss = VXPD__CMD_SET_WORKER_STATE__INIT;
    ss.id = 2;
    ss.state = 4;
    c.cmd_case = VXPD__COMMAND__CMD_SET_WORKER_STATE;
    c.set_worker_state = &ss;
    put(argv[1], "set_state", &c);
    Vxpd__CmdDeleteCollection dc = VXPD__CMD_DELETE_COLLECTION__INIT;
    dc.name = (char *)"c";
    c.cmd_case = VXPD__COMMAND__CMD_DELETE_COLLECTION;
    c.delete_collection = &dc;
    put(argv[1], "delete", &c);
    uint64_t pl[2] = {1, 2};
    Vxpd__CmdCreateCollection cc = VXPD__CMD_CREATE_COLLECTION__INIT;
    cc.name = (char *)"d";
    cc.config_json = (char *)"{}";
    cc.shard_count = 1;
    cc.replication_factor = 2;
    cc.placement = pl;
    cc.n_placement = 2;
    c.cmd_case = VXPD__COMMAND__CMD_CREATE_COLLECTION;
    c.create_collection = &cc;
    put(argv[1], "create", &c);
    return 0;
}
#else
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vx_pd_state *st = base_state();
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        bool cut = i == size || (i + 1 < size && data[i] == 0xff && data[i + 1] == 0x00);
        if (!cut) continue;
        vx_pd_result res;
        int rc = vx_pd_state_apply(st, data + start, i - start, &res);
        if (rc != 0 && rc != VX_EFORMAT) abort();
        start = i + 2;
        i++;
    }
    check(st);
    vx_pd_state *snap = vx_pd_state_new();
    if (vx_pd_state_restore(snap, data, size) == 0) {
        uint8_t *b;
        size_t n;
        if (vx_pd_state_encode(snap, &b, &n) == 0) free(b);
    }
    vx_pd_state_free(snap);
    vx_pd_state_free(st);
    return 0;
}
#endif
