/*
 * pdclient.c - calling the placement driver cluster (pdrpc.h): find the
 * leader, follow redirects, retry while a leader is being elected.
 *
 * Connections: one multiplexed connection (rpc.h: vx_rpc_mux) per PD
 * address and secret, shared by every thread of the process (heartbeats,
 * topology watches, credential polls, admin calls) -- no connection per
 * call.  A broken one is replaced by the next call to that address.
 */
#include "pd/pdrpc.h"

#include "base/err.h"
#include "rpc/rpc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define POOL_MAX 32

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char addr[256];
    char *secret;
    vx_rpc_mux *m; /* one reference held here */
} pool[POOL_MAX];

/* A referenced connection to addr (the pool's, or a new one). */
static vx_rpc_mux *pool_get(const char *addr, const char *sec, int timeout_ms, char *err)
{
    vx_rpc_mux *m = NULL, *dead = NULL;
    pthread_mutex_lock(&pool_mu);
    for (int i = 0; i < POOL_MAX; i++)
        if (pool[i].m && strcmp(pool[i].addr, addr) == 0 && strcmp(pool[i].secret, sec) == 0) {
            if (vx_rpc_mux_usable(pool[i].m)) {
                m = pool[i].m;
                vx_rpc_mux_ref(m);
            } else {
                dead = pool[i].m;
                pool[i].m = NULL;
                free(pool[i].secret);
                pool[i].secret = NULL;
            }
            break;
        }
    pthread_mutex_unlock(&pool_mu);
    vx_rpc_mux_unref(dead);
    if (m) return m;
    if (vx_rpc_mux_connect(addr, sec, strlen(sec), timeout_ms, &m, err) != 0) return NULL;
    pthread_mutex_lock(&pool_mu);
    bool have = false;
    for (int i = 0; i < POOL_MAX && !have; i++)
        have = pool[i].m && strcmp(pool[i].addr, addr) == 0 && strcmp(pool[i].secret, sec) == 0;
    for (int i = 0; i < POOL_MAX && !have; i++)
        if (pool[i].m == NULL && (pool[i].secret = strdup(sec)) != NULL) {
            snprintf(pool[i].addr, sizeof pool[i].addr, "%s", addr);
            vx_rpc_mux_ref(m);
            pool[i].m = m;
            have = true;
        }
    pthread_mutex_unlock(&pool_mu); /* a full pool: this connection serves this call only */
    return m;
}

int vx_pd_client_call(const char *const *addrs, size_t n, const char *secret, uint32_t method,
                      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                      ProtobufCMessage **resp, int timeout_ms, char *errbuf)
{
    if (addrs == NULL || n == 0 || req == NULL || resp_desc == NULL || resp == NULL || timeout_ms <= 0)
        return vx_errf(errbuf, VX_PD_CLIENT_ERRMSG_LEN, VX_EINVAL, "bad arguments");
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) return vx_errf(errbuf, VX_PD_CLIENT_ERRMSG_LEN, VX_ENOMEM, "out of memory");
    protobuf_c_message_pack(req, buf);
    const char *sec = secret ? secret : "";
    long long deadline = mono_ms() + timeout_ms;
    char redirect[256] = "", last[600] = "no placement driver answered";
    size_t next = 0;
    unsigned backoff_ms = 20;
    int rc = VX_EIO;
    for (;;) {
        const char *addr = redirect[0] ? redirect : addrs[next++ % n];
        char target[256];
        snprintf(target, sizeof target, "%s", addr);
        redirect[0] = '\0';
        long long left = deadline - mono_ms();
        if (left <= 0) break;
        int32_t status = 0;
        uint8_t *out = NULL;
        size_t outlen = 0;
        char cerr[VX_RPC_ERRMSG_LEN];
        int per = (int)(left < 5000 ? left : 5000);
        vx_rpc_mux *m = pool_get(target, sec, per, cerr);
        int crc = VX_EIO;
        if (m) {
            crc = vx_rpc_mux_call(m, method, buf, len, per, &status, &out, &outlen, cerr);
            vx_rpc_mux_unref(m);
        }
        if (crc != 0) {
            snprintf(last, sizeof last, "%s: %s", target, cerr);
        } else if (status == 0) {
            *resp = protobuf_c_message_unpack(resp_desc, NULL, outlen, out);
            free(out);
            free(buf);
            if (*resp == NULL)
                return vx_errf(errbuf, VX_PD_CLIENT_ERRMSG_LEN, VX_EFORMAT,
                               "%s: unreadable answer", target);
            return 0;
        } else {
            Vxpd__Error *e = vxpd__error__unpack(NULL, outlen, out);
            snprintf(last, sizeof last, "%s: %s", target,
                     e && e->message[0] ? e->message : vx_rpc_strstatus(status));
            if (status == VX_PD_NOT_LEADER && e && e->leader_rpc_address[0] &&
                strcmp(e->leader_rpc_address, target) != 0)
                snprintf(redirect, sizeof redirect, "%s", e->leader_rpc_address);
            bool retry = status == VX_PD_NOT_LEADER || status == VX_PD_RETRY;
            if (status <= VX_RPC_EAUTH && status >= VX_RPC_EPROTO) status = VX_EIO; /* transport */
            if (e) vxpd__error__free_unpacked(e, NULL);
            if (!retry) {
                free(out);
                rc = status;
                vx_errf(errbuf, VX_PD_CLIENT_ERRMSG_LEN, rc, "%s", last);
                free(buf);
                return rc;
            }
        }
        free(out);
        if (redirect[0]) { /* straight to the leader (a short pause: hints can be stale) */
            usleep(5000);
            continue;
        }
        if (next % n == 0) {       /* a full round without a leader: wait a little */
            long long rest = deadline - mono_ms();
            if (rest <= 0) break;
            usleep((useconds_t)(backoff_ms < rest ? backoff_ms : rest) * 1000);
            if (backoff_ms < 200) backoff_ms *= 2;
        }
    }
    free(buf);
    return vx_errf(errbuf, VX_PD_CLIENT_ERRMSG_LEN, rc, "no placement driver leader within %d ms (%s)",
                   timeout_ms, last);
}

void vx_pd_request_id(char out[33])
{
    uint8_t r[16] = {0};
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        struct timespec ts; /* no entropy: time and pid are unique enough for retries */
        clock_gettime(CLOCK_REALTIME, &ts);
        memcpy(r, &ts, sizeof ts < 16 ? sizeof ts : 16);
        pid_t pid = getpid();
        memcpy(r + 12, &pid, sizeof pid);
    }
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", r[i]);
}
