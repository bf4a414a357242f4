/*
 * api_auth.c - see api_auth.h.
 */
#define _GNU_SOURCE
#include "server/api_auth.h"

#include "base/err.h"
#include "base/log.h"

#include <cjson/cJSON.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define UNAUTHORIZED_MSG "Unauthorized: missing or invalid credentials"
#define MIN_PASSWORD 8
#define MAX_PASSWORD 1024

typedef enum { NEED_OPEN, NEED_ANY, NEED_ROLE, NEED_GLOBAL_ADMIN, AUTH_ROUTE } need_kind;

static bool is(const char *a, const char *b) { return strcmp(a, b) == 0; }

/* What the route in seg[0..n) needs; *coll is the collection it is about. */
static need_kind classify(const char *m, char **s, size_t n, vx_role *role, const char **coll)
{
    *role = VX_ROLE_NONE;
    *coll = NULL;
    if (n == 1 && is(m, "GET") && (is(s[0], "healthz") || is(s[0], "livez") || is(s[0], "readyz")))
        return NEED_OPEN;
    if (n == 1 && is(s[0], "metrics")) return NEED_GLOBAL_ADMIN;
    bool v1 = n >= 1 && is(s[0], "v1");
    if (v1 && n >= 2 && is(s[1], "auth")) return AUTH_ROUTE;
    if (v1 && n >= 2 && is(s[1], "admin")) return NEED_GLOBAL_ADMIN;
    size_t o = v1 ? 1 : 0;
    if (n < o + 2 || !is(s[o], "collections")) return NEED_ANY;
    *coll = s[o + 1];
    size_t k = n - o; /* segments from "collections" */
    char **t = s + o;
    *role = VX_ROLE_READ;
    if (k == 2) {
        if (!is(m, "GET")) *role = VX_ROLE_ADMIN; /* create, update, delete */
        return NEED_ROLE;
    }
    if (is(t[2], "index")) {
        *role = VX_ROLE_WRITE;
        return NEED_ROLE;
    }
    if (is(t[2], "points")) {
        if (k == 3) { /* PUT upsert; POST retrieve, but /v1's POST is its upsert */
            if (is(m, "PUT") || (v1 && is(m, "POST"))) *role = VX_ROLE_WRITE;
            return NEED_ROLE;
        }
        const char *op = t[3];
        if (is(m, "GET") || is(op, "search") || is(op, "query") || is(op, "scroll") || is(op, "count"))
            return NEED_ROLE;
        *role = VX_ROLE_WRITE; /* delete, payload changes */
        return NEED_ROLE;
    }
    return NEED_ROLE; /* exists, and whatever else reads */
}

/* ---- answers ----------------------------------------------------------------------------- */

static void answer_json(vx_api_response *res, int status, cJSON *result)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "result", result);
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddNumberToObject(o, "time", 0);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (text == NULL) {
        vx_api_error(res, 500, "Service internal error: out of memory");
        return;
    }
    res->status = status;
    res->content_type = "application/json";
    res->body = text;
    res->len = strlen(text);
}

static void unauthorized(vx_api_response *res)
{
    vx_api_error(res, 401, UNAUTHORIZED_MSG);
    res->route = "unauthorized";
}

static void limited(vx_api_response *res, int retry_after_s)
{
    vx_api_error(res, 429, "Too many requests: retry later");
    snprintf(res->retry_buf, sizeof res->retry_buf, "%d", retry_after_s > 0 ? retry_after_s : 1);
    res->retry_after = res->retry_buf;
    res->route = "rate_limited";
}

static void forbidden(vx_api_response *res, const char *coll)
{
    char msg[400];
    if (coll)
        snprintf(msg, sizeof msg, "Forbidden: this credential may not do that on this collection");
    else
        snprintf(msg, sizeof msg, "Forbidden: this needs a global admin credential");
    vx_api_error(res, 403, msg);
    res->route = "forbidden";
}

static void fail_status(vx_api_response *res, int rc, const char *msg)
{
    char m[400];
    int status = rc == VX_ENOTFOUND ? 404 : rc == VX_EEXISTS ? 409 : rc == VX_EINVAL ? 400
               : rc == VX_EFULL ? 507 : rc == VX_ESTATE ? 503 : 500;
    snprintf(m, sizeof m, "%s: %s",
             status == 404 ? "Not found" : status == 409 ? "Conflict" : status == 400 ? "Wrong input"
             : status == 503 ? "Service unavailable" : status == 507 ? "Insufficient storage"
                             : "Service internal error",
             msg);
    vx_api_error(res, status, m);
}

static cJSON *body_object(const vx_api_request *req, vx_api_response *res)
{
    cJSON *b = req->body_len ? cJSON_ParseWithLength(req->body, req->body_len) : NULL;
    if (!cJSON_IsObject(b)) {
        cJSON_Delete(b);
        vx_api_error(res, 400, "Wrong input: the body must be a JSON object");
        return NULL;
    }
    return b;
}

static const char *str_field(const cJSON *b, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(b, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- /v1/auth ------------------------------------------------------------------------------ */

static void auth_route(vx_gate *g, const vx_backend *be, const vx_api_request *req, char **s, size_t n,
                       vx_api_response *res)
{
    res->route = "auth";
    if (n == 3 && is(s[2], "jwks") && is(req->method, "GET")) {
        cJSON *j = vx_gate_jwks(g);
        char *text = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (text == NULL) return vx_api_error(res, 500, "Service internal error: out of memory");
        res->status = 200;
        res->content_type = "application/json";
        res->body = text;
        res->len = strlen(text);
        return;
    }
    if (n != 3 || !is(req->method, "POST")) {
        vx_api_error(res, 404, "Not found: no such auth route");
        return;
    }
    int retry = 0;
    bool login = is(s[2], "login");
    /* before any password or token work; logins are limited by their count
     * (vx_gate_login_admit, below), the other routes by the address's bucket */
    if (!login && vx_gate_charge_address(g, req->peer, &retry) != VX_GATE_OK) return limited(res, retry);
    if (!vx_gate_enabled(g)) {
        vx_api_error(res, 400, "Wrong input: authentication is off on this server");
        return;
    }
    cJSON *b = body_object(req, res);
    if (b == NULL) return;
    if (login) {
        const char *user = str_field(b, "username"), *pw = str_field(b, "password");
        char *access = NULL, *refresh = NULL;
        unsigned ttl = 0;
        uint64_t stamp = 0;
        if (vx_gate_login_admit(g, req->peer, user, &retry, &stamp) != VX_GATE_OK) {
            cJSON_Delete(b);
            return limited(res, retry);
        }
        vx_gate_verdict v = user && pw && strlen(pw) <= MAX_PASSWORD
                                ? vx_gate_login(g, user, pw, &access, &refresh, &ttl)
                                : VX_GATE_UNAUTHORIZED;
        if (v == VX_GATE_OK || v == VX_GATE_BUSY) vx_gate_login_refund(g, req->peer, user, stamp);
        if (v == VX_GATE_OK) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "access_token", access);
            cJSON_AddStringToObject(r, "refresh_token", refresh);
            cJSON_AddStringToObject(r, "token_type", "Bearer");
            cJSON_AddNumberToObject(r, "expires_in", ttl);
            answer_json(res, 200, r);
        } else if (v == VX_GATE_BUSY) {
            limited(res, 1);
        } else {
            unauthorized(res);
        }
        if (access) sodium_memzero(access, strlen(access));
        if (refresh) sodium_memzero(refresh, strlen(refresh));
        free(access);
        free(refresh);
    } else if (is(s[2], "refresh")) {
        const char *rt = str_field(b, "refresh_token");
        char *access = NULL;
        unsigned ttl = 0;
        if (rt && vx_gate_refresh(g, rt, &access, &ttl) == VX_GATE_OK) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "access_token", access);
            cJSON_AddStringToObject(r, "token_type", "Bearer");
            cJSON_AddNumberToObject(r, "expires_in", ttl);
            answer_json(res, 200, r);
        } else {
            unauthorized(res);
        }
        free(access);
    } else if (is(s[2], "logout")) {
        const char *rt = str_field(b, "refresh_token");
        char jti[65];
        int64_t exp = 0;
        if (rt == NULL || vx_gate_refresh_id(g, rt, jti, sizeof jti, &exp) != VX_GATE_OK) {
            unauthorized(res);
        } else {
            Vxpd__CmdRevokeTokens c = VXPD__CMD_REVOKE_TOKENS__INIT;
            c.jti = jti;
            c.exp = exp;
            c.now = now_ms() / 1000;
            Vxpd__Command cmd = VXPD__COMMAND__INIT;
            cmd.cmd_case = VXPD__COMMAND__CMD_REVOKE_TOKENS;
            cmd.revoke_tokens = &c;
            char err[VX_BACKEND_ERRMSG_LEN];
            int rc = be->auth_change ? be->auth_change(be->self, &cmd, err) : VX_ESTATE;
            if (rc == 0) answer_json(res, 200, cJSON_CreateTrue());
            else fail_status(res, rc, be->auth_change ? err : "this backend keeps no credentials");
        }
    } else {
        vx_api_error(res, 404, "Not found: no such auth route");
    }
    cJSON_Delete(b);
}

/* ---- /v1/admin ------------------------------------------------------------------------------ */

/* role and collections of a body; false (and res set) when malformed */
static bool parse_grant(const cJSON *b, vx_role *role, char ***colls, size_t *n, vx_api_response *res)
{
    *role = vx_role_parse(str_field(b, "role"));
    *colls = NULL;
    *n = 0;
    if (*role == VX_ROLE_NONE) {
        vx_api_error(res, 400, "Wrong input: role must be \"read\", \"write\" or \"admin\"");
        return false;
    }
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(b, "collections");
    if (c == NULL || cJSON_IsNull(c)) return true;
    if (!cJSON_IsArray(c) || cJSON_GetArraySize(c) > 256 || cJSON_GetArraySize(c) < 1) {
        vx_api_error(res, 400, "Wrong input: collections must be a list of 1 to 256 names (absent: every collection)");
        return false;
    }
    *colls = calloc((size_t)cJSON_GetArraySize(c), sizeof(char *));
    const cJSON *e;
    cJSON_ArrayForEach(e, c)
    {
        if (!cJSON_IsString(e) || e->valuestring[0] == '\0' || strlen(e->valuestring) > 255) {
            free(*colls);
            *colls = NULL;
            vx_api_error(res, 400, "Wrong input: collection names are strings of 1 to 255 bytes");
            return false;
        }
        (*colls)[(*n)++] = e->valuestring;
    }
    return true;
}

static void change(const vx_backend *be, Vxpd__Command *cmd, vx_api_response *res, cJSON *ok)
{
    char err[VX_BACKEND_ERRMSG_LEN];
    int rc = be->auth_change ? be->auth_change(be->self, cmd, err) : VX_ESTATE;
    if (rc == 0) {
        answer_json(res, 200, ok);
        return;
    }
    cJSON_Delete(ok);
    fail_status(res, rc, be->auth_change ? err : "this backend keeps no credentials");
}

static void admin_users(vx_gate *g, const vx_backend *be, const vx_api_request *req, char **s, size_t n,
                        vx_api_response *res)
{
    const char *m = req->method;
    if (n == 3 && is(m, "GET")) {
        answer_json(res, 200, vx_gate_list(g, false));
        return;
    }
    bool create = n == 3 && is(m, "POST"), update = n == 4 && is(m, "PUT");
    if (create || update) {
        cJSON *b = body_object(req, res);
        if (b == NULL) return;
        const char *name = create ? str_field(b, "username") : s[3];
        const char *pw = str_field(b, "password");
        vx_role role;
        char **colls;
        size_t nc;
        if (name == NULL) {
            vx_api_error(res, 400, "Wrong input: username is required");
        } else if ((create && pw == NULL) ||
                   (pw && (strlen(pw) < MIN_PASSWORD || strlen(pw) > MAX_PASSWORD))) {
            vx_api_error(res, 400, "Wrong input: a password is 8 to 1024 bytes");
        } else if (parse_grant(b, &role, &colls, &nc, res)) {
            char hash[128] = "";
            if (pw && vx_gate_hash_password(pw, hash, sizeof hash) != 0) {
                vx_api_error(res, 500, "Service internal error: cannot hash the password");
            } else {
                Vxpd__User u = VXPD__USER__INIT;
                u.name = (char *)name;
                u.pwhash = hash;
                u.role = role;
                u.collections = colls;
                u.n_collections = nc;
                u.created_ms = (uint64_t)now_ms();
                Vxpd__CmdPutUser c = VXPD__CMD_PUT_USER__INIT;
                c.user = &u;
                c.create_only = create;
                Vxpd__Command cmd = VXPD__COMMAND__INIT;
                cmd.cmd_case = VXPD__COMMAND__CMD_PUT_USER;
                cmd.put_user = &c;
                cJSON *r = cJSON_CreateObject();
                cJSON_AddStringToObject(r, "username", name);
                cJSON_AddStringToObject(r, "role", vx_role_name(role));
                change(be, &cmd, res, r);
            }
            sodium_memzero(hash, sizeof hash);
            free(colls);
        }
        cJSON_Delete(b);
        return;
    }
    if (n == 4 && is(m, "DELETE")) {
        Vxpd__CmdDeleteUser c = VXPD__CMD_DELETE_USER__INIT;
        c.name = s[3];
        Vxpd__Command cmd = VXPD__COMMAND__INIT;
        cmd.cmd_case = VXPD__COMMAND__CMD_DELETE_USER;
        cmd.delete_user = &c;
        change(be, &cmd, res, cJSON_CreateTrue());
        return;
    }
    if (n == 5 && is(m, "POST") && is(s[4], "revoke")) {
        Vxpd__CmdRevokeTokens c = VXPD__CMD_REVOKE_TOKENS__INIT;
        c.user = s[3];
        c.now = now_ms() / 1000;
        Vxpd__Command cmd = VXPD__COMMAND__INIT;
        cmd.cmd_case = VXPD__COMMAND__CMD_REVOKE_TOKENS;
        cmd.revoke_tokens = &c;
        change(be, &cmd, res, cJSON_CreateTrue());
        return;
    }
    vx_api_error(res, 404, "Not found: no such admin route");
}

static void admin_keys(vx_gate *g, const vx_backend *be, const vx_api_request *req, char **s, size_t n,
                       vx_api_response *res)
{
    const char *m = req->method;
    if (n == 3 && is(m, "GET")) {
        answer_json(res, 200, vx_gate_list(g, true));
        return;
    }
    if (n == 3 && is(m, "POST")) {
        cJSON *b = body_object(req, res);
        if (b == NULL) return;
        vx_role role;
        char **colls;
        size_t nc;
        const char *name = str_field(b, "name");
        const cJSON *rate = cJSON_GetObjectItemCaseSensitive(b, "rate");
        const cJSON *burst = cJSON_GetObjectItemCaseSensitive(b, "burst");
        if ((rate && (!cJSON_IsNumber(rate) || rate->valuedouble < 0 || rate->valuedouble > 1e9)) ||
            (burst && (!cJSON_IsNumber(burst) || burst->valuedouble < 0 || burst->valuedouble > 1e9))) {
            vx_api_error(res, 400, "Wrong input: rate and burst are numbers from 0 to 1e9");
        } else if (name && strlen(name) > 128) {
            vx_api_error(res, 400, "Wrong input: a key name is at most 128 bytes");
        } else if (parse_grant(b, &role, &colls, &nc, res)) {
            char key[VX_KEY_MAX], id[13];
            uint8_t digest[32];
            vx_gate_new_key(key, id, digest);
            Vxpd__ApiKey k = VXPD__API_KEY__INIT;
            k.id = id;
            k.digest.data = digest;
            k.digest.len = 32;
            k.name = (char *)(name ? name : "");
            k.role = role;
            k.collections = colls;
            k.n_collections = nc;
            k.created_ms = (uint64_t)now_ms();
            k.rate = rate ? rate->valuedouble : 0;
            k.burst = burst ? burst->valuedouble : 0;
            Vxpd__CmdPutApiKey c = VXPD__CMD_PUT_API_KEY__INIT;
            c.key = &k;
            Vxpd__Command cmd = VXPD__COMMAND__INIT;
            cmd.cmd_case = VXPD__COMMAND__CMD_PUT_API_KEY;
            cmd.put_api_key = &c;
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "id", id);
            cJSON_AddStringToObject(r, "key", key); /* shown this once */
            cJSON_AddStringToObject(r, "role", vx_role_name(role));
            change(be, &cmd, res, r);
            sodium_memzero(key, sizeof key);
            free(colls);
        }
        cJSON_Delete(b);
        return;
    }
    if (n == 4 && is(m, "DELETE")) {
        Vxpd__CmdDeleteApiKey c = VXPD__CMD_DELETE_API_KEY__INIT;
        c.id = s[3];
        Vxpd__Command cmd = VXPD__COMMAND__INIT;
        cmd.cmd_case = VXPD__COMMAND__CMD_DELETE_API_KEY;
        cmd.delete_api_key = &c;
        change(be, &cmd, res, cJSON_CreateTrue());
        return;
    }
    vx_api_error(res, 404, "Not found: no such admin route");
}

/* ---- the gate ------------------------------------------------------------------------------- */

/* Who is calling (req->who when the headers were checked already: it was
 * charged then), and may they do what the route needs?  false with res set
 * (401, 403, 429) when not. */
static bool admit(vx_gate *g, const vx_api_request *req, need_kind k, vx_role role, const char *coll,
                  vx_api_response *res, vx_principal *who)
{
    const char *hk = req->get_header ? req->get_header(req->arg_ctx, "api-key") : NULL;
    const char *ha = req->get_header ? req->get_header(req->arg_ctx, "Authorization") : NULL;
    int retry = 0;
    vx_gate_verdict v;
    if (req->who != NULL)
        v = vx_principal_copy(who, req->who) == 0 ? VX_GATE_OK : VX_GATE_BUSY;
    else
        v = vx_gate_authenticate(g, hk, ha, req->peer, who, &retry);
    if (v == VX_GATE_LIMITED || v == VX_GATE_BUSY) {
        limited(res, retry);
        return false;
    }
    if (v != VX_GATE_OK) {
        unauthorized(res);
        return false;
    }
    bool ok = k == NEED_ANY || (k == NEED_GLOBAL_ADMIN && vx_gate_allows(who, VX_ROLE_ADMIN, NULL)) ||
              (k == NEED_ROLE && vx_gate_allows(who, role, coll));
    if (!ok) {
        forbidden(res, k == NEED_ROLE ? coll : NULL);
        vx_principal_clear(who);
    }
    return ok;
}

int vx_api_gate_headers(vx_gate *g, const vx_api_request *req, char **seg, size_t n,
                        vx_api_response *res, vx_principal *who)
{
    memset(who, 0, sizeof *who);
    vx_role role;
    const char *coll;
    need_kind k = classify(req->method, seg, n, &role, &coll);
    if (k == NEED_OPEN || k == AUTH_ROUTE) return VX_API_OPEN;
    return admit(g, req, k, role, coll, res, who) ? VX_API_AUTHED : VX_API_REFUSED;
}

bool vx_api_gate(vx_gate *g, const vx_backend *be, const vx_api_request *req, char **seg, size_t n,
                 vx_api_response *res, vx_principal *who)
{
    memset(who, 0, sizeof *who);
    vx_role role;
    const char *coll;
    need_kind k = classify(req->method, seg, n, &role, &coll);
    if (k == NEED_OPEN) return false;
    if (k == AUTH_ROUTE) {
        auth_route(g, be, req, seg, n, res);
        return true;
    }
    if (!admit(g, req, k, role, coll, res, who)) return true;
    if (k == NEED_GLOBAL_ADMIN && n >= 3 && is(seg[0], "v1") && is(seg[1], "admin")) {
        res->route = "admin";
        if (is(seg[2], "users")) admin_users(g, be, req, seg, n, res);
        else if (is(seg[2], "keys")) admin_keys(g, be, req, seg, n, res);
        else vx_api_error(res, 404, "Not found: no such admin route");
        vx_principal_clear(who);
        return true;
    }
    return false;
}
