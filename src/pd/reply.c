/*
 * reply.c - answering internal RPC calls with protobuf messages (pdrpc.h):
 * shared by the placement driver and the workers.
 */
#include "pd/pdrpc.h"

#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void vx_rpc_reply_msg(vx_rpc_call *call, int32_t status, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n ? n : 1);
    if (b == NULL) {
        vx_rpc_reply(call, VX_ENOMEM, NULL, 0);
        return;
    }
    protobuf_c_message_pack(m, b);
    vx_rpc_reply(call, status, b, n);
    free(b);
}

void vx_rpc_reply_err(vx_rpc_call *call, int32_t status, const char *leader, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Vxpd__Error e = VXPD__ERROR__INIT;
    e.message = msg;
    e.leader_rpc_address = (char *)(leader ? leader : "");
    vx_rpc_reply_msg(call, status, &e.base);
}
