/*
 * llm_usage's scanner: the number at a path, in JSON and in an event
 * stream, found the same wherever the body is cut: each input is fed
 * whole, a byte at a time, and cut in two at every position.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "usage_scan.h"


#define NOT_FOUND  UINT64_MAX


typedef struct {
    const char  *name;
    const char  *path;
    int          sse;
    const char  *body;
    uint64_t     expect;          /* NOT_FOUND: no value */
} scan_case_t;


static const scan_case_t  cases[] = {

    /* JSON bodies */
    { "openai", "usage.total_tokens", 0,
      "{\"id\":\"c1\",\"choices\":[{\"message\":{\"content\":\"hi\"}}],"
      "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":30,"
      "\"total_tokens\":42}}", 42 },
    { "pretty", "usage.total_tokens", 0,
      "{\n  \"usage\" : {\r\n    \"total_tokens\" :\t 1234567 \n  }\n}\n",
      1234567 },
    { "key order and siblings", "usage.total_tokens", 0,
      "{\"usage\":{\"total_tokens_x\":9,\"total\":8,\"total_tokens\":77,"
      "\"z\":[1,{\"total_tokens\":5}]},\"total_tokens\":3}", 77 },
    { "same key elsewhere", "usage.total_tokens", 0,
      "{\"meta\":{\"usage\":{\"total_tokens\":5}},\"total_tokens\":6,"
      "\"usages\":{\"total_tokens\":7}}", NOT_FOUND },
    { "path in strings", "usage.total_tokens", 0,
      "{\"text\":\"{\\\"usage\\\":{\\\"total_tokens\\\":5}}\","
      "\"usage\":{\"note\":\"a } ] \\\" , : {\",\"total_tokens\":11}}", 11 },
    { "deeper path", "metadata.cost.units", 0,
      "{\"metadata\":{\"total_tokens\":15000,\"cost\":{\"units\":"
      "18446744073709551615}}}", UINT64_MAX },
    { "reference 004", "metadata.total_tokens", 0,
      "{\"final_result\":{\"issues\":5},\"metadata\":{\"total_tokens\":"
      "15000,\"total_cost\":0.45,\"user_id\":\"user-789\"}}", 15000 },
    { "last wins", "usage.total_tokens", 0,
      "{\"usage\":{\"total_tokens\":1},\"usage\":{\"total_tokens\":2}}", 2 },
    { "in an array: not on the path", "usage.total_tokens", 0,
      "{\"usage\":[{\"total_tokens\":4}]}", NOT_FOUND },
    { "negative", "usage.total_tokens", 0,
      "{\"usage\":{\"total_tokens\":-4}}", NOT_FOUND },
    { "fraction", "usage.total_tokens", 0,
      "{\"usage\":{\"total_tokens\":4.5}}", NOT_FOUND },
    { "exponent", "usage.total_tokens", 0,
      "{\"usage\":{\"total_tokens\":4e2}}", NOT_FOUND },
    { "overflow", "usage.total_tokens", 0,
      "{\"usage\":{\"total_tokens\":18446744073709551616}}", NOT_FOUND },
    { "string", "usage.total_tokens", 0,
      "{\"usage\":{\"total_tokens\":\"42\"}}", NOT_FOUND },
    { "null", "usage.total_tokens", 0,
      "{\"usage\":null}", NOT_FOUND },
    { "escaped key is another key", "usage.total_tokens", 0,
      "{\"usage\":{\"total\\u005ftokens\":42}}", NOT_FOUND },
    /* cut inside the number: 42 may be 420; never charged for */
    { "truncated inside the number", "usage.total_tokens", 0,
      "{\"usage\":{\"total_tokens\":42", NOT_FOUND },
    /* the number ended: it is whole, whatever came after */
    { "truncated after the number", "usage.total_tokens", 0,
      "{\"usage\":{\"total_tokens\":42,", 42 },
    { "an event cut inside its number keeps none", "usage.total_tokens", 1,
      "data: {\"usage\":{\"total_tokens\":7}}\n\n"
      "data: {\"usage\":{\"total_tokens\":4", 7 },
    { "garbage after", "usage.total_tokens", 0,
      "{\"usage\":{\"total_tokens\":42}} trailing", 42 },
    { "not JSON", "usage.total_tokens", 0, "<html>usage</html>", NOT_FOUND },
    { "empty", "usage.total_tokens", 0, "", NOT_FOUND },

    { "long strings", "usage.total_tokens", 0,
      "{\"text\":\"a long text with an escaped quote \\\" and a "
      "\\\\ backslash, then {\\\"usage\\\":{\\\"total_tokens\\\":1}}"
      " inside it\",\"usage\":{\"total_tokens\":2222,\"note\":\"a "
      "second long text of more than sixteen bytes\"}}", 2222 },

    /* event streams */
    { "openai stream", "usage.total_tokens", 1,
      "data: {\"choices\":[{\"delta\":{\"content\":\"He\"}}],"
      "\"usage\":null}\n\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"llo\"}}],"
      "\"usage\":null}\n\n"
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,"
      "\"total_tokens\":905}}\n\n"
      "data: [DONE]\n\n", 905 },
    { "long strings in events", "usage.total_tokens", 1,
      ": a comment line longer than sixteen bytes, with \"quotes\"\n"
      "data: {\"delta\":\"a long text of tokens, \\\"quoted\\\" "
      "and \\\\ escaped, more than sixteen bytes\",\"usage\":null}\n\n"
      "data: {\"delta\":\"an unterminated string longer than sixteen\n"
      "data: {\"usage\":{\"total_tokens\":3}}\n\n"
      "data: {\"usage\":{\"total_tokens\":4},\"tail\":\"another "
      "long text after the number\"}\n\n", 4 },
    { "CRLF and comments", "usage.total_tokens", 1,
      ": keep-alive\r\n\r\nevent: usage\r\nid: 7\r\n"
      "data: {\"usage\":{\"total_tokens\":31}}\r\n\r\n", 31 },
    { "CR only", "usage.total_tokens", 1,
      "data:{\"usage\":{\"total_tokens\":8}}\r\rdata: [DONE]\r\r", 8 },
    { "the last event with the path", "usage.total_tokens", 1,
      "data: {\"usage\":{\"total_tokens\":10}}\n\n"
      "data: {\"usage\":{\"total_tokens\":20}}\n\n"
      "data: {\"usage\":{\"total_tokens\":null}}\n\n", 20 },
    { "data over two lines", "usage.total_tokens", 1,
      "data: {\"usage\":\ndata: {\"total_tokens\":\ndata: 64}}\n\n", 64 },
    { "no final blank line", "usage.total_tokens", 1,
      "data: {\"usage\":{\"total_tokens\":12}}\n", 12 },
    { "not data", "usage.total_tokens", 1,
      "datum: {\"usage\":{\"total_tokens\":1}}\n\n"
      "dat: {\"usage\":{\"total_tokens\":2}}\n\n"
      "data2: {\"usage\":{\"total_tokens\":3}}\n\n", NOT_FOUND },
    { "a broken event, then a good one", "usage.total_tokens", 1,
      "data: {\"usage\":{\"total_tokens\":]]]\n\n"
      "data: {\"usage\":{\"total_tokens\":99}}\n\n", 99 },
    { "events reset the path", "usage.total_tokens", 1,
      "data: {\"usage\":{\"x\":1\n\n"
      "data: {\"total_tokens\":5}\n\n", NOT_FOUND },

    /* events passed over unread: the needle "total_tokens" decides */
    { "the key's event between passed ones", "usage.total_tokens", 1,
      "data: {\"usage\":null}\n\n"
      "data: {\"usage\":{\"total_tokens\":7}}\n\n"
      "data: {\"usage\":null}\n\ndata: [DONE]\n\n", 7 },
    { "near misses of the needle", "usage.total_tokens", 1,
      "data: {\"usage\":{\"total_tokens\":6}}\n\n"
      "data: {\"usage\":{\"total_tokens_x\":1,\"total_token\":2,"
      "\"xtotal_tokens\":3,\"total\\u005ftokens\":4,\"total_tokens \":5"
      "}}\n\n"
      "data: {\"usage\":{\"total_tokens\\\":9}}\n\n", 6 },
    { "the needle where it is not the path", "usage.total_tokens", 1,
      "data: {\"usage\":{\"total_tokens\":6}}\n\n"
      "data: {\"a\":{\"usage\":{\"total_tokens\":1}},"
      "\"total_tokens\":2}\n\n"
      ": \"total_tokens\" in a comment\n"
      "event: \"total_tokens\"\ndata: {\"usage\":{}}\n\n", 6 },
    { "escaped quotes before the key", "usage.total_tokens", 1,
      "data: {\"t\":\"\\\"total_tokens\\\":5, \\\\\",\"usage\":"
      "{\"total_tokens\":8}}\n\n"
      "data: {\"t\":\"\\\"usage\\\":{\\\"total_tokens\\\":9}}\n\n", 8 },
    { "CRLF events passed over", "usage.total_tokens", 1,
      "data: {\"usage\":{\"total_tokens\":21}}\r\n\r\n"
      "data: {\"usage\":null}\r\n\r\n"
      "id: 3\r\ndata: {\"usage\":null}\r\n\r\n"
      "data: [DONE]\r\n\r\n", 21 },
    { "mixed line ends", "usage.total_tokens", 1,
      "data: {\"usage\":{\"total_tokens\":1}}\n\r"
      "data: {\"usage\":{\"total_tokens\":2}}\r\r"
      "data: {\"usage\":null}\r\n\n"
      "data: {\"usage\":{\"total_tokens\":3}}\n\r\n"
      "data: {\"usage\":null}\r\n"
      "data: {\"x\":1}\n\n", 3 },
    { "a CRLF's LF is no blank line", "usage.total_tokens", 1,
      "data: {\"usage\":\r\ndata: {\"total_tokens\":\r\ndata: 15}}\r\n",
      15 },
    { "a long event with the key last", "usage.total_tokens", 1,
      "data: {\"usage\":null}\n\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"" "0123456789"
      "0123456789012345678901234567890123456789012345678901234567890123456789"
      "0123456789012345678901234567890123456789012345678901234567890123456789"
      "0123456789012345678901234567890123456789012345678901234567890123456789"
      "\"}}],\n"
      "data: \"pad\":\"0123456789012345678901234567890123456789012345678901"
      "0123456789012345678901234567890123456789012345678901234567890123456789"
      "\",\"usage\":{\"prompt_tokens\":1,\"total_tokens\":44}}\n\n"
      "data: {\"usage\":null,\"pad\":\"0123456789012345678901234567890123"
      "0123456789012345678901234567890123456789012345678901234567890123456789"
      "\"}\n\ndata: [DONE]\n\n", 44 },
    { "a long event without the key", "usage.total_tokens", 1,
      "data: {\"usage\":{\"total_tokens\":45}}\n\n"
      "event: delta\nid: 9\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"" "0123456789"
      "0123456789012345678901234567890123456789012345678901234567890123456789"
      "0123456789012345678901234567890123456789012345678901234567890123456789"
      "0123456789012345678901234567890123456789012345678901234567890123456789"
      "\"}}],\n"
      "data: \"usage\":{\"total\":1}}\n\n", 45 },
    { "an unended event with the key", "usage.total_tokens", 1,
      "data: {\"usage\":null}\n\n"
      "data: {\"usage\":{\"total_tokens\":46}}", 46 },
};


static uint64_t
scan(const scan_case_t *c, const size_t *cuts, size_t ncuts)
{
    size_t        i, from, len;
    uint64_t      v;
    usage_path_t  path;
    usage_scan_t  s;

    assert_int_equal(usage_path_parse(&path, c->path, strlen(c->path)), 0);
    usage_scan_init(&s, &path, c->sse);

    len = strlen(c->body);
    from = 0;

    for (i = 0; i <= ncuts; i++) {
        size_t  to = (i < ncuts) ? cuts[i] : len;

        usage_scan_feed(&s, c->body + from, to - from);
        from = to;
    }

    return usage_scan_finish(&s, &v) ? v : NOT_FOUND;
}


static void
check(const scan_case_t *c, uint64_t got, const char *how, size_t at)
{
    if (got != c->expect) {
        fail_msg("%s (%s %zu): got %llu, expected %llu", c->name, how, at,
                 (unsigned long long) got, (unsigned long long) c->expect);
    }
}


static void
test_whole(void **state)
{
    size_t  i;

    (void) state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check(&cases[i], scan(&cases[i], NULL, 0), "whole", 0);
    }
}


/* one cut at every position, then two cuts around every position */

static void
test_split_everywhere(void **state)
{
    size_t  i, at, len, cuts[2];

    (void) state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        len = strlen(cases[i].body);

        for (at = 0; at <= len; at++) {
            cuts[0] = at;
            check(&cases[i], scan(&cases[i], cuts, 1), "cut at", at);

            if (at + 1 <= len) {
                cuts[1] = at + 1;
                check(&cases[i], scan(&cases[i], cuts, 2), "byte at", at);
            }
        }
    }
}


static void
test_byte_at_a_time(void **state)
{
    size_t  i, n, len;
    size_t  cuts[1024];

    (void) state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        len = strlen(cases[i].body);
        assert_true(len < 1024);

        for (n = 0; n < len; n++) {
            cuts[n] = n + 1;
        }

        check(&cases[i], scan(&cases[i], cuts, len ? len - 1 : 0), "bytes",
              len);
    }
}


/*
 * Nesting deeper than the bound stops the document, not the process;
 * within it, the path is found after the deep part.
 */

static uint64_t
scan_deep(size_t levels)
{
    char          body[4096];
    size_t        i, n;
    uint64_t      v;
    usage_path_t  path;
    usage_scan_t  s;

    n = (size_t) sprintf(body, "{\"deep\":");

    for (i = 0; i < levels; i++) {
        body[n++] = '[';
    }

    for (i = 0; i < levels; i++) {
        body[n++] = ']';
    }

    n += (size_t) sprintf(body + n, ",\"usage\":{\"total_tokens\":3}}");

    usage_path_parse(&path, "usage.total_tokens", 18);
    usage_scan_init(&s, &path, 0);
    usage_scan_feed(&s, body, n);

    return usage_scan_finish(&s, &v) ? v : NOT_FOUND;
}


static void
test_depth_bound(void **state)
{
    (void) state;

    /* the object and 63 arrays: 64 levels, the bound */
    assert_int_equal(scan_deep(USAGE_DEPTH_MAX - 1), 3);
    assert_int_equal(scan_deep(USAGE_DEPTH_MAX), NOT_FOUND);
    assert_int_equal(scan_deep(1000), NOT_FOUND);
}


static void
test_path_parse(void **state)
{
    usage_path_t  p;

    (void) state;

    assert_int_equal(usage_path_parse(&p, "a.b.c", 5), 0);
    assert_int_equal(p.n, 3);
    assert_int_equal(p.len[2], 1);
    assert_int_equal(usage_path_parse(&p, "total", 5), 0);
    assert_int_equal(p.n, 1);

    /* the needle: the last key in quotes, found by its rarest byte */
    assert_int_equal(usage_path_parse(&p, "usage.total_tokens", 18), 0);
    assert_int_equal(p.needle_len, 14);
    assert_memory_equal(p.needle, "\"total_tokens\"", 14);
    assert_int_equal(p.needle[p.rare], '_');

    /* a key with a line end: no needle, every event is read */
    assert_int_equal(usage_path_parse(&p, "a\nb.c", 5), 0);
    assert_int_equal(p.needle_len, 0);
    assert_int_equal(usage_path_parse(&p, "a.b\rc", 5), 0);
    assert_int_equal(p.needle_len, 0);

    assert_int_equal(usage_path_parse(&p, "", 0), -1);
    assert_int_equal(usage_path_parse(&p, "a..b", 4), -1);
    assert_int_equal(usage_path_parse(&p, ".a", 2), -1);
    assert_int_equal(usage_path_parse(&p, "a.", 2), -1);
    assert_int_equal(usage_path_parse(&p, "a\"b", 3), -1);
    assert_int_equal(usage_path_parse(&p, "1.2.3.4.5.6.7.8.9", 17), -1);
    assert_int_equal(usage_path_parse(&p,
        "x234567890123456789012345678901234567890123456789012345678901234",
        65), -1);
}


/*
 * The events passed over unread against the reader alone (a path with
 * no needle reads every byte): random streams of events made of JSON,
 * near misses of the needle, escapes and every kind of line end, fed
 * whole and cut at every position, must give the same value.
 */

static const char  *frags[] = {
    "data: ", "data:", "data: {\"usage\":{\"total_tokens\":",
    "data: {\"usage\":null}", "data: {\"usage\":{\"total_tokens\":12}}",
    "\"total_tokens\"", "\"total_tokens", "total_tokens\"", "\"usage\"",
    "\"total_tokens_\"", "{", "}", "[", "]", "\"", "\\", "\\\"", ":", ",",
    "7", "30", " ", "null", "\n", "\n", "\r", "\r\n", "\n\n", "\r\n\r\n",
    "\r\r", "event: e", ": c", "id: 1", "xxxxxxxxxxxxxxxxxxxx",
};


static uint64_t
scan_with(const usage_path_t *path, const char *body, size_t len,
    size_t cut, size_t cut2)
{
    uint64_t      v;
    usage_scan_t  s;

    usage_scan_init(&s, path, 1);
    usage_scan_feed(&s, body, cut);
    usage_scan_feed(&s, body + cut, cut2 - cut);
    usage_scan_feed(&s, body + cut2, len - cut2);

    return usage_scan_finish(&s, &v) ? v : NOT_FOUND;
}


static void
test_passed_over_as_read(void **state)
{
    char          body[1024];
    size_t        n, k, f, len, cut, cut2;
    uint32_t      seed;
    uint64_t      fast, slow;
    usage_path_t  path, plain;

    (void) state;

    assert_int_equal(usage_path_parse(&path, "usage.total_tokens", 18), 0);
    assert_int_equal(path.needle_len, 14);
    plain = path;
    plain.needle_len = 0;

    seed = 1;

    for (n = 0; n < 3000; n++) {
        len = 0;

        for (k = 0; k < 40; k++) {
            seed = seed * 1103515245 + 12345;
            f = (seed >> 16) % (sizeof(frags) / sizeof(frags[0]));

            if (len + strlen(frags[f]) >= sizeof(body)) {
                break;
            }

            memcpy(body + len, frags[f], strlen(frags[f]));
            len += strlen(frags[f]);
        }

        /* one cut, and a second one a little further */
        for (cut = 0; cut <= len; cut++) {
            cut2 = cut + (n % 23) < len ? cut + (n % 23) : len;
            fast = scan_with(&path, body, len, cut, cut2);
            slow = scan_with(&plain, body, len, cut, cut2);

            if (fast != slow) {
                fail_msg("stream %zu cut at %zu: %llu, read %llu: %.*s", n,
                         cut, (unsigned long long) fast,
                         (unsigned long long) slow, (int) len, body);
            }
        }
    }
}


/*
 * Events longer than the chunks: the needle after 3,000 bytes of text in
 * its event, and events without it around, fed in chunks of every size
 * from 1 to 4,096 bytes in steps, as read by the reader alone.
 */

static uint64_t
scan_chunks(const usage_path_t *path, const char *body, size_t len,
    size_t chunk)
{
    size_t        at, n;
    uint64_t      v;
    usage_scan_t  s;

    usage_scan_init(&s, path, 1);

    for (at = 0; at < len; at += n) {
        n = (len - at < chunk) ? len - at : chunk;
        usage_scan_feed(&s, body + at, n);
    }

    return usage_scan_finish(&s, &v) ? v : NOT_FOUND;
}


static void
test_long_events(void **state)
{
    char          body[32768];
    size_t        len, k, chunk;
    usage_path_t  path, plain;

    (void) state;

    usage_path_parse(&path, "usage.total_tokens", 18);
    plain = path;
    plain.needle_len = 0;

    len = 0;

    for (k = 0; k < 6; k++) {
        len += (size_t) sprintf(body + len, "data: {\"delta\":\"");
        memset(body + len, 'x', 3000);
        len += 3000;

        if (k == 2) {
            /* an event of two data lines */
            len += (size_t) sprintf(body + len, "\",\ndata: \"more\":\"");
            memset(body + len, 'y', 1000);
            len += 1000;
        }

        len += (size_t) sprintf(body + len, "\",\"usage\":%s}\r\n\r\n",
                                k == 3 ? "{\"total_tokens\":3000}" : "null");
    }

    len += (size_t) sprintf(body + len, "data: [DONE]\n\n");
    assert_true(len < sizeof(body));

    for (chunk = 1; chunk <= 4096; chunk += (chunk < 64) ? 1 : 61) {
        assert_int_equal(scan_chunks(&path, body, len, chunk), 3000);
        assert_int_equal(scan_chunks(&plain, body, len, chunk), 3000);
    }

    assert_int_equal(scan_chunks(&path, body, len, len), 3000);
}


/* a one-key path at the top level */

static void
test_top_level_key(void **state)
{
    uint64_t      v;
    usage_path_t  path;
    usage_scan_t  s;

    (void) state;

    usage_path_parse(&path, "units", 5);
    usage_scan_init(&s, &path, 0);
    usage_scan_feed(&s, "{\"a\":{\"units\":1},\"units\":250}", 30);
    assert_int_equal(usage_scan_finish(&s, &v), 1);
    assert_int_equal(v, 250);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole),
        cmocka_unit_test(test_split_everywhere),
        cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_depth_bound),
        cmocka_unit_test(test_path_parse),
        cmocka_unit_test(test_top_level_key),
        cmocka_unit_test(test_passed_over_as_read),
        cmocka_unit_test(test_long_events),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
