/*
 * fuzz_command.c - libFuzzer target for the shard command decoder
 * (shard/command.c): the bytes of a Raft entry as every replica decodes them.
 *
 * For any input, vx_cmd_validate must return 0 or a negative VX_E* code
 * without faulting (libFuzzer hands over a buffer of exactly `size` bytes,
 * so ASan sees any over-read).  Then the whole command is walked again with
 * the reader functions, touching every vector, payload, JSON and key byte:
 * the walk must succeed exactly when validate said 0.  A valid command is
 * also re-encoded with the builder from what was decoded, and the bytes must
 * come out identical up to the padding (a command is zero-padded to a
 * multiple of 8 bytes; the decoder takes 0..7 zero bytes after the last
 * element): the encoding is canonical, so a command validated on the leader
 * means the same thing on every replica.
 *
 * Seed corpus: tests/fuzz/corpus/command, written by this file built with
 * VX_GEN_CORPUS (5 small valid commands of each of the 5 types):
 *   gcc -std=gnu11 -DVX_GEN_CORPUS -Isrc tests/fuzz/fuzz_command.c \
 *       src/shard/command.c src/base/pointid.c src/base/err.c -o /tmp/gen_cmd_corpus
 *   /tmp/gen_cmd_corpus tests/fuzz/corpus/command
 * Fuzz build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *   tests/fuzz/fuzz_command.c src/shard/command.c src/base/pointid.c \
 *   src/base/err.c
 * Run it on a copy of the corpus, so new inputs do not land in the repo.
 */
#include "base/err.h"
#include "base/pointid.h"
#include "shard/command.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile uint32_t g_sink; /* keeps the byte reads from being optimized away */

static void touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint32_t s = 0;
    for (size_t i = 0; i < n; i++) s = s * 31u + b[i];
    g_sink += s;
}

/* What may follow the last element: 0..7 zero bytes of padding. */
static int padding_ok(const uint8_t *p, const uint8_t *end)
{
    if (end - p >= 8) return 0;
    for (; p < end; p++)
        if (*p != 0) return 0;
    return 1;
}

/* Walk the command; when `re` is non-NULL also rebuild it there.
 * Returns 0 iff the whole command decoded; *content: where its last
 * element ends (only padding after it). */
static int walk(const uint8_t *data, size_t size, vx_cmd_buf *re, size_t *content)
{
    vx_cmd_reader r;
    int rc = vx_cmd_open(&r, data, size);
    if (rc != 0) return rc;
    if (re) vx_cmd_begin(re, r.type);
    if (r.type == VX_CMD_UPSERT) {
        vx_cmd_point pt;
        float *vec = NULL;
        while ((rc = vx_cmd_next_point(&r, &pt)) == 0) {
            if (pt.dim == 0 || pt.dim > 65536 || pt.id.len < 2 || pt.id.len > VX_ID_MAX_BYTES)
                abort();
            touch(pt.id.b, pt.id.len);
            float *v = realloc(vec, (size_t)pt.dim * sizeof(float));
            if (v == NULL) abort();
            vec = v;
            memcpy(vec, pt.vector, (size_t)pt.dim * sizeof(float)); /* unaligned view */
            touch(vec, (size_t)pt.dim * sizeof(float));
            touch(pt.payload, pt.payload_len);
            if (re) vx_cmd_add_point(re, &pt.id, vec, pt.dim, pt.payload, pt.payload_len);
        }
        free(vec);
        if (rc != VX_ENOTFOUND) return rc;
        if (!padding_ok(r.p, r.end)) abort(); /* next_point said "the end" */
        *content = (size_t)(r.p - data);
        return 0;
    }
    vx_point_id id;
    uint32_t n = 0;
    while ((rc = vx_cmd_next_id(&r, &id)) == 0) {
        touch(id.b, id.len);
        if (re) vx_cmd_add_id(re, &id);
        n++;
    }
    if (rc != VX_ENOTFOUND) return rc;
    if (n != r.count) abort(); /* the end of the list is the count */
    if (r.type == VX_CMD_DELETE_IDS) {
        if (!padding_ok(r.p, r.end)) return VX_EINVAL;
        *content = (size_t)(r.p - data);
        return 0;
    }
    if (r.by_filter) { /* payload command aimed at a filter's matches */
        const char *fj;
        uint32_t fl;
        if ((rc = vx_cmd_target_filter(&r, &fj, &fl)) != 0) return rc;
        touch(fj, fl);
        if (re) vx_cmd_set_target_filter(re, fj, fl);
    }
    if (r.type == VX_CMD_DELETE_PAYLOAD_KEYS) {
        uint32_t nk;
        if ((rc = vx_cmd_keys(&r, &nk)) != 0) return rc;
        const char **keys = NULL;
        uint32_t *lens = NULL;
        if (re && nk) {
            keys = malloc(nk * sizeof(*keys));
            lens = malloc(nk * sizeof(*lens));
            if (keys == NULL || lens == NULL) abort();
        }
        for (uint32_t i = 0; rc == 0 && i < nk; i++) {
            const char *k;
            uint32_t kl;
            rc = vx_cmd_key(&r, &k, &kl);
            if (rc != 0) break;
            touch(k, kl);
            if (keys) {
                keys[i] = k;
                lens[i] = kl;
            }
        }
        if (rc == 0 && !padding_ok(r.p, r.end)) rc = VX_EINVAL;
        if (rc == 0 && re) vx_cmd_set_keys(re, keys, lens, nk);
        *content = (size_t)(r.p - data);
        free(keys);
        free(lens);
        return rc;
    }
    const char *j;
    uint32_t jl;
    rc = vx_cmd_json(&r, &j, &jl);
    if (rc != 0) return rc;
    if (!padding_ok(r.p, r.end)) abort(); /* vx_cmd_json checks the end */
    *content = (size_t)(r.p - data);
    touch(j, jl);
    if (re) vx_cmd_set_json(re, j, jl);
    return 0;
}

#ifndef VX_GEN_CORPUS

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int rc = vx_cmd_validate(data, size);
    if (rc > 0 || rc < -12) abort(); /* 0 or a VX_E* code */
    size_t content = 0;
    if (rc != 0) {
        if (walk(data, size, NULL, &content) == 0) {
            fprintf(stderr, "validate rejects (%d) a command the readers accept\n", rc);
            abort();
        }
        return 0;
    }
    vx_cmd_buf re;
    memset(&re, 0, sizeof re);
    if (walk(data, size, &re, &content) != 0) {
        fprintf(stderr, "validate accepts a command the readers reject\n");
        abort();
    }
    uint8_t *out = NULL;
    size_t len = 0;
    if (vx_cmd_finish(&re, &out, &len) != 0) {
        fprintf(stderr, "a valid command could not be re-encoded\n");
        abort();
    }
    /* the same elements, then zeros up to a multiple of 8 */
    if (len % 8 != 0 || len < content || len - content >= 8 || memcmp(out, data, content) != 0 ||
        !padding_ok(out + content, out + len)) {
        fprintf(stderr, "re-encoding a valid command gives other bytes (%zu vs %zu)\n", len, size);
        abort();
    }
    free(out);
    return 0;
}

#else /* VX_GEN_CORPUS: write the seed corpus */

static void write_file(const char *dir, const char *name, int n, const uint8_t *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s_%d.bin", dir, name, n);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void finish_and_write(vx_cmd_buf *b, const char *dir, const char *name, int n)
{
    uint8_t *data;
    size_t len;
    size_t content;
    if (vx_cmd_finish(b, &data, &len) != 0 || vx_cmd_validate(data, len) != 0 ||
        walk(data, len, NULL, &content) != 0 || len % 8 != 0) {
        fprintf(stderr, "%s_%d: not a valid command\n", name, n);
        exit(1);
    }
    write_file(dir, name, n, data, len);
    free(data);
}

/* Command n's i-th id: kinds rotate with n + i. */
static void make_id(vx_point_id *id, int n, int i)
{
    char text[64];
    switch ((n + i) % 3) {
    case 0:
        vx_id_from_uint(id, (uint64_t)(n * 100 + i));
        break;
    case 1:
        snprintf(text, sizeof text, "%08x-1111-4222-8333-%012x", n, i);
        if (vx_id_from_uuid_text(id, text, strlen(text)) != 0) exit(1);
        break;
    default:
        snprintf(text, sizeof text, i % 2 ? "doc-%d-%d" : "\xc3\xa9-%d-%d", n, i);
        if (vx_id_from_string(id, text, strlen(text)) != 0) exit(1);
        break;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    static const char *const payloads[5] = {"", "{}", "{\"a\":1}", "{\"tag\":\"x\",\"n\":[1,2]}",
                                            "not json"};
    for (int n = 0; n < 5; n++) {
        vx_cmd_buf b;
        vx_point_id id;
        /* UPSERT: n+1 points of dims 1..4 (one dim per command) */
        vx_cmd_begin(&b, VX_CMD_UPSERT);
        uint32_t dim = (uint32_t)(n % 4) + 1;
        for (int i = 0; i <= n; i++) {
            float vec[4];
            for (uint32_t d = 0; d < dim; d++) vec[d] = (float)i - (float)d * 0.5f;
            make_id(&id, n, i);
            const char *pl = payloads[(n + i) % 5];
            vx_cmd_add_point(&b, &id, vec, dim, pl, (uint32_t)strlen(pl));
        }
        finish_and_write(&b, dir, "upsert", n);

        /* DELETE_IDS: n+1 ids */
        vx_cmd_begin(&b, VX_CMD_DELETE_IDS);
        for (int i = 0; i <= n; i++) {
            make_id(&id, n, i);
            vx_cmd_add_id(&b, &id);
        }
        finish_and_write(&b, dir, "delete_ids", n);

        /* SET / OVERWRITE_PAYLOAD: n ids (0 allowed) and a JSON object */
        static const char *const json[5] = {"{}", "{\"a\":2}", "{\"b\":null,\"c\":true}",
                                            "{\"nested\":{\"x\":[1,2,3]}}", "{\"s\":\"\xc3\xa9\"}"};
        const vx_cmd_type jt[2] = {VX_CMD_SET_PAYLOAD, VX_CMD_OVERWRITE_PAYLOAD};
        const char *jname[2] = {"set_payload", "overwrite_payload"};
        for (int t = 0; t < 2; t++) {
            vx_cmd_begin(&b, jt[t]);
            for (int i = 0; i < n; i++) {
                make_id(&id, n + t, i);
                vx_cmd_add_id(&b, &id);
            }
            vx_cmd_set_json(&b, json[(n + t) % 5], (uint32_t)strlen(json[(n + t) % 5]));
            finish_and_write(&b, dir, jname[t], n);
        }

        /* DELETE_PAYLOAD_KEYS: n+1 ids, n keys (one of them empty) */
        static const char *const keys[4] = {"a", "tag", "", "n\xc3\xa9"};
        uint32_t lens[4];
        for (int k = 0; k < 4; k++) lens[k] = (uint32_t)strlen(keys[k]);
        vx_cmd_begin(&b, VX_CMD_DELETE_PAYLOAD_KEYS);
        for (int i = 0; i <= n; i++) {
            make_id(&id, n, i);
            vx_cmd_add_id(&b, &id);
        }
        vx_cmd_set_keys(&b, keys, lens, (uint32_t)(n < 4 ? n : 4));
        finish_and_write(&b, dir, "delete_payload_keys", n);
    }
    return 0;
}

#endif
