/*
 * auth_sync.c - see auth_sync.h.
 */
#define _GNU_SOURCE
#include "gateway/auth_sync.h"

#include "base/err.h"
#include "base/log.h"
#include "pd/pdrpc.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct vx_auth_sync {
    vx_cluster *cl;
    vx_gate *gate;
    unsigned poll_ms;
    pthread_mutex_t mu; /* one GetAuth at a time */
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
    bool stop;
    pthread_t th;
    uint64_t known; /* auth epoch + 1 of the copy (0: none yet) */
};

int vx_auth_sync_now(vx_auth_sync *s, char *errbuf)
{
    pthread_mutex_lock(&s->mu);
    Vxpd__AuthRequest r = VXPD__AUTH_REQUEST__INIT;
    r.known_auth_epoch = s->known;
    ProtobufCMessage *resp = NULL;
    char err[VX_CLUSTER_ERRMSG_LEN];
    int rc = vx_cluster_pd_call(s->cl, VX_PD_GET_AUTH, &r.base, &vxpd__auth_state__descriptor, &resp, 3000, err);
    if (rc == 0) {
        Vxpd__AuthState *a = (Vxpd__AuthState *)resp;
        if (a->changed) {
            Vxpd__State st = VXPD__STATE__INIT; /* the gate reads only the credentials */
            st.auth_epoch = a->auth_epoch;
            st.users = a->users;
            st.n_users = a->n_users;
            st.api_keys = a->api_keys;
            st.n_api_keys = a->n_api_keys;
            st.revoked = a->revoked;
            st.n_revoked = a->n_revoked;
            rc = vx_gate_load(s->gate, &st);
            if (rc == 0) s->known = a->auth_epoch + 1;
            else snprintf(err, sizeof err, "loading credentials: %s", vx_strerror(rc));
        }
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != 0 && errbuf) snprintf(errbuf, VX_CLUSTER_ERRMSG_LEN, "%s", err);
    return rc;
}

static void *poller(void *arg)
{
    vx_auth_sync *s = arg;
    bool failing = false;
    for (;;) {
        char err[VX_CLUSTER_ERRMSG_LEN];
        int rc = vx_auth_sync_now(s, err);
        if (rc != 0 && !failing) vx_log(VX_LOG_WARN, "auth_sync_failed", "message=%s", err);
        if (rc == 0 && failing) vx_log(VX_LOG_INFO, "auth_sync_ok", "message=%s", "credentials are current again");
        failing = rc != 0;
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += s->poll_ms / 1000;
        dl.tv_nsec += (long)(s->poll_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&s->stop_mu);
        while (!s->stop && pthread_cond_timedwait(&s->stop_cv, &s->stop_mu, &dl) != ETIMEDOUT) {
        }
        bool stop = s->stop;
        pthread_mutex_unlock(&s->stop_mu);
        if (stop) return NULL;
    }
}

int vx_auth_sync_start(vx_cluster *cl, vx_gate *gate, unsigned poll_ms, vx_auth_sync **out)
{
    vx_auth_sync *s = calloc(1, sizeof *s);
    if (s == NULL) return VX_ENOMEM;
    s->cl = cl;
    s->gate = gate;
    s->poll_ms = poll_ms ? poll_ms : 1000;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->stop_mu, NULL);
    pthread_cond_init(&s->stop_cv, NULL);
    if (pthread_create(&s->th, NULL, poller, s) != 0) {
        free(s);
        return VX_ENOMEM;
    }
    vx_cluster_set_auth(cl, s);
    *out = s;
    return 0;
}

void vx_auth_sync_stop(vx_auth_sync *s)
{
    if (s == NULL) return;
    pthread_mutex_lock(&s->stop_mu);
    s->stop = true;
    pthread_cond_signal(&s->stop_cv);
    pthread_mutex_unlock(&s->stop_mu);
    pthread_join(s->th, NULL);
    vx_cluster_set_auth(s->cl, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->stop_mu);
    pthread_cond_destroy(&s->stop_cv);
    free(s);
}
