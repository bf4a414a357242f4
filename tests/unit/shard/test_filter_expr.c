/*
 * test_filter_expr.c - the payload filter language (shard/filter.h):
 * a table of {filter, payload, id, expected} evaluated both from parsed
 * JSON and from text, covering match value/any/except on top-level,
 * nested and array keys, range, is_empty, is_null, has_id (integer and
 * UUID ids), must/should/must_not/min_should and nesting; a table of
 * invalid filters, each rejected with VX_EINVAL and a message naming the
 * problem; the depth, condition and value-count limits at and just past
 * the bound (built programmatically); and invalid payload text, which
 * evaluates as an empty payload.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "base/pointid.h"
#include "shard/filter.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers --------------------------------------------------------------------------------- */

#define UUID_A "550e8400-e29b-41d4-a716-446655440000"
#define UUID_A_UPPER "550E8400-E29B-41D4-A716-446655440000"
#define UUID_B "6ba7b810-9dad-11d1-80b4-00c04fd430c8"

/* An id from its text: a UUID when it contains '-' or is 32 characters, else a uint. */
static void id_from_text(vx_point_id *id, const char *text)
{
    if (text == NULL) text = "1";
    if (strchr(text, '-') != NULL || strlen(text) == 32) {
        assert_int_equal(vx_id_from_uuid_text(id, text, strlen(text)), 0);
    } else {
        vx_id_from_uint(id, strtoull(text, NULL, 10));
    }
}

static vx_filter_expr *compile_ok(const char *text)
{
    char err[VX_FILTER_ERRMSG_LEN] = "";
    vx_filter_expr *f = NULL;
    int rc = vx_filter_compile_text(text, strlen(text), &f, err);
    if (rc != 0) fprintf(stderr, "compile failed (%d: %s): %.200s\n", rc, err, text);
    assert_int_equal(rc, 0);
    assert_non_null(f);
    return f;
}

/* ---- evaluation table ------------------------------------------------------------------------ */

typedef struct eval_case {
    const char *filter;
    const char *payload; /* NULL: no payload */
    const char *id;      /* NULL: uint 1 */
    bool expect;
} eval_case;

static const eval_case eval_cases[] = {
    /* empty filter */
    {"{}", NULL, NULL, true},
    {"{}", "{\"a\":1}", NULL, true},
    {"{\"must\":[]}", "{}", NULL, true},
    {"{\"should\":[]}", "{}", NULL, true},

    /* match value: string, int, bool, top level */
    {"{\"must\":[{\"key\":\"city\",\"match\":{\"value\":\"Paris\"}}]}", "{\"city\":\"Paris\"}", NULL, true},
    {"{\"must\":[{\"key\":\"city\",\"match\":{\"value\":\"Paris\"}}]}", "{\"city\":\"paris\"}", NULL, false},
    {"{\"must\":[{\"key\":\"city\",\"match\":{\"value\":\"Paris\"}}]}", "{\"town\":\"Paris\"}", NULL, false},
    {"{\"must\":[{\"key\":\"city\",\"match\":{\"value\":\"Paris\"}}]}", NULL, NULL, false},
    {"{\"must\":[{\"key\":\"n\",\"match\":{\"value\":3}}]}", "{\"n\":3}", NULL, true},
    {"{\"must\":[{\"key\":\"n\",\"match\":{\"value\":3}}]}", "{\"n\":3.0}", NULL, true},
    {"{\"must\":[{\"key\":\"n\",\"match\":{\"value\":3}}]}", "{\"n\":3.5}", NULL, false},
    {"{\"must\":[{\"key\":\"n\",\"match\":{\"value\":3}}]}", "{\"n\":\"3\"}", NULL, false},
    {"{\"must\":[{\"key\":\"n\",\"match\":{\"value\":-7}}]}", "{\"n\":-7}", NULL, true},
    {"{\"must\":[{\"key\":\"b\",\"match\":{\"value\":true}}]}", "{\"b\":true}", NULL, true},
    {"{\"must\":[{\"key\":\"b\",\"match\":{\"value\":true}}]}", "{\"b\":false}", NULL, false},
    {"{\"must\":[{\"key\":\"b\",\"match\":{\"value\":false}}]}", "{\"b\":false}", NULL, true},
    {"{\"must\":[{\"key\":\"b\",\"match\":{\"value\":true}}]}", "{\"b\":1}", NULL, false},
    {"{\"must\":[{\"key\":\"b\",\"match\":{\"value\":1}}]}", "{\"b\":true}", NULL, false},
    {"{\"must\":[{\"key\":\"s\",\"match\":{\"value\":\"\"}}]}", "{\"s\":\"\"}", NULL, true},

    /* nested keys */
    {"{\"must\":[{\"key\":\"meta.city\",\"match\":{\"value\":\"Oslo\"}}]}", "{\"meta\":{\"city\":\"Oslo\"}}", NULL, true},
    {"{\"must\":[{\"key\":\"meta.city\",\"match\":{\"value\":\"Oslo\"}}]}", "{\"meta\":{\"city\":\"Rome\"}}", NULL, false},
    {"{\"must\":[{\"key\":\"meta.city\",\"match\":{\"value\":\"Oslo\"}}]}", "{\"city\":\"Oslo\"}", NULL, false},
    {"{\"must\":[{\"key\":\"meta.city\",\"match\":{\"value\":\"Oslo\"}}]}", "{\"meta\":\"Oslo\"}", NULL, false},
    {"{\"must\":[{\"key\":\"meta.city\",\"match\":{\"value\":\"Oslo\"}}]}", "{\"meta.city\":\"Oslo\"}", NULL, false},
    {"{\"must\":[{\"key\":\"a.b.c\",\"match\":{\"value\":5}}]}", "{\"a\":{\"b\":{\"c\":5}}}", NULL, true},

    /* arrays in the payload */
    {"{\"must\":[{\"key\":\"tags\",\"match\":{\"value\":\"b\"}}]}", "{\"tags\":[\"a\",\"b\"]}", NULL, true},
    {"{\"must\":[{\"key\":\"tags\",\"match\":{\"value\":\"c\"}}]}", "{\"tags\":[\"a\",\"b\"]}", NULL, false},
    {"{\"must\":[{\"key\":\"tags\",\"match\":{\"value\":2}}]}", "{\"tags\":[1,2,3]}", NULL, true},
    {"{\"must\":[{\"key\":\"items[].x\",\"match\":{\"value\":2}}]}", "{\"items\":[{\"x\":1},{\"x\":2}]}", NULL, true},
    {"{\"must\":[{\"key\":\"items[].x\",\"match\":{\"value\":3}}]}", "{\"items\":[{\"x\":1},{\"x\":2}]}", NULL, false},
    {"{\"must\":[{\"key\":\"items.x\",\"match\":{\"value\":2}}]}", "{\"items\":[{\"x\":1},{\"x\":2}]}", NULL, true},
    {"{\"must\":[{\"key\":\"items.x\",\"match\":{\"value\":\"q\"}}]}", "{\"items\":[{\"y\":\"q\"},{\"x\":[\"p\",\"q\"]}]}", NULL, true},
    {"{\"must\":[{\"key\":\"meta.city\",\"match\":{\"value\":\"Oslo\"}}]}", "{\"meta\":[{\"city\":\"Rome\"},{\"city\":\"Oslo\"}]}", NULL, true},

    /* match any */
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"any\":[\"x\",\"y\"]}}]}", "{\"c\":\"y\"}", NULL, true},
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"any\":[\"x\",\"y\"]}}]}", "{\"c\":\"z\"}", NULL, false},
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"any\":[\"x\",\"y\"]}}]}", "{\"c\":[\"z\",\"x\"]}", NULL, true},
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"any\":[1,2]}}]}", "{\"c\":2}", NULL, true},
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"any\":[1,2]}}]}", "{}", NULL, false},
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"any\":[]}}]}", "{\"c\":1}", NULL, false},

    /* match except */
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[\"x\",\"y\"]}}]}", "{}", NULL, false},
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[\"x\",\"y\"]}}]}", NULL, NULL, false},
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[\"x\",\"y\"]}}]}", "{\"c\":\"z\"}", NULL, true},
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[\"x\",\"y\"]}}]}", "{\"c\":[\"z\",\"w\"]}", NULL, true},
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[\"x\",\"y\"]}}]}", "{\"c\":\"x\"}", NULL, false},
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[\"x\",\"y\"]}}]}", "{\"c\":[\"z\",\"y\"]}", NULL, false},
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[1]}}]}", "{\"c\":2}", NULL, true},
    {"{\"must\":[{\"key\":\"c\",\"match\":{\"except\":[1]}}]}", "{\"c\":1}", NULL, false},

    /* range */
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":10}}]}", "{\"p\":11}", NULL, true},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":10}}]}", "{\"p\":10}", NULL, false},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gte\":10}}]}", "{\"p\":10}", NULL, true},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gte\":10}}]}", "{\"p\":9}", NULL, false},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"lt\":10}}]}", "{\"p\":9}", NULL, true},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"lt\":10}}]}", "{\"p\":10}", NULL, false},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"lte\":10}}]}", "{\"p\":10}", NULL, true},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"lte\":10}}]}", "{\"p\":11}", NULL, false},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gte\":1.5,\"lt\":2.5}}]}", "{\"p\":2.25}", NULL, true},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gte\":1.5,\"lt\":2.5}}]}", "{\"p\":2.5}", NULL, false},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gte\":1.5,\"lt\":2.5}}]}", "{\"p\":1.49}", NULL, false},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":-0.5,\"lte\":0}}]}", "{\"p\":-0.25}", NULL, true},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":1}}]}", "{\"p\":\"5\"}", NULL, false},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":0}}]}", "{\"p\":true}", NULL, false},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":0}}]}", "{\"p\":null}", NULL, false},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":0}}]}", "{\"p\":{\"q\":1}}", NULL, false},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":0}}]}", "{}", NULL, false},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":5}}]}", "{\"p\":[1,7]}", NULL, true},
    {"{\"must\":[{\"key\":\"p\",\"range\":{}}]}", "{\"p\":1}", NULL, true},
    {"{\"must\":[{\"key\":\"p\",\"range\":{\"gt\":null,\"lt\":3}}]}", "{\"p\":1}", NULL, true},

    /* is_empty */
    {"{\"must\":[{\"is_empty\":{\"key\":\"e\"}}]}", "{}", NULL, true},
    {"{\"must\":[{\"is_empty\":{\"key\":\"e\"}}]}", NULL, NULL, true},
    {"{\"must\":[{\"is_empty\":{\"key\":\"e\"}}]}", "{\"e\":null}", NULL, true},
    {"{\"must\":[{\"is_empty\":{\"key\":\"e\"}}]}", "{\"e\":[]}", NULL, true},
    {"{\"must\":[{\"is_empty\":{\"key\":\"e\"}}]}", "{\"e\":\"x\"}", NULL, false},
    {"{\"must\":[{\"is_empty\":{\"key\":\"e\"}}]}", "{\"e\":[1]}", NULL, false},
    {"{\"must\":[{\"is_empty\":{\"key\":\"e\"}}]}", "{\"e\":0}", NULL, false},
    {"{\"must\":[{\"is_empty\":{\"key\":\"e\"}}]}", "{\"e\":\"\"}", NULL, false},
    {"{\"must\":[{\"is_empty\":{\"key\":\"m.e\"}}]}", "{\"m\":{\"e\":[]}}", NULL, true},
    {"{\"must\":[{\"is_empty\":{\"key\":\"m.e\"}}]}", "{\"m\":{\"e\":5}}", NULL, false},

    /* is_null */
    {"{\"must\":[{\"is_null\":{\"key\":\"z\"}}]}", "{\"z\":null}", NULL, true},
    {"{\"must\":[{\"is_null\":{\"key\":\"z\"}}]}", "{}", NULL, false},
    {"{\"must\":[{\"is_null\":{\"key\":\"z\"}}]}", NULL, NULL, false},
    {"{\"must\":[{\"is_null\":{\"key\":\"z\"}}]}", "{\"z\":0}", NULL, false},
    {"{\"must\":[{\"is_null\":{\"key\":\"z\"}}]}", "{\"z\":[]}", NULL, false},
    {"{\"must\":[{\"is_null\":{\"key\":\"m.z\"}}]}", "{\"m\":{\"z\":null}}", NULL, true},

    /* has_id */
    {"{\"must\":[{\"has_id\":[1,2,3]}]}", NULL, "2", true},
    {"{\"must\":[{\"has_id\":[1,2,3]}]}", NULL, "4", false},
    {"{\"must\":[{\"has_id\":[0]}]}", NULL, "0", true},
    {"{\"must\":[{\"has_id\":[18446744073709549568]}]}", NULL, "18446744073709549568", true},
    {"{\"must\":[{\"has_id\":[\"" UUID_A "\"]}]}", NULL, UUID_A, true},
    {"{\"must\":[{\"has_id\":[\"" UUID_A_UPPER "\"]}]}", NULL, UUID_A, true},
    {"{\"must\":[{\"has_id\":[\"" UUID_A "\"]}]}", NULL, UUID_A_UPPER, true},
    {"{\"must\":[{\"has_id\":[\"550e8400e29b41d4a716446655440000\"]}]}", NULL, UUID_A, true},
    {"{\"must\":[{\"has_id\":[\"" UUID_A "\"]}]}", NULL, UUID_B, false},
    {"{\"must\":[{\"has_id\":[\"" UUID_A "\"]}]}", NULL, "1", false},
    {"{\"must\":[{\"has_id\":[1,\"" UUID_B "\"]}]}", NULL, UUID_B, true},
    {"{\"must\":[{\"has_id\":[]}]}", NULL, "1", false},
    {"{\"must_not\":[{\"has_id\":[5]}]}", NULL, "5", false},
    {"{\"must_not\":[{\"has_id\":[5]}]}", NULL, "6", true},

    /* must / should / must_not */
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1}},{\"key\":\"b\",\"match\":{\"value\":2}}]}", "{\"a\":1,\"b\":2}", NULL, true},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1}},{\"key\":\"b\",\"match\":{\"value\":2}}]}", "{\"a\":1,\"b\":3}", NULL, false},
    {"{\"should\":[{\"key\":\"a\",\"match\":{\"value\":1}},{\"key\":\"b\",\"match\":{\"value\":2}}]}", "{\"a\":0,\"b\":2}", NULL, true},
    {"{\"should\":[{\"key\":\"a\",\"match\":{\"value\":1}},{\"key\":\"b\",\"match\":{\"value\":2}}]}", "{\"a\":0,\"b\":0}", NULL, false},
    {"{\"must_not\":[{\"key\":\"a\",\"match\":{\"value\":1}}]}", "{\"a\":1}", NULL, false},
    {"{\"must_not\":[{\"key\":\"a\",\"match\":{\"value\":1}}]}", "{\"a\":2}", NULL, true},
    {"{\"must_not\":[{\"key\":\"a\",\"match\":{\"value\":1}}]}", "{}", NULL, true},
    {"{\"must_not\":[{\"key\":\"a\",\"match\":{\"value\":1}},{\"key\":\"b\",\"match\":{\"value\":1}}]}", "{\"a\":0,\"b\":1}", NULL, false},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1}}],\"should\":[{\"key\":\"b\",\"match\":{\"value\":1}},{\"key\":\"c\",\"match\":{\"value\":1}}],\"must_not\":[{\"key\":\"d\",\"match\":{\"value\":1}}]}",
     "{\"a\":1,\"c\":1,\"d\":0}", NULL, true},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1}}],\"should\":[{\"key\":\"b\",\"match\":{\"value\":1}},{\"key\":\"c\",\"match\":{\"value\":1}}],\"must_not\":[{\"key\":\"d\",\"match\":{\"value\":1}}]}",
     "{\"a\":1,\"c\":1,\"d\":1}", NULL, false},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1}}],\"should\":[{\"key\":\"b\",\"match\":{\"value\":1}},{\"key\":\"c\",\"match\":{\"value\":1}}],\"must_not\":[{\"key\":\"d\",\"match\":{\"value\":1}}]}",
     "{\"a\":1,\"b\":0,\"c\":0}", NULL, false},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1}}],\"should\":[{\"key\":\"b\",\"match\":{\"value\":1}},{\"key\":\"c\",\"match\":{\"value\":1}}],\"must_not\":[{\"key\":\"d\",\"match\":{\"value\":1}}]}",
     "{\"a\":0,\"b\":1}", NULL, false},
    {"{\"must\":[{\"has_id\":[7]}],\"must_not\":[{\"key\":\"x\",\"match\":{\"value\":\"no\"}}]}", "{\"x\":\"yes\"}", "7", true},
    {"{\"must\":[{\"has_id\":[7]}],\"must_not\":[{\"key\":\"x\",\"match\":{\"value\":\"no\"}}]}", "{\"x\":\"no\"}", "7", false},

    /* single object instead of an array */
    {"{\"must\":{\"key\":\"a\",\"match\":{\"value\":1}}}", "{\"a\":1}", NULL, true},
    {"{\"must\":{\"key\":\"a\",\"match\":{\"value\":1}}}", "{\"a\":2}", NULL, false},
    {"{\"should\":{\"key\":\"a\",\"match\":{\"value\":1}}}", "{\"a\":2}", NULL, false},
    {"{\"must_not\":{\"key\":\"a\",\"match\":{\"value\":1}}}", "{\"a\":1}", NULL, false},

    /* min_should */
#define MS3 "[{\"key\":\"a\",\"match\":{\"value\":1}},{\"key\":\"b\",\"match\":{\"value\":1}},{\"key\":\"c\",\"match\":{\"value\":1}}]"
    {"{\"min_should\":{\"conditions\":" MS3 ",\"min_count\":0}}", "{}", NULL, true},
    {"{\"min_should\":{\"conditions\":" MS3 ",\"min_count\":1}}", "{}", NULL, false},
    {"{\"min_should\":{\"conditions\":" MS3 ",\"min_count\":1}}", "{\"b\":1}", NULL, true},
    {"{\"min_should\":{\"conditions\":" MS3 ",\"min_count\":2}}", "{\"b\":1}", NULL, false},
    {"{\"min_should\":{\"conditions\":" MS3 ",\"min_count\":2}}", "{\"a\":1,\"c\":1}", NULL, true},
    {"{\"min_should\":{\"conditions\":" MS3 ",\"min_count\":2}}", "{\"a\":1,\"b\":1,\"c\":1}", NULL, true},
    {"{\"min_should\":{\"conditions\":[],\"min_count\":0}}", "{}", NULL, true},
    {"{\"min_should\":{\"conditions\":[],\"min_count\":1}}", "{}", NULL, false},
    {"{\"min_should\":{\"conditions\":" MS3 ",\"min_count\":4}}", "{\"a\":1,\"b\":1,\"c\":1}", NULL, false},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1}}],\"min_should\":{\"conditions\":" MS3 ",\"min_count\":2}}",
     "{\"a\":1,\"b\":1}", NULL, true},
    {"{\"min_should\":null}", "{}", NULL, true},

    /* nested filters */
    {"{\"must\":[{\"should\":[{\"key\":\"a\",\"match\":{\"value\":1}},{\"key\":\"b\",\"match\":{\"value\":1}}]},{\"key\":\"c\",\"match\":{\"value\":1}}]}",
     "{\"b\":1,\"c\":1}", NULL, true},
    {"{\"must\":[{\"should\":[{\"key\":\"a\",\"match\":{\"value\":1}},{\"key\":\"b\",\"match\":{\"value\":1}}]},{\"key\":\"c\",\"match\":{\"value\":1}}]}",
     "{\"c\":1}", NULL, false},
    {"{\"must\":[{\"must_not\":[{\"key\":\"a\",\"match\":{\"value\":1}}]}]}", "{\"a\":1}", NULL, false},
    {"{\"must_not\":[{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1}},{\"key\":\"b\",\"match\":{\"value\":1}}]}]}",
     "{\"a\":1,\"b\":0}", NULL, true},
    {"{\"must_not\":[{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1}},{\"key\":\"b\",\"match\":{\"value\":1}}]}]}",
     "{\"a\":1,\"b\":1}", NULL, false},
    {"{\"must\":[{}]}", "{}", NULL, true},
    {"{\"must_not\":[{}]}", "{}", NULL, false},
    {"{\"must\":[{\"must\":[{\"must\":[{\"has_id\":[9]}]}]}]}", NULL, "9", true},
    {"{\"must\":[{\"must\":[{\"must\":[{\"has_id\":[9]}]}]}]}", NULL, "8", false},
};

static void test_eval_table(void **state)
{
    (void)state;
    size_t failures = 0;
    for (size_t i = 0; i < sizeof eval_cases / sizeof eval_cases[0]; i++) {
        const eval_case *c = &eval_cases[i];
        vx_point_id id;
        id_from_text(&id, c->id);
        vx_filter_expr *f = compile_ok(c->filter);

        cJSON *p = NULL;
        if (c->payload != NULL) {
            p = cJSON_Parse(c->payload);
            assert_non_null(p); /* the table's payloads are valid JSON */
        }
        bool parsed = vx_filter_eval(f, &id, p);
        bool text = c->payload ? vx_filter_eval_text(f, &id, c->payload, strlen(c->payload))
                               : vx_filter_eval_text(f, &id, NULL, 0);
        if (parsed != c->expect || text != c->expect) {
            fprintf(stderr,
                    "case %zu: filter %s payload %s id %s: expected %d, got %d (parsed) %d (text)\n",
                    i, c->filter, c->payload ? c->payload : "(none)", c->id ? c->id : "1",
                    c->expect, parsed, text);
            failures++;
        }
        cJSON_Delete(p);
        vx_filter_free(f);
    }
    assert_int_equal(failures, 0);
}

/* ---- invalid filters ------------------------------------------------------------------------- */

typedef struct bad_case {
    const char *filter;
    const char *msg; /* a substring the message must contain */
} bad_case;

static const bad_case bad_cases[] = {
    /* not an object, not JSON */
    {"[]", "object"},
    {"42", "object"},
    {"\"must\"", "object"},
    {"null", "object"},
    {"{\"must\":[", "JSON"},
    {"", "JSON"},
    /* unknown clause */
    {"{\"filter\":[]}", "filter"},
    {"{\"must\":[],\"shuold\":[]}", "shuold"},
    {"{\"must\":[{\"bogus\":1}]}", "bogus"},
    /* clause shapes */
    {"{\"must\":5}", "must"},
    {"{\"should\":\"x\"}", "should"},
    {"{\"must\":[5]}", "object"},
    {"{\"min_should\":[]}", "min_should"},
    {"{\"min_should\":{\"min_count\":1}}", "conditions"},
    {"{\"min_should\":{\"conditions\":[]}}", "min_count"},
    {"{\"min_should\":{\"conditions\":[],\"min_count\":-1}}", "min_count"},
    {"{\"min_should\":{\"conditions\":[],\"min_count\":1.5}}", "min_count"},
    /* keys */
    {"{\"must\":[{\"key\":\"\",\"match\":{\"value\":1}}]}", "key"},
    {"{\"must\":[{\"key\":5,\"match\":{\"value\":1}}]}", "key"},
    {"{\"must\":[{\"key\":\"a..b\",\"match\":{\"value\":1}}]}", "a..b"},
    {"{\"must\":[{\"key\":\".a\",\"match\":{\"value\":1}}]}", ".a"},
    {"{\"must\":[{\"key\":\"a.\",\"match\":{\"value\":1}}]}", "a."},
    {"{\"must\":[{\"is_empty\":{\"key\":\"\"}}]}", "key"},
    {"{\"must\":[{\"is_null\":{}}]}", "key"},
    {"{\"must\":[{\"is_null\":\"z\"}]}", "is_null"},
    {"{\"must\":[{\"is_empty\":5}]}", "is_empty"},
    /* match */
    {"{\"must\":[{\"key\":\"a\"}]}", "match"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1},\"range\":{\"gt\":0}}]}", "match"},
    {"{\"must\":[{\"key\":\"a\",\"match\":5}]}", "match"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{}}]}", "value"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1,\"any\":[1]}}]}", "value"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"any\":[1],\"except\":[2]}}]}", "except"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1,\"except\":[2]}}]}", "except"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1.5}}]}", "integers"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":{\"x\":1}}}]}", "integers"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":[1]}}]}", "integers"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":null}}]}", "integers"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"any\":\"x\"}}]}", "any"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"except\":{}}}]}", "except"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"any\":[1,2.5]}}]}", "integers"},
    {"{\"must\":[{\"key\":\"a\",\"match\":{\"except\":[null]}}]}", "integers"},
    /* range */
    {"{\"must\":[{\"key\":\"a\",\"range\":{\"gt\":\"5\"}}]}", "gt"},
    {"{\"must\":[{\"key\":\"a\",\"range\":{\"lte\":true}}]}", "lte"},
    {"{\"must\":[{\"key\":\"a\",\"range\":{\"between\":5}}]}", "between"},
    {"{\"must\":[{\"key\":\"a\",\"range\":[1,2]}]}", "range"},
    /* has_id */
    {"{\"must\":[{\"has_id\":[-1]}]}", "has_id"},
    {"{\"must\":[{\"has_id\":[1.5]}]}", "has_id"},
    {"{\"must\":[{\"has_id\":[\"not-a-uuid\"]}]}", "has_id"},
    {"{\"must\":[{\"has_id\":[\"550e8400-e29b-41d4-a716-44665544000g\"]}]}", "has_id"},
    {"{\"must\":[{\"has_id\":[\"550e8400-e29b-41d4-a716-4466554400\"]}]}", "has_id"},
    {"{\"must\":[{\"has_id\":[true]}]}", "has_id"},
    {"{\"must\":[{\"has_id\":5}]}", "has_id"},
    {"{\"must\":[{\"has_id\":[18446744073709551616]}]}", "has_id"},
};

/* Expect rejection with VX_EINVAL, *out untouched, and a message containing `want`. */
static void expect_bad(const char *text, size_t len, const char *want)
{
    char err[VX_FILTER_ERRMSG_LEN];
    memset(err, 0, sizeof err);
    vx_filter_expr *f = NULL;
    int rc = vx_filter_compile_text(text, len, &f, err);
    if (rc != VX_EINVAL || err[0] == '\0' || strstr(err, want) == NULL)
        fprintf(stderr, "filter %.200s: rc %d, message \"%s\" (wanted one naming \"%s\")\n", text, rc,
                err, want);
    assert_int_equal(rc, VX_EINVAL);
    assert_null(f);
    assert_true(err[0] != '\0');
    assert_non_null(strstr(err, want));
    assert_true(memchr(err, '\0', sizeof err) != NULL);
}

static void test_invalid_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++)
        expect_bad(bad_cases[i].filter, strlen(bad_cases[i].filter), bad_cases[i].msg);

    /* the parsed-JSON entry point rejects non-objects too, and a NULL errbuf is fine */
    vx_filter_expr *f = NULL;
    char err[VX_FILTER_ERRMSG_LEN] = "";
    cJSON *arr = cJSON_CreateArray();
    assert_int_equal(vx_filter_compile(arr, &f, err), VX_EINVAL);
    assert_null(f);
    assert_non_null(strstr(err, "object"));
    assert_int_equal(vx_filter_compile(NULL, &f, err), VX_EINVAL);
    assert_int_equal(vx_filter_compile(arr, &f, NULL), VX_EINVAL);
    assert_null(f);
    cJSON_Delete(arr);
    const char *bad = "{\"must\":[{\"key\":\"a..b\",\"match\":{\"value\":1}}]}";
    assert_int_equal(vx_filter_compile_text(bad, strlen(bad), &f, NULL), VX_EINVAL);
    assert_null(f);
}

/* ---- limits ---------------------------------------------------------------------------------- */

/* Dynamic string builder. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s)
{
    size_t l = strlen(s);
    if (b->n + l + 1 > b->cap) {
        b->cap = (b->n + l + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, s, l + 1);
    b->n += l;
}

/* `levels` nested filters (the root is level 1), the innermost holding one
 * match condition on "a". */
static char *nested_filter(int levels)
{
    sbuf b = {0};
    for (int i = 0; i < levels; i++) sb_add(&b, i ? "{\"must\":[" : "{\"must\":[");
    sb_add(&b, "{\"key\":\"a\",\"match\":{\"value\":1}}");
    for (int i = 0; i < levels; i++) sb_add(&b, "]}");
    return b.p;
}

/* A filter with `n` leaf conditions in one must list. */
static char *many_conditions(int n)
{
    sbuf b = {0};
    sb_add(&b, "{\"must\":[");
    for (int i = 0; i < n; i++) {
        char c[64];
        snprintf(c, sizeof c, "%s{\"key\":\"k%d\",\"range\":{\"gte\":0}}", i ? "," : "", i % 4);
        sb_add(&b, c);
    }
    sb_add(&b, "]}");
    return b.p;
}

/* A filter matching "a" against a list `what` ("any", "except" or has_id) of n values. */
static char *many_values(const char *what, int n)
{
    sbuf b = {0};
    if (strcmp(what, "has_id") == 0) {
        sb_add(&b, "{\"must\":[{\"has_id\":[");
    } else {
        sb_add(&b, "{\"must\":[{\"key\":\"a\",\"match\":{\"");
        sb_add(&b, what);
        sb_add(&b, "\":[");
    }
    for (int i = 0; i < n; i++) {
        char c[32];
        snprintf(c, sizeof c, "%s%d", i ? "," : "", i);
        sb_add(&b, c);
    }
    sb_add(&b, strcmp(what, "has_id") == 0 ? "]}]}" : "]}}]}");
    return b.p;
}

static void test_depth_limit(void **state)
{
    (void)state;
    vx_point_id id;
    vx_id_from_uint(&id, 1);
    const char *payload = "{\"a\":1}";

    char *ok = nested_filter(16);
    vx_filter_expr *f = compile_ok(ok);
    assert_true(vx_filter_eval_text(f, &id, payload, strlen(payload)));
    assert_false(vx_filter_eval_text(f, &id, "{\"a\":2}", 7));
    vx_filter_free(f);
    free(ok);

    char *deep = nested_filter(17);
    expect_bad(deep, strlen(deep), "deeper");
    free(deep);

    /* far deeper (400 JSON levels, inside cJSON's own nesting limit), still
     * rejected cleanly */
    char *very = nested_filter(200);
    expect_bad(very, strlen(very), "deeper");
    free(very);
}

static void test_condition_limit(void **state)
{
    (void)state;
    vx_point_id id;
    vx_id_from_uint(&id, 1);
    const char *payload = "{\"k0\":1,\"k1\":1,\"k2\":1,\"k3\":1}";

    char *ok = many_conditions(1024);
    vx_filter_expr *f = compile_ok(ok);
    assert_true(vx_filter_eval_text(f, &id, payload, strlen(payload)));
    vx_filter_free(f);
    free(ok);

    char *over = many_conditions(1025);
    expect_bad(over, strlen(over), "1024");
    free(over);

    /* nested conditions count too: 1 nested filter + 1024 leaves inside it */
    char *inner = many_conditions(1024);
    sbuf b = {0};
    sb_add(&b, "{\"must\":[");
    sb_add(&b, inner);
    sb_add(&b, "]}");
    expect_bad(b.p, b.n, "1024");
    free(b.p);
    free(inner);
}

static void test_value_limit(void **state)
{
    (void)state;
    vx_point_id id;
    vx_id_from_uint(&id, 1023);
    const char *payload = "{\"a\":1023}";
    const char *lists[] = {"any", "except", "has_id"};
    for (size_t i = 0; i < 3; i++) {
        char *ok = many_values(lists[i], 1024);
        vx_filter_expr *f = compile_ok(ok);
        bool want = strcmp(lists[i], "except") != 0; /* 1023 is in the list */
        assert_int_equal(vx_filter_eval_text(f, &id, payload, strlen(payload)), want);
        vx_filter_free(f);
        free(ok);

        char *over = many_values(lists[i], 1025);
        expect_bad(over, strlen(over), "1024");
        free(over);
    }
}

/* ---- payload text ---------------------------------------------------------------------------- */

static void test_invalid_payload_text(void **state)
{
    (void)state;
    vx_point_id id;
    vx_id_from_uint(&id, 3);
    static const char *const bad_payloads[] = {
        "{", "{\"a\":", "not json", "{\"a\":1,}", "\"unterminated", "}{\"a\":1}",
    };
    static const struct {
        const char *filter;
        bool on_empty; /* the result on {} */
    } filters[] = {
        {"{}", true},
        {"{\"must\":[{\"key\":\"a\",\"match\":{\"value\":1}}]}", false},
        {"{\"must_not\":[{\"key\":\"a\",\"match\":{\"value\":1}}]}", true},
        {"{\"must\":[{\"is_empty\":{\"key\":\"a\"}}]}", true},
        {"{\"must\":[{\"is_null\":{\"key\":\"a\"}}]}", false},
        {"{\"must\":[{\"key\":\"a\",\"match\":{\"except\":[2]}}]}", false},
        {"{\"must\":[{\"key\":\"a\",\"range\":{\"gte\":0}}]}", false},
        {"{\"must\":[{\"has_id\":[3]}]}", true},
    };
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++) {
        vx_filter_expr *f = compile_ok(filters[i].filter);
        assert_int_equal(vx_filter_eval_text(f, &id, "{}", 2), filters[i].on_empty);
        assert_int_equal(vx_filter_eval_text(f, &id, NULL, 0), filters[i].on_empty);
        assert_int_equal(vx_filter_eval(f, &id, NULL), filters[i].on_empty);
        for (size_t j = 0; j < sizeof bad_payloads / sizeof bad_payloads[0]; j++) {
            /* in an exact-size buffer, so an over-read shows under ASan */
            size_t n = strlen(bad_payloads[j]);
            char *copy = malloc(n);
            assert_non_null(copy);
            memcpy(copy, bad_payloads[j], n);
            bool got = vx_filter_eval_text(f, &id, copy, n);
            if (got != filters[i].on_empty)
                fprintf(stderr, "filter %s payload %s: expected %d got %d\n", filters[i].filter,
                        bad_payloads[j], filters[i].on_empty, got);
            assert_int_equal(got, filters[i].on_empty);
            free(copy);
        }
        /* a valid payload cut short by len is invalid too */
        const char *full = "{\"a\":1}";
        assert_int_equal(vx_filter_eval_text(f, &id, full, 5), filters[i].on_empty);
        vx_filter_free(f);
    }
}

/* The filter text need not be NUL-terminated: only len bytes are read. */
static void test_compile_text_length(void **state)
{
    (void)state;
    const char *text = "{\"must\":[{\"has_id\":[4]}]}";
    size_t n = strlen(text);
    char *copy = malloc(n);
    assert_non_null(copy);
    memcpy(copy, text, n);
    char err[VX_FILTER_ERRMSG_LEN] = "";
    vx_filter_expr *f = NULL;
    assert_int_equal(vx_filter_compile_text(copy, n, &f, err), 0);
    vx_point_id id;
    vx_id_from_uint(&id, 4);
    assert_true(vx_filter_eval(f, &id, NULL));
    vx_id_from_uint(&id, 5);
    assert_false(vx_filter_eval(f, &id, NULL));
    vx_filter_free(f);
    f = NULL;
    assert_int_equal(vx_filter_compile_text(copy, n - 1, &f, err), VX_EINVAL);
    assert_null(f);
    free(copy);
    vx_filter_free(NULL);
}

/* A min_count beyond any size_t: rejected, or compiled into a filter no point
 * satisfies (under UBSan, the conversion must not be undefined). */
static void test_huge_min_count(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "{\"min_should\":{\"conditions\":[{\"has_id\":[1]}],\"min_count\":1e300}}",
        "{\"min_should\":{\"conditions\":[{\"has_id\":[1]}],\"min_count\":2.66667e32}}",
    };
    vx_point_id id;
    vx_id_from_uint(&id, 1);
    for (size_t i = 0; i < 2; i++) {
        char err[VX_FILTER_ERRMSG_LEN] = "";
        vx_filter_expr *f = NULL;
        int rc = vx_filter_compile_text(texts[i], strlen(texts[i]), &f, err);
        if (rc == 0) {
            assert_false(vx_filter_eval(f, &id, NULL));
            vx_filter_free(f);
        } else {
            assert_int_equal(rc, VX_EINVAL);
            assert_non_null(strstr(err, "min_count"));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_table),
        cmocka_unit_test(test_invalid_table),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_condition_limit),
        cmocka_unit_test(test_value_limit),
        cmocka_unit_test(test_invalid_payload_text),
        cmocka_unit_test(test_compile_text_length),
        cmocka_unit_test(test_huge_min_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
