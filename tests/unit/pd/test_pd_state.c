/*
 * test_pd_state.c - the placement driver's replicated state machine
 * (src/pd/state.c): every command's effect and refusals, epochs, the
 * READY <-> ACTIVE rule, the move steps (idempotent when repeated, rolled
 * back by ABORT), snapshots that restore to the same state, unknown
 * command kinds refused as VX_EFORMAT, and a random command sequence
 * applied to two replicas (one restored from a snapshot half-way) that must
 * end byte-identical (VX_SEED=<n> reproduces it; the seed is printed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "pd/state.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int apply_cmd(vx_pd_state *st, const Vxpd__Command *cmd, vx_pd_result *res)
{
    uint8_t *b;
    size_t n;
    assert_int_equal(vx_pd_command_pack(cmd, &b, &n), 0);
    int rc = vx_pd_state_apply(st, b, n, res);
    free(b);
    return rc;
}

static uint64_t reg(vx_pd_state *st, const char *name, const char *zone, int *status)
{
    Vxpd__Worker w = VXPD__WORKER__INIT;
    Vxpd__Capacity cap = VXPD__CAPACITY__INIT;
    char rpc[64], raft[64];
    snprintf(rpc, sizeof rpc, "127.0.0.1:%u", 7000 + (unsigned)strlen(name));
    snprintf(raft, sizeof raft, "127.0.0.1:%u", 8000 + (unsigned)strlen(name));
    w.name = (char *)name;
    w.rpc_address = rpc;
    w.raft_address = raft;
    w.zone = (char *)zone;
    w.rack = (char *)"r1";
    cap.cpu_cores = 8;
    cap.mem_bytes = 32ull << 30;
    w.capacity = &cap;
    Vxpd__CmdRegisterWorker rw = VXPD__CMD_REGISTER_WORKER__INIT;
    rw.worker = &w;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_REGISTER_WORKER;
    cmd.register_worker = &rw;
    vx_pd_result res;
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    if (status) *status = res.status;
    return res.value;
}

static int create(vx_pd_state *st, const char *name, uint32_t sc, uint32_t rf, const uint64_t *pl,
                  size_t npl)
{
    Vxpd__CmdCreateCollection cc = VXPD__CMD_CREATE_COLLECTION__INIT;
    cc.name = (char *)name;
    cc.config_json = (char *)"{\"vectors\":{\"size\":4,\"distance\":\"Cosine\"}}";
    cc.shard_count = sc;
    cc.replication_factor = rf;
    cc.placement = (uint64_t *)pl;
    cc.n_placement = npl;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_CREATE_COLLECTION;
    cmd.create_collection = &cc;
    vx_pd_result res;
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    return res.status;
}

static int step(vx_pd_state *st, uint64_t gid, Vxpd__CmdReplicaStep__Step k, uint64_t w, uint64_t from)
{
    Vxpd__CmdReplicaStep rs = VXPD__CMD_REPLICA_STEP__INIT;
    rs.group_id = gid;
    rs.step = k;
    rs.worker = w;
    rs.from_worker = from;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_REPLICA_STEP;
    cmd.replica_step = &rs;
    vx_pd_result res;
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    return res.status;
}

static int set_state(vx_pd_state *st, uint64_t id, uint32_t to, int expect)
{
    Vxpd__CmdSetWorkerState ss = VXPD__CMD_SET_WORKER_STATE__INIT;
    ss.id = id;
    ss.state = to;
    if (expect >= 0) {
        ss.check_expect = true;
        ss.expect_state = (uint32_t)expect;
    }
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_SET_WORKER_STATE;
    cmd.set_worker_state = &ss;
    vx_pd_result res;
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    return res.status;
}

static void test_register(void **unused)
{
    (void)unused;
    vx_pd_state *st = vx_pd_state_new();
    int status;
    uint64_t a = reg(st, "alpha", "z1", &status);
    assert_int_equal(status, 0);
    uint64_t b = reg(st, "beta", "z2", &status);
    assert_true(a == 1 && b == 2);
    uint64_t e = vx_pd_state_get(st)->epoch;
    /* the same name again: the same id, no new epoch when nothing changed */
    assert_int_equal(reg(st, "alpha", "z1", &status), a);
    assert_int_equal(vx_pd_state_get(st)->epoch, e);
    /* a new zone is a change */
    assert_int_equal(reg(st, "alpha", "z3", &status), a);
    assert_int_equal(vx_pd_state_get(st)->epoch, e + 1);
    assert_string_equal(vx_pd_state_worker(st, a)->zone, "z3");
    assert_int_equal(vx_pd_state_worker(st, a)->state, VX_PD_READY);
    /* bad input is refused, not applied */
    reg(st, "", "z1", &status);
    assert_int_equal(status, VX_EINVAL);
    assert_int_equal(vx_pd_state_get(st)->n_workers, 2);
    /* removed workers do not come back under their name; ids are never reused */
    assert_int_equal(set_state(st, b, VX_PD_REMOVED, VX_PD_READY), 0);
    reg(st, "beta", "z2", &status);
    assert_int_equal(status, VX_ESTATE);
    assert_int_equal(reg(st, "gamma", "z2", &status), 3);
    vx_pd_state_free(st);
}

static void test_set_state_cas(void **unused)
{
    (void)unused;
    vx_pd_state *st = vx_pd_state_new();
    uint64_t a = reg(st, "a", "z1", NULL);
    assert_int_equal(set_state(st, a, VX_PD_UNHEALTHY, VX_PD_ACTIVE), VX_ESTATE); /* it is READY */
    assert_int_equal(set_state(st, a, VX_PD_UNHEALTHY, VX_PD_READY), 0);
    assert_int_equal(vx_pd_state_worker(st, a)->state, VX_PD_UNHEALTHY);
    assert_int_equal(set_state(st, 99, VX_PD_READY, -1), VX_ENOTFOUND);
    assert_int_equal(set_state(st, a, 42, -1), VX_EINVAL);
    vx_pd_state_free(st);
}

static void test_create_delete(void **unused)
{
    (void)unused;
    vx_pd_state *st = vx_pd_state_new();
    uint64_t w[4];
    for (int i = 0; i < 4; i++) {
        char n[8];
        snprintf(n, sizeof n, "w%d", i);
        w[i] = reg(st, n, i % 2 ? "z1" : "z2", NULL);
    }
    uint64_t pl[6] = {w[0], w[1], w[2], w[1], w[2], w[3]};
    assert_int_equal(create(st, "c", 2, 3, pl, 6), 0);
    const Vxpd__Collection *c = vx_pd_state_collection(st, "c");
    assert_non_null(c);
    assert_int_equal(c->n_shards, 2);
    assert_int_equal(c->shards[0]->group_id, VX_PD_FIRST_GROUP_ID);
    assert_int_equal(c->shards[1]->group_id, VX_PD_FIRST_GROUP_ID + 1);
    assert_int_equal(c->shards[1]->n_replicas, 3);
    assert_true(c->shards[1]->replicas[2]->worker == w[3] && c->shards[1]->replicas[2]->voter);
    for (int i = 0; i < 4; i++) assert_int_equal(vx_pd_state_worker(st, w[i])->state, VX_PD_ACTIVE);
    /* refusals leave nothing behind */
    assert_int_equal(create(st, "c", 2, 3, pl, 6), VX_EEXISTS);
    uint64_t dup[3] = {w[0], w[0], w[1]};
    assert_int_equal(create(st, "d", 1, 3, dup, 3), VX_EINVAL);
    uint64_t ghost[1] = {77};
    assert_int_equal(create(st, "d", 1, 1, ghost, 1), VX_ESTATE);
    assert_int_equal(create(st, "d", 1, 2, pl, 1), VX_EINVAL);
    assert_int_equal(create(st, "d", 0, 1, pl, 0), VX_EINVAL);
    assert_null(vx_pd_state_collection(st, "d"));
    assert_int_equal(vx_pd_state_get(st)->n_collections, 1);
    /* group ids are never reused */
    uint64_t one[1] = {w[0]};
    assert_int_equal(create(st, "e", 1, 1, one, 1), 0);
    assert_int_equal(vx_pd_state_collection(st, "e")->shards[0]->group_id, VX_PD_FIRST_GROUP_ID + 2);
    Vxpd__CmdDeleteCollection dc = VXPD__CMD_DELETE_COLLECTION__INIT;
    dc.name = (char *)"c";
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_DELETE_COLLECTION;
    cmd.delete_collection = &dc;
    vx_pd_result res;
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    assert_int_equal(res.status, 0);
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    assert_int_equal(res.status, VX_ENOTFOUND);
    assert_null(vx_pd_state_collection(st, "c"));
    /* w[3] held only shards of c: back to READY; w[0] holds e */
    assert_int_equal(vx_pd_state_worker(st, w[3])->state, VX_PD_READY);
    assert_int_equal(vx_pd_state_worker(st, w[0])->state, VX_PD_ACTIVE);
    assert_int_equal(create(st, "c", 1, 1, one, 1), 0);
    assert_int_equal(vx_pd_state_collection(st, "c")->shards[0]->group_id, VX_PD_FIRST_GROUP_ID + 3);
    vx_pd_state_free(st);
}

static void test_move_steps(void **unused)
{
    (void)unused;
    vx_pd_state *st = vx_pd_state_new();
    uint64_t a = reg(st, "a", "z1", NULL), b = reg(st, "b", "z2", NULL), c = reg(st, "c", "z3", NULL);
    uint64_t d = reg(st, "d", "z3", NULL);
    uint64_t pl[3] = {a, b, c};
    assert_int_equal(create(st, "col", 1, 3, pl, 3), 0);
    uint64_t gid = VX_PD_FIRST_GROUP_ID;
    const Vxpd__Shard *sh = vx_pd_state_shard(st, gid, NULL);
    uint64_t e0 = sh->epoch;
    /* move c -> d */
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__BEGIN_MOVE, d, c), 0);
    sh = vx_pd_state_shard(st, gid, NULL);
    assert_true(sh->move_to == d && sh->move_from == c && sh->n_replicas == 4);
    assert_true(sh->epoch > e0);
    assert_false(sh->replicas[3]->voter);
    /* repeated: no-op; another move while one is in flight: refused */
    uint64_t e1 = vx_pd_state_get(st)->epoch;
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__BEGIN_MOVE, d, c), 0);
    assert_int_equal(vx_pd_state_get(st)->epoch, e1);
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__BEGIN_MOVE, d, a), VX_ESTATE);
    /* finishing early is refused */
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__FINISH_MOVE, 0, 0), VX_ESTATE);
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__PROMOTE, d, 0), 0);
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__PROMOTE, d, 0), 0);
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__REMOVE, c, 0), 0);
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__REMOVE, c, 0), 0);
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__FINISH_MOVE, 0, 0), 0);
    sh = vx_pd_state_shard(st, gid, NULL);
    assert_true(sh->move_to == 0 && sh->move_from == 0 && sh->n_replicas == 3);
    for (size_t i = 0; i < 3; i++) assert_true(sh->replicas[i]->voter && sh->replicas[i]->worker != c);
    assert_int_equal(vx_pd_state_worker(st, c)->state, VX_PD_READY);
    /* a repair that aborts: the learner is dropped */
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__BEGIN_MOVE, c, 0), 0);
    assert_int_equal(vx_pd_state_shard(st, gid, NULL)->n_replicas, 4);
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__ABORT_MOVE, 0, 0), 0);
    sh = vx_pd_state_shard(st, gid, NULL);
    assert_true(sh->n_replicas == 3 && sh->move_to == 0);
    /* an unhealthy worker is not a target; a worker already holding the shard neither */
    assert_int_equal(set_state(st, c, VX_PD_UNHEALTHY, -1), 0);
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__BEGIN_MOVE, c, 0), VX_ESTATE);
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__BEGIN_MOVE, a, 0), VX_EEXISTS);
    assert_int_equal(step(st, 4242, VXPD__CMD_REPLICA_STEP__STEP__PROMOTE, a, 0), VX_ENOTFOUND);
    /* voters never drop below the replication factor (3 here) */
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__REMOVE, a, 0), VX_ESTATE);
    assert_int_equal(vx_pd_state_shard(st, gid, NULL)->n_replicas, 3);
    /* a stale source removal after a rolled-back move is refused the same way */
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__BEGIN_MOVE, c, a), VX_ESTATE); /* c unhealthy */
    assert_int_equal(set_state(st, c, VX_PD_READY, -1), 0);
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__BEGIN_MOVE, c, a), 0);
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__PROMOTE, c, 0), 0);
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__ABORT_MOVE, 0, 0), 0);
    sh = vx_pd_state_shard(st, gid, NULL);
    assert_true(sh->n_replicas == 3 && sh->move_to == 0); /* the promoted target left again */
    assert_int_equal(step(st, gid, VXPD__CMD_REPLICA_STEP__STEP__REMOVE, a, 0), VX_ESTATE);
    vx_pd_state_free(st);
}

static void assert_same(const vx_pd_state *a, const vx_pd_state *b);

/* ---- credentials ---------------------------------------------------------------------- */

static int put_user(vx_pd_state *st, const char *name, const char *pwhash, uint32_t role,
                    const char *scope, bool create_only)
{
    Vxpd__User u = VXPD__USER__INIT;
    u.name = (char *)name;
    u.pwhash = (char *)pwhash;
    u.role = role;
    char *colls[1] = {(char *)scope};
    if (scope) {
        u.n_collections = 1;
        u.collections = colls;
    }
    Vxpd__CmdPutUser c = VXPD__CMD_PUT_USER__INIT;
    c.user = &u;
    c.create_only = create_only;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_PUT_USER;
    cmd.put_user = &c;
    vx_pd_result res;
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    return res.status;
}

static int put_key(vx_pd_state *st, const char *id, size_t digest_len, uint32_t role)
{
    uint8_t d[40] = {1, 2, 3};
    Vxpd__ApiKey k = VXPD__API_KEY__INIT;
    k.id = (char *)id;
    k.digest.data = d;
    k.digest.len = digest_len;
    k.role = role;
    Vxpd__CmdPutApiKey c = VXPD__CMD_PUT_API_KEY__INIT;
    c.key = &k;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_PUT_API_KEY;
    cmd.put_api_key = &c;
    vx_pd_result res;
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    return res.status;
}

static int revoke(vx_pd_state *st, const char *user, const char *jti, int64_t exp, int64_t now)
{
    Vxpd__CmdRevokeTokens c = VXPD__CMD_REVOKE_TOKENS__INIT;
    c.user = (char *)user;
    c.jti = (char *)jti;
    c.exp = exp;
    c.now = now;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_REVOKE_TOKENS;
    cmd.revoke_tokens = &c;
    vx_pd_result res;
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    return res.status;
}

static void test_credentials(void **unused)
{
    (void)unused;
    vx_pd_state *st = vx_pd_state_new();
    const char *h1 = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA";
    const char *h2 = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$b3RoZXI";
    /* refusals: clear passwords, bad roles and names, no password for a new user */
    assert_int_equal(put_user(st, "ann", "hunter2", 1, NULL, true), VX_EINVAL);
    assert_int_equal(put_user(st, "ann", h1, 0, NULL, true), VX_EINVAL);
    assert_int_equal(put_user(st, "ann", h1, 4, NULL, true), VX_EINVAL);
    assert_int_equal(put_user(st, "", h1, 1, NULL, true), VX_EINVAL);
    assert_int_equal(put_user(st, "a\nb", h1, 1, NULL, true), VX_EINVAL);
    assert_int_equal(put_user(st, "ann", "", 1, NULL, false), VX_EINVAL);
    assert_int_equal(put_user(st, "ann", h1, 1, "", true), VX_EINVAL);
    assert_int_equal(vx_pd_state_get(st)->auth_epoch, 0);
    assert_int_equal(vx_pd_state_get(st)->n_users, 0);
    /* create, duplicate, update keeps or replaces the hash */
    assert_int_equal(put_user(st, "ann", h1, 2, "docs", true), 0);
    assert_int_equal(put_user(st, "ann", h1, 2, NULL, true), VX_EEXISTS);
    const Vxpd__User *u = vx_pd_state_get(st)->users[0];
    assert_int_equal(u->token_gen, 1);
    assert_int_equal(u->n_collections, 1);
    assert_int_equal(put_user(st, "ann", "", 3, NULL, false), 0); /* role change, same password */
    u = vx_pd_state_get(st)->users[0];
    assert_string_equal(u->pwhash, h1);
    assert_int_equal(u->role, 3);
    assert_int_equal(u->n_collections, 0);
    assert_int_equal(u->token_gen, 1);
    assert_int_equal(put_user(st, "ann", h2, 3, NULL, false), 0); /* a new password ends sessions */
    u = vx_pd_state_get(st)->users[0];
    assert_string_equal(u->pwhash, h2);
    assert_int_equal(u->token_gen, 2);
    /* revocations: one refresh token, every token of a user, expiry by the proposer's clock */
    assert_int_equal(revoke(st, "ann", "", 0, 100), 0);
    assert_int_equal(vx_pd_state_get(st)->users[0]->token_gen, 3);
    assert_int_equal(revoke(st, "bob", "", 0, 100), VX_ENOTFOUND);
    assert_int_equal(revoke(st, "", "j1", 200, 100), 0);
    assert_int_equal(revoke(st, "", "j1", 200, 100), 0); /* again: no duplicate */
    assert_int_equal(revoke(st, "", "j2", 300, 100), 0);
    assert_int_equal(vx_pd_state_get(st)->n_revoked, 2);
    assert_int_equal(revoke(st, "", "j3", 400, 250), 0); /* j1 expired at 200 */
    assert_int_equal(vx_pd_state_get(st)->n_revoked, 2);
    assert_string_equal(vx_pd_state_get(st)->revoked[0]->jti, "j2");
    /* keys: hex ids, 32-byte digests, unique */
    assert_int_equal(put_key(st, "0a1b", 31, 1), VX_EINVAL);
    assert_int_equal(put_key(st, "0A1B", 32, 1), VX_EINVAL);
    assert_int_equal(put_key(st, "0a1b", 32, 9), VX_EINVAL);
    assert_int_equal(put_key(st, "0a1b", 32, 1), 0);
    assert_int_equal(put_key(st, "0a1b", 32, 2), VX_EEXISTS);
    assert_int_equal(vx_pd_state_get(st)->n_api_keys, 1);
    Vxpd__CmdDeleteApiKey dk = VXPD__CMD_DELETE_API_KEY__INIT;
    dk.id = "0a1b";
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_DELETE_API_KEY;
    cmd.delete_api_key = &dk;
    vx_pd_result res;
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    assert_int_equal(res.status, 0);
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    assert_int_equal(res.status, VX_ENOTFOUND);
    Vxpd__CmdDeleteUser du = VXPD__CMD_DELETE_USER__INIT;
    du.name = "ann";
    cmd.cmd_case = VXPD__COMMAND__CMD_DELETE_USER;
    cmd.delete_user = &du;
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    assert_int_equal(res.status, 0);
    assert_int_equal(vx_pd_state_get(st)->n_users, 0);
    /* every accepted change moved the auth epoch; a snapshot carries it all */
    uint64_t epoch = vx_pd_state_get(st)->auth_epoch;
    assert_int_equal(epoch, 10); /* a repeated revocation changed nothing */
    assert_int_equal(put_user(st, "cy", h1, 1, "a", true), 0);
    uint8_t *enc;
    size_t len;
    assert_int_equal(vx_pd_state_encode(st, &enc, &len), 0);
    vx_pd_state *st2 = vx_pd_state_new();
    assert_int_equal(vx_pd_state_restore(st2, enc, len), 0);
    free(enc);
    assert_same(st, st2);
    vx_pd_state_free(st2);
    vx_pd_state_free(st);
}

static int pindex(vx_pd_state *st, const char *coll, const char *field, const char *schema, bool drop)
{
    Vxpd__CmdPayloadIndex pi = VXPD__CMD_PAYLOAD_INDEX__INIT;
    pi.collection = (char *)coll;
    pi.field = (char *)field;
    pi.schema = (char *)schema;
    pi.drop = drop;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_PAYLOAD_INDEX;
    cmd.payload_index = &pi;
    vx_pd_result res;
    assert_int_equal(apply_cmd(st, &cmd, &res), 0);
    return res.status;
}

static void test_payload_indexes(void **unused)
{
    (void)unused;
    vx_pd_state *st = vx_pd_state_new();
    uint64_t a = reg(st, "a", "z1", NULL);
    uint64_t pl[1] = {a};
    assert_int_equal(create(st, "c", 1, 1, pl, 1), 0);
    uint64_t e = vx_pd_state_get(st)->epoch;
    assert_int_equal(pindex(st, "c", "tag", "keyword", false), 0);
    assert_int_equal(pindex(st, "c", "n", "integer", false), 0);
    assert_int_equal(vx_pd_state_get(st)->epoch, e + 2);
    assert_int_equal(pindex(st, "c", "tag", "keyword", false), 0); /* again: no change */
    assert_int_equal(vx_pd_state_get(st)->epoch, e + 2);
    assert_int_equal(pindex(st, "c", "tag", "float", false), 0); /* a new type replaces it */
    const Vxpd__Collection *c = vx_pd_state_collection(st, "c");
    assert_int_equal(c->n_payload_indexes, 2);
    assert_string_equal(c->payload_indexes[0]->field, "tag");
    assert_string_equal(c->payload_indexes[0]->schema, "float");
    assert_int_equal(pindex(st, "c", "x", "geo", false), VX_EINVAL);
    assert_int_equal(pindex(st, "c", "", "keyword", false), VX_EINVAL);
    assert_int_equal(pindex(st, "nope", "x", "keyword", false), VX_ENOTFOUND);
    assert_int_equal(pindex(st, "c", "tag", "", true), 0);
    assert_int_equal(pindex(st, "c", "tag", "", true), 0); /* dropping twice is fine */
    c = vx_pd_state_collection(st, "c");
    assert_int_equal(c->n_payload_indexes, 1);
    assert_string_equal(c->payload_indexes[0]->field, "n");
    vx_pd_state_free(st);
}

static void test_unknown_and_garbage(void **unused)
{
    (void)unused;
    vx_pd_state *st = vx_pd_state_new();
    vx_pd_result res;
    /* field 99 (a command kind from a newer version), varint 1 */
    const uint8_t future[] = {0x98, 0x06, 0x01};
    assert_int_equal(vx_pd_state_apply(st, future, sizeof future, &res), VX_EFORMAT);
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff};
    assert_int_equal(vx_pd_state_apply(st, garbage, sizeof garbage, &res), VX_EFORMAT);
    assert_int_equal(vx_pd_state_apply(st, garbage, 0, &res), VX_EFORMAT);
    assert_int_equal(vx_pd_state_restore(st, garbage, sizeof garbage), VX_EFORMAT);
    vx_pd_state_free(st);
}

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void assert_same(const vx_pd_state *a, const vx_pd_state *b)
{
    uint8_t *x, *y;
    size_t nx, ny;
    assert_int_equal(vx_pd_state_encode(a, &x, &nx), 0);
    assert_int_equal(vx_pd_state_encode(b, &y, &ny), 0);
    assert_int_equal(nx, ny);
    assert_memory_equal(x, y, nx);
    free(x);
    free(y);
}

/* Invariants every reachable state keeps. */
static void check_invariants(const vx_pd_state *st)
{
    const Vxpd__State *s = vx_pd_state_get(st);
    for (size_t i = 0; i < s->n_collections; i++)
        for (size_t j = 0; j < s->collections[i]->n_shards; j++) {
            const Vxpd__Shard *sh = s->collections[i]->shards[j];
            unsigned voters = 0;
            for (size_t r = 0; r < sh->n_replicas; r++) {
                voters += sh->replicas[r]->voter;
                for (size_t q = 0; q < r; q++)
                    assert_true(sh->replicas[q]->worker != sh->replicas[r]->worker);
            }
            assert_true(voters >= 1);
            assert_true(sh->epoch <= s->epoch);
        }
}

static void test_random_replicas(void **unused)
{
    (void)unused;
    const char *env = getenv("VX_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    printf("test_random_replicas: VX_SEED=%" PRIu64 "\n", seed);
    uint64_t r = seed;
    vx_pd_state *a = vx_pd_state_new(), *b = vx_pd_state_new();
    for (int i = 0; i < 6; i++) {
        char n[8];
        snprintf(n, sizeof n, "w%d", i);
        reg(a, n, i % 3 == 0 ? "z1" : i % 3 == 1 ? "z2" : "z3", NULL);
        reg(b, n, i % 3 == 0 ? "z1" : i % 3 == 1 ? "z2" : "z3", NULL);
    }
    for (int it = 0; it < 3000; it++) {
        Vxpd__Command cmd = VXPD__COMMAND__INIT;
        Vxpd__CmdReplicaStep rs = VXPD__CMD_REPLICA_STEP__INIT;
        Vxpd__CmdCreateCollection cc = VXPD__CMD_CREATE_COLLECTION__INIT;
        Vxpd__CmdDeleteCollection dc = VXPD__CMD_DELETE_COLLECTION__INIT;
        Vxpd__CmdSetWorkerState ss = VXPD__CMD_SET_WORKER_STATE__INIT;
        char name[8];
        snprintf(name, sizeof name, "c%d", (int)(rnd(&r) % 5));
        uint64_t pl[6];
        switch (rnd(&r) % 4) {
        case 0:
            cc.name = name;
            cc.config_json = (char *)"{}";
            cc.shard_count = 1 + (uint32_t)(rnd(&r) % 2);
            cc.replication_factor = 3;
            for (int k = 0; k < 6; k++) pl[k] = 1 + (k + rnd(&r) % 2) % 6;
            cc.placement = pl;
            cc.n_placement = (size_t)cc.shard_count * 3;
            cmd.cmd_case = VXPD__COMMAND__CMD_CREATE_COLLECTION;
            cmd.create_collection = &cc;
            break;
        case 1:
            dc.name = name;
            cmd.cmd_case = VXPD__COMMAND__CMD_DELETE_COLLECTION;
            cmd.delete_collection = &dc;
            break;
        case 2:
            ss.id = 1 + rnd(&r) % 6;
            ss.state = rnd(&r) % 2 ? VX_PD_READY : VX_PD_UNHEALTHY;
            cmd.cmd_case = VXPD__COMMAND__CMD_SET_WORKER_STATE;
            cmd.set_worker_state = &ss;
            break;
        default:
            rs.group_id = VX_PD_FIRST_GROUP_ID + rnd(&r) % 12;
            rs.step = (Vxpd__CmdReplicaStep__Step)(rnd(&r) % 5);
            rs.worker = 1 + rnd(&r) % 6;
            rs.from_worker = rnd(&r) % 7;
            cmd.cmd_case = VXPD__COMMAND__CMD_REPLICA_STEP;
            cmd.replica_step = &rs;
            break;
        }
        vx_pd_result ra, rb;
        assert_int_equal(apply_cmd(a, &cmd, &ra), 0);
        assert_int_equal(apply_cmd(b, &cmd, &rb), 0);
        assert_int_equal(ra.status, rb.status);
        assert_int_equal(ra.value, rb.value);
        check_invariants(a);
        if (it == 1500) { /* b restarts from a snapshot of itself */
            uint8_t *snap;
            size_t n;
            assert_int_equal(vx_pd_state_encode(b, &snap, &n), 0);
            vx_pd_state_free(b);
            b = vx_pd_state_new();
            assert_int_equal(vx_pd_state_restore(b, snap, n), 0);
            free(snap);
        }
    }
    assert_same(a, b);
    vx_pd_cluster c;
    assert_int_equal(vx_pd_state_cluster(a, &c), 0);
    assert_int_equal(c.nworkers, 6);
    vx_pd_cluster_free(&c);
    vx_pd_state_free(a);
    vx_pd_state_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register),      cmocka_unit_test(test_set_state_cas),
        cmocka_unit_test(test_create_delete), cmocka_unit_test(test_move_steps),
        cmocka_unit_test(test_unknown_and_garbage), cmocka_unit_test(test_random_replicas),
        cmocka_unit_test(test_payload_indexes), cmocka_unit_test(test_credentials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
