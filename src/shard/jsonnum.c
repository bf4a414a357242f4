/*
 * jsonnum.c - see jsonnum.h.
 */
#define _GNU_SOURCE
#include "shard/jsonnum.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The next number literal in [p, end), skipping strings. */
static const char *next_number(const char *p, const char *end, const char **lit_end)
{
    bool in_str = false;
    for (; p < end; p++) {
        char ch = *p;
        if (in_str) {
            if (ch == '\\') p++;
            else if (ch == '"') in_str = false;
            continue;
        }
        if (ch == '"') {
            in_str = true;
            continue;
        }
        if (ch == '-' || (ch >= '0' && ch <= '9')) {
            const char *q = p + 1;
            while (q < end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' ||
                               *q == '+' || *q == '-'))
                q++;
            *lit_end = q;
            return p;
        }
    }
    return NULL;
}

static bool attach(cJSON *j, const char **p, const char *end)
{
    for (; j != NULL; j = j->next) {
        if (cJSON_IsNumber(j)) {
            const char *le, *lit = next_number(*p, end, &le);
            if (lit == NULL) return false;
            *p = le;
            size_t n = (size_t)(le - lit);
            bool digits = n >= 16;
            for (size_t i = 0; digits && i < n; i++) digits = lit[i] >= '0' && lit[i] <= '9';
            if (digits && j->valuestring == NULL) j->valuestring = strndup(lit, n);
        }
        if (j->child && !attach(j->child, p, end)) return false;
    }
    return true;
}

/* Whether j (or a sibling or a node below) is a number of 10^15 or more:
 * the only kind a literal of 16 or more plain digits (no leading zeros in
 * JSON) can have parsed to. */
static bool has_big(const cJSON *j)
{
    for (; j != NULL; j = j->next) {
        if (cJSON_IsNumber(j) && fabs(j->valuedouble) >= 1e15) return true;
        if (j->child && has_big(j->child)) return true;
    }
    return false;
}

void vx_json_attach_literals(cJSON *j, const char *text, size_t len)
{
    if (!has_big(j)) return; /* no literal to attach: skip the scan of the text */
    const char *p = text;
    attach(j, &p, text + len);
}

bool vx_json_u64(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return false;
    if (j->valuestring != NULL) {
        errno = 0;
        char *end;
        unsigned long long v = strtoull(j->valuestring, &end, 10);
        if (errno != 0 || *end != '\0') return false;
        *out = v;
        return true;
    }
    double d = j->valuedouble;
    if (d < 0 || d != floor(d) || d >= 18446744073709551616.0) return false;
    *out = (uint64_t)d;
    return true;
}

void vx_json_exact_raw(cJSON *j)
{
    if (j == NULL) return;
    if (cJSON_IsNumber(j) && j->valuestring != NULL) {
        j->type = cJSON_Raw; /* printed as valuestring, freed with it */
        return;
    }
    for (cJSON *c = j->child; c != NULL; c = c->next) vx_json_exact_raw(c);
}
