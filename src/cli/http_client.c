/*
 * http_client.c - a minimal blocking HTTP/1.1 client (see http_client.h).
 *
 * A request is written with one sendmsg() of two iovecs (head, body), so a
 * 700 KB upsert batch is not copied.  The response is read through a
 * buffered reader (rbuf): lines for the status and the headers, then the
 * body straight into its own buffer, copying from rbuf only what was read
 * ahead.  Body framing, in the order of RFC 9112 §6.3: no body for HEAD,
 * 1xx, 204 and 304; chunked when Transfer-Encoding ends in chunked; else
 * Content-Length; else everything until the server closes.
 *
 * A request that fails leaves the connection closed (vx_httpc_request
 * drops it), so a half-read response can never be mistaken for the next
 * one's.
 */
#define _GNU_SOURCE
#include "cli/http_client.h"

#include "base/err.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#define DEFAULT_PORT "6333"
#define RBUF_INIT 65536
#define MAX_LINE 65536  /* one status or header line */
#define MAX_HEADERS 200 /* header lines in one response */
#define HEAD_MAX 3072   /* request line + headers we write */

/* ---- URLs ------------------------------------------------------------------------------- */

int vx_httpc_url_parse(const char *url, vx_httpc_url *u, char *errbuf)
{
    const size_t en = VX_HTTPC_ERRMSG_LEN;
    const char *p = url, *sep;
    memset(u, 0, sizeof(*u));
    if (url == NULL || *url == '\0') return vx_errf(errbuf, en, VX_EINVAL, "empty URL");
    sep = strstr(url, "://");
    if (sep != NULL) {
        size_t sl = (size_t)(sep - url);
        if (sl == 5 && strncasecmp(url, "https", 5) == 0)
            return vx_errf(errbuf, en, VX_EINVAL,
                           "%s: https is not supported (the CLI speaks plain HTTP: use http://, "
                           "or a local TLS-terminating proxy)",
                           url);
        if (sl != 4 || strncasecmp(url, "http", 4) != 0)
            return vx_errf(errbuf, en, VX_EINVAL, "%s: unsupported scheme (use http://HOST:PORT)",
                           url);
        p = sep + 3;
    }
    size_t alen = strcspn(p, "/?#");
    const char *a = p, *aend = p + alen, *host, *hend, *port = NULL;
    if (alen == 0) return vx_errf(errbuf, en, VX_EINVAL, "%s: no host in the URL", url);
    if (memchr(a, '@', alen) != NULL)
        return vx_errf(errbuf, en, VX_EINVAL,
                       "%s: user:password@ in the URL is not supported (use --api-key)", url);
    if (*a == '[') {
        hend = memchr(a, ']', alen);
        if (hend == NULL)
            return vx_errf(errbuf, en, VX_EINVAL, "%s: unterminated [IPv6 address]", url);
        host = a + 1;
        if (hend + 1 < aend) {
            if (hend[1] != ':')
                return vx_errf(errbuf, en, VX_EINVAL, "%s: junk after ] in the host", url);
            port = hend + 2;
        }
    } else {
        const char *colon = memchr(a, ':', alen);
        if (colon != NULL && memchr(colon + 1, ':', (size_t)(aend - colon - 1)) != NULL)
            return vx_errf(errbuf, en, VX_EINVAL,
                           "%s: write an IPv6 address in brackets: http://[::1]:6333", url);
        host = a;
        hend = colon ? colon : aend;
        if (colon != NULL) port = colon + 1;
    }
    size_t hlen = (size_t)(hend - host);
    if (hlen == 0 || hlen >= sizeof u->host)
        return vx_errf(errbuf, en, VX_EINVAL, "%s: bad host name length", url);
    memcpy(u->host, host, hlen);
    if (port != NULL) {
        size_t plen = (size_t)(aend - port);
        unsigned long v = 0;
        if (plen == 0 || plen > 5) return vx_errf(errbuf, en, VX_EINVAL, "%s: bad port", url);
        for (size_t i = 0; i < plen; i++) {
            if (!isdigit((unsigned char)port[i]))
                return vx_errf(errbuf, en, VX_EINVAL, "%s: bad port", url);
            v = v * 10 + (unsigned long)(port[i] - '0');
        }
        if (v < 1 || v > 65535)
            return vx_errf(errbuf, en, VX_EINVAL, "%s: port %lu is out of range 1..65535", url, v);
        snprintf(u->port, sizeof u->port, "%lu", v);
    } else {
        memcpy(u->port, DEFAULT_PORT, sizeof DEFAULT_PORT);
    }
    if (*aend == '?' || *aend == '#' || strpbrk(aend, "?#") != NULL)
        return vx_errf(errbuf, en, VX_EINVAL,
                       "%s: a query or fragment in the base URL is not "
                       "supported",
                       url);
    size_t plen = strlen(aend);
    while (plen > 0 && aend[plen - 1] == '/')
        plen--;
    if (plen >= sizeof u->prefix)
        return vx_errf(errbuf, en, VX_EINVAL, "%s: path prefix too long", url);
    memcpy(u->prefix, aend, plen);
    if (strchr(u->host, ':') != NULL)
        snprintf(u->authority, sizeof u->authority, "[%s]:%s", u->host, u->port);
    else
        snprintf(u->authority, sizeof u->authority, "%s:%s", u->host, u->port);
    return 0;
}

size_t vx_httpc_escape_segment(const char *seg, char *out, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;
    for (const unsigned char *s = (const unsigned char *)seg; *s; s++) {
        bool plain = isalnum(*s) || *s == '-' || *s == '.' || *s == '_' || *s == '~';
        if (plain) {
            if (k + 1 < n) out[k] = (char)*s;
            k++;
        } else {
            if (k + 3 < n) {
                out[k] = '%';
                out[k + 1] = hex[*s >> 4];
                out[k + 2] = hex[*s & 15];
            }
            k += 3;
        }
    }
    if (n > 0) out[k < n ? k : n - 1] = '\0';
    return k;
}

/* ---- connection ------------------------------------------------------------------------- */

int vx_httpc_init(vx_httpc *c, const char *url, int timeout_s, const char *api_key, char *errbuf)
{
    const size_t en = VX_HTTPC_ERRMSG_LEN;
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    if (timeout_s <= 0) return vx_errf(errbuf, en, VX_EINVAL, "timeout must be positive");
    int rc = vx_httpc_url_parse(url, &c->url, errbuf);
    if (rc != 0) return rc;
    c->timeout_s = timeout_s;
    if (api_key != NULL && *api_key != '\0') {
        if (strpbrk(api_key, "\r\n") != NULL)
            return vx_errf(errbuf, en, VX_EINVAL, "the API key contains a line break");
        int n = snprintf(c->extra_headers, sizeof c->extra_headers, "api-key: %s\r\n", api_key);
        if (n < 0 || (size_t)n >= sizeof c->extra_headers)
            return vx_errf(errbuf, en, VX_EINVAL, "the API key is too long");
    }
    return 0;
}

static void conn_drop(vx_httpc *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->reused = false;
    c->rpos = c->rlen = 0;
}

void vx_httpc_close(vx_httpc *c)
{
    conn_drop(c);
    free(c->rbuf);
    c->rbuf = NULL;
    c->rcap = 0;
}

static int conn_open(vx_httpc *c)
{
    const size_t en = sizeof c->errmsg;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gr = getaddrinfo(c->url.host, c->url.port, &hints, &res);
    if (gr != 0)
        return vx_errf(c->errmsg, en, VX_EIO, "cannot resolve %s: %s", c->url.host,
                       gr == EAI_SYSTEM ? strerror(errno) : gai_strerror(gr));
    if (c->rbuf == NULL) {
        c->rbuf = malloc(RBUF_INIT);
        if (c->rbuf == NULL) {
            freeaddrinfo(res);
            return vx_errf(c->errmsg, en, VX_ENOMEM, "out of memory");
        }
        c->rcap = RBUF_INIT;
    }
    struct timeval tv = {.tv_sec = c->timeout_s, .tv_usec = 0};
    int fd = -1, last = 0;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        /* SO_SNDTIMEO bounds connect() too (Linux socket(7)) */
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        last = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        if (last == EINPROGRESS || last == EAGAIN || last == ETIMEDOUT)
            return vx_errf(c->errmsg, en, VX_EIO, "cannot connect to %s: no answer within %d s",
                           c->url.authority, c->timeout_s);
        return vx_errf(c->errmsg, en, VX_EIO, "cannot connect to %s: %s", c->url.authority,
                       strerror(last));
    }
    /* a request is one sendmsg and we wait for its answer: Nagle only adds delay */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->reused = false;
    c->rpos = c->rlen = 0;
    return 0;
}

/* ---- sending ---------------------------------------------------------------------------- */

/* 0, or the errno of the failure */
static int send_all(int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = (size_t)cnt;
        ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        size_t left = (size_t)n;
        while (cnt > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

/* ---- receiving -------------------------------------------------------------------------- */

typedef struct rstate {
    size_t got;     /* response bytes received: 0 means the server said nothing */
    bool timed_out; /* a receive timed out (the request may still be running) */
} rstate;

/* Read more into rbuf: 1 when bytes arrived, 0 at EOF, -errno on error. */
static int fill(vx_httpc *c, rstate *rs)
{
    if (c->rpos == c->rlen) c->rpos = c->rlen = 0;
    if (c->rlen == c->rcap) {
        if (c->rpos > 0) {
            memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
            c->rlen -= c->rpos;
            c->rpos = 0;
        } else {
            char *nb = realloc(c->rbuf, c->rcap * 2);
            if (nb == NULL) return -ENOMEM;
            c->rbuf = nb;
            c->rcap *= 2;
        }
    }
    ssize_t n;
    do
        n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    if (n == 0) return 0;
    c->rlen += (size_t)n;
    rs->got += (size_t)n;
    return 1;
}

static int recv_fail(vx_httpc *c, rstate *rs, int r)
{
    const size_t en = sizeof c->errmsg;
    if (r == 0)
        return vx_errf(c->errmsg, en, VX_EIO, "%s closed the connection %s", c->url.authority,
                       rs->got ? "in the middle of the response" : "without a response");
    if (r == -ENOMEM) return vx_errf(c->errmsg, en, VX_ENOMEM, "out of memory reading a response");
    if (r == -EAGAIN || r == -EWOULDBLOCK) {
        rs->timed_out = true;
        return vx_errf(c->errmsg, en, VX_EIO, "no response from %s within %d s", c->url.authority,
                       c->timeout_s);
    }
    return vx_errf(c->errmsg, en, VX_EIO, "receiving from %s: %s", c->url.authority, strerror(-r));
}

/* The next line (CR LF or LF stripped), pointing into rbuf: valid until the
 * next read.  0, or an error code. */
static int read_line(vx_httpc *c, rstate *rs, char **line, size_t *len)
{
    for (;;) {
        char *s = c->rbuf + c->rpos;
        char *nl = memchr(s, '\n', c->rlen - c->rpos);
        if (nl != NULL) {
            size_t n = (size_t)(nl - s);
            c->rpos += n + 1;
            if (n > 0 && s[n - 1] == '\r') n--;
            s[n] = '\0';
            *line = s;
            *len = n;
            return 0;
        }
        if (c->rlen - c->rpos >= MAX_LINE)
            return vx_errf(c->errmsg, sizeof c->errmsg, VX_EFORMAT,
                           "malformed response from %s: a header line over %d bytes",
                           c->url.authority, MAX_LINE);
        int r = fill(c, rs);
        if (r <= 0) return recv_fail(c, rs, r);
    }
}

typedef struct body {
    char *p;
    size_t len, cap;
} body;

static int too_big(vx_httpc *c)
{
    return vx_errf(c->errmsg, sizeof c->errmsg, VX_ENOMEM,
                   "response from %s is larger than %zu bytes", c->url.authority,
                   VX_HTTPC_MAX_BODY);
}

static int body_reserve(vx_httpc *c, body *b, size_t more)
{
    if (more > VX_HTTPC_MAX_BODY || b->len > VX_HTTPC_MAX_BODY - more) return too_big(c);
    size_t need = b->len + more + 1;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need)
        cap *= 2;
    char *np = realloc(b->p, cap);
    if (np == NULL)
        return vx_errf(c->errmsg, sizeof c->errmsg, VX_ENOMEM, "out of memory (%zu bytes)", cap);
    b->p = np;
    b->cap = cap;
    return 0;
}

/* Append exactly n body bytes: what was read ahead into rbuf, then straight
 * from the socket. */
static int read_exact(vx_httpc *c, rstate *rs, body *b, size_t n)
{
    int rc = body_reserve(c, b, n);
    if (rc != 0) return rc;
    size_t ahead = c->rlen - c->rpos;
    size_t k = ahead < n ? ahead : n;
    memcpy(b->p + b->len, c->rbuf + c->rpos, k);
    c->rpos += k;
    b->len += k;
    n -= k;
    while (n > 0) {
        ssize_t r;
        do
            r = recv(c->fd, b->p + b->len, n, 0);
        while (r < 0 && errno == EINTR);
        if (r <= 0) return recv_fail(c, rs, r < 0 ? -errno : 0);
        rs->got += (size_t)r;
        b->len += (size_t)r;
        n -= (size_t)r;
    }
    return 0;
}

static int read_chunked(vx_httpc *c, rstate *rs, body *b)
{
    char *line;
    size_t len;
    int rc;
    for (;;) {
        if ((rc = read_line(c, rs, &line, &len)) != 0) return rc;
        char *end;
        errno = 0;
        unsigned long long sz = strtoull(line, &end, 16);
        if (end == line || errno != 0 ||
            (*end != '\0' && *end != ';' && *end != ' ' && *end != '\t'))
            return vx_errf(c->errmsg, sizeof c->errmsg, VX_EFORMAT,
                           "malformed response from %s: bad chunk size line", c->url.authority);
        if (sz == 0) break;
        if (sz > VX_HTTPC_MAX_BODY) return too_big(c);
        if ((rc = read_exact(c, rs, b, (size_t)sz)) != 0) return rc;
        if ((rc = read_line(c, rs, &line, &len)) != 0) return rc;
        if (len != 0)
            return vx_errf(c->errmsg, sizeof c->errmsg, VX_EFORMAT,
                           "malformed response from %s: no CRLF after a chunk", c->url.authority);
    }
    /* trailer fields, up to the empty line */
    for (int i = 0;; i++) {
        if ((rc = read_line(c, rs, &line, &len)) != 0) return rc;
        if (len == 0) return 0;
        if (i > MAX_HEADERS)
            return vx_errf(c->errmsg, sizeof c->errmsg, VX_EFORMAT,
                           "malformed response from %s: too many trailer lines", c->url.authority);
    }
}

static int read_to_close(vx_httpc *c, rstate *rs, body *b)
{
    for (;;) {
        size_t ahead = c->rlen - c->rpos;
        int rc = body_reserve(c, b, ahead);
        if (rc != 0) return rc;
        memcpy(b->p + b->len, c->rbuf + c->rpos, ahead);
        b->len += ahead;
        c->rpos = c->rlen = 0;
        int r = fill(c, rs);
        if (r == 0) return 0;
        if (r < 0) return recv_fail(c, rs, r);
    }
}

/* Does the comma-separated header value list contain token (any case)? */
static bool has_token(const char *v, const char *token)
{
    size_t tl = strlen(token);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        size_t n = strcspn(v, ",");
        size_t m = n;
        while (m > 0 && (v[m - 1] == ' ' || v[m - 1] == '\t'))
            m--;
        if (m == tl && strncasecmp(v, token, tl) == 0) return true;
        v += n;
    }
    return false;
}

/* Is token the last of the list? (Transfer-Encoding: chunked must be last.) */
static bool last_token_is(const char *v, const char *token)
{
    const char *comma = strrchr(v, ',');
    const char *s = comma ? comma + 1 : v;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t tl = strlen(token), n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return n == tl && strncasecmp(s, token, tl) == 0;
}

static int read_response(vx_httpc *c, rstate *rs, bool head_request, vx_httpc_response *res,
                         bool *keep)
{
    const size_t en = sizeof c->errmsg;
    char *line;
    size_t len;
    int rc, status, minor;
    for (;;) { /* skip interim 1xx responses (RFC 9110 §15.2) */
        if ((rc = read_line(c, rs, &line, &len)) != 0) return rc;
        if (len < 12 || strncmp(line, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)line[7]) ||
            line[8] != ' ' || !isdigit((unsigned char)line[9]) ||
            !isdigit((unsigned char)line[10]) || !isdigit((unsigned char)line[11]))
            return vx_errf(c->errmsg, en, VX_EFORMAT,
                           "malformed response from %s: status line \"%.60s\" (is it an HTTP/1.1 "
                           "server?)",
                           c->url.authority, line);
        minor = line[7] - '0';
        status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
        if (status >= 200 || status == 101) break;
        do /* the interim response's header fields */
            if ((rc = read_line(c, rs, &line, &len)) != 0) return rc;
        while (len != 0);
    }
    if (status == 101)
        return vx_errf(c->errmsg, en, VX_EFORMAT, "%s switched protocols (101): not supported",
                       c->url.authority);
    bool chunked = false, have_len = false, other_te = false, close_conn = minor == 0,
         keepalive10 = false;
    unsigned long long clen = 0;
    res->status = status;
    for (int i = 0;; i++) {
        if ((rc = read_line(c, rs, &line, &len)) != 0) return rc;
        if (len == 0) break;
        if (i >= MAX_HEADERS)
            return vx_errf(c->errmsg, en, VX_EFORMAT,
                           "malformed response from %s: over %d header "
                           "lines",
                           c->url.authority, MAX_HEADERS);
        char *colon = strchr(line, ':');
        if (colon == NULL) continue; /* obs-fold and junk: ignore */
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (strcasecmp(line, "content-length") == 0) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(v, &end, 10);
            while (*end == ' ' || *end == '\t')
                end++;
            if (!isdigit((unsigned char)*v) || errno != 0 || *end != '\0' ||
                (have_len && n != clen))
                return vx_errf(c->errmsg, en, VX_EFORMAT,
                               "malformed response from %s: bad Content-Length", c->url.authority);
            clen = n;
            have_len = true;
        } else if (strcasecmp(line, "transfer-encoding") == 0) {
            if (last_token_is(v, "chunked"))
                chunked = true;
            else
                other_te = true;
        } else if (strcasecmp(line, "connection") == 0) {
            if (has_token(v, "close")) close_conn = true;
            if (has_token(v, "keep-alive")) keepalive10 = true;
        } else if (strcasecmp(line, "content-type") == 0) {
            snprintf(res->content_type, sizeof res->content_type, "%s", v);
        }
    }
    if (minor == 0 && keepalive10) close_conn = false;
    body b = {0};
    if (head_request || status == 204 || status == 304) {
        rc = 0;
    } else if (chunked) {
        rc = read_chunked(c, rs, &b);
    } else if (other_te || !have_len) {
        close_conn = true;
        rc = read_to_close(c, rs, &b);
    } else if (clen > VX_HTTPC_MAX_BODY) {
        rc = too_big(c);
    } else {
        rc = read_exact(c, rs, &b, (size_t)clen);
    }
    if (rc == 0) rc = body_reserve(c, &b, 0);
    if (rc != 0) {
        free(b.p);
        return rc;
    }
    b.p[b.len] = '\0';
    res->body = b.p;
    res->len = b.len;
    *keep = !close_conn;
    return 0;
}

/* ---- requests --------------------------------------------------------------------------- */

static bool idempotent(const char *m)
{
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "PUT") == 0 ||
           strcmp(m, "DELETE") == 0 || strcmp(m, "OPTIONS") == 0;
}

/* One try on the current connection.  *silent: it failed before the server
 * sent a byte, which on a reused connection means it had closed it. */
static int exchange(vx_httpc *c, const char *method, const char *path, const char *bodyp,
                    size_t len, vx_httpc_response *res, bool *silent)
{
    const size_t en = sizeof c->errmsg;
    char head[HEAD_MAX];
    int n;
    if (bodyp != NULL)
        n = snprintf(head, sizeof head,
                     "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: vectron-cli\r\n"
                     "Accept: application/json\r\n%sContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     method, c->url.prefix, path, c->url.authority, c->extra_headers, len);
    else
        n = snprintf(head, sizeof head,
                     "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: vectron-cli\r\n"
                     "Accept: application/json\r\n%s\r\n",
                     method, c->url.prefix, path, c->url.authority, c->extra_headers);
    *silent = false;
    if (n < 0 || (size_t)n >= sizeof head)
        return vx_errf(c->errmsg, en, VX_EINVAL, "request path too long: %.80s...", path);
    struct iovec iov[2] = {{head, (size_t)n}, {(void *)bodyp, bodyp ? len : 0}};
    c->rpos = c->rlen = 0; /* we do not pipeline: nothing read ahead is ours */
    rstate rs = {0};
    bool keep = false;
    int se = send_all(c->fd, iov, bodyp && len ? 2 : 1);
    if (se != 0) {
        /* The server may have answered early (413) and stopped reading: try
         * to read that answer before reporting the send failure. */
        if (se == EPIPE && read_response(c, &rs, false, res, &keep) == 0) {
            conn_drop(c);
            return 0;
        }
        *silent = rs.got == 0 && se != EAGAIN && se != EWOULDBLOCK;
        if (se == EAGAIN || se == EWOULDBLOCK)
            return vx_errf(c->errmsg, en, VX_EIO, "sending to %s: timed out after %d s",
                           c->url.authority, c->timeout_s);
        return vx_errf(c->errmsg, en, VX_EIO, "sending to %s: %s", c->url.authority, strerror(se));
    }
    int rc = read_response(c, &rs, strcmp(method, "HEAD") == 0, res, &keep);
    if (rc != 0) {
        *silent = rs.got == 0 && !rs.timed_out;
        return rc;
    }
    if (keep)
        c->reused = true;
    else
        conn_drop(c);
    return 0;
}

int vx_httpc_request(vx_httpc *c, const char *method, const char *path, const char *bodyp,
                     size_t len, vx_httpc_response *res)
{
    memset(res, 0, sizeof(*res));
    if (path == NULL || path[0] != '/')
        return vx_errf(c->errmsg, sizeof c->errmsg, VX_EINVAL, "request path must start with /");
    for (int attempt = 0;; attempt++) {
        if (c->fd < 0) {
            int rc = conn_open(c);
            if (rc != 0) return rc;
        }
        bool reused = c->reused, silent;
        int rc = exchange(c, method, path, bodyp, len, res, &silent);
        if (rc == 0) return 0;
        conn_drop(c);
        memset(res, 0, sizeof(*res));
        /* RFC 9112 §9.3.1: a stale keep-alive connection; retry once */
        if (!(reused && silent && attempt == 0 && idempotent(method))) return rc;
    }
}

void vx_httpc_response_free(vx_httpc_response *res)
{
    free(res->body);
    memset(res, 0, sizeof(*res));
}
