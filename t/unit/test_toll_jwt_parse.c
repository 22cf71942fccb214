/*
 * Unit tests of lib/toll_jwt_parse.c: the split into segments, strict
 * base64url, the header's "alg", "kid" and "crit", and the claims against
 * a policy, at their boundaries (docs/jwt.md).
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "toll_jwt_parse.h"


#define TEST_NOW  1700000000

#define S(s)      (const unsigned char *) (s), sizeof(s) - 1


static const toll_jwt_policy_t  test_policy = {
    "https://idp.example.com/", sizeof("https://idp.example.com/") - 1,
    "api", sizeof("api") - 1,
    30, 1, "sub", "scope", "plan:", sizeof("plan:") - 1,
    "free", sizeof("free") - 1
};


static json_t *
test_json(const char *text)
{
    json_t        *v;
    json_error_t   err;

    v = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    assert_non_null(v);

    return v;
}


static toll_jwt_rc_e
test_claims(const char *text, toll_jwt_claims_t *out, const char **why)
{
    json_t         *claims;
    toll_jwt_rc_e   rc;

    claims = test_json(text);
    *why = NULL;
    rc = toll_jwt_claims_decode(claims, &test_policy, TEST_NOW, out, why);

    /* buyer and plan pointed into the claims: only lengths are used */
    json_decref(claims);

    return rc;
}


static void
test_split(void **state)
{
    const char           *why;
    toll_jwt_segments_t   seg;

    (void) state;

    assert_int_equal(toll_jwt_split(S("ab.cde.f"), &seg, &why),
                     TOLL_JWT_OK);
    assert_int_equal(seg.header_len, 2);
    assert_memory_equal(seg.payload, "cde", 3);
    assert_int_equal(seg.signature_len, 1);
    assert_memory_equal(seg.signature, "f", 1);

    assert_int_equal(toll_jwt_split(S("a.b"), &seg, &why),
                     TOLL_JWT_MALFORMED);
    assert_string_equal(why, "not three segments");
    assert_int_equal(toll_jwt_split(S("a.b.c.d"), &seg, &why),
                     TOLL_JWT_MALFORMED);
    assert_int_equal(toll_jwt_split(S(""), &seg, &why),
                     TOLL_JWT_MALFORMED);

    assert_int_equal(toll_jwt_split(S(".b.c"), &seg, &why),
                     TOLL_JWT_MALFORMED);
    assert_string_equal(why, "an empty segment");
    assert_int_equal(toll_jwt_split(S("a..c"), &seg, &why),
                     TOLL_JWT_MALFORMED);
    assert_int_equal(toll_jwt_split(S("a.b."), &seg, &why),
                     TOLL_JWT_MALFORMED);
}


static void
test_b64url(void **state)
{
    unsigned char  buf[16];

    (void) state;

    assert_int_equal(toll_jwt_b64url_decode(buf, S("c2ln")), 3);
    assert_memory_equal(buf, "sig", 3);
    assert_int_equal(toll_jwt_b64url_decode(buf, S("c2k")), 2);
    assert_int_equal(toll_jwt_b64url_decode(buf, S("cw")), 1);
    assert_int_equal(toll_jwt_b64url_decode(buf, S("-_8")), 2);

    /* unused bits set, padding, the other alphabet, a lone character */
    assert_int_equal(toll_jwt_b64url_decode(buf, S("c2l")), -1);
    assert_int_equal(toll_jwt_b64url_decode(buf, S("cx")), -1);
    assert_int_equal(toll_jwt_b64url_decode(buf, S("cw==")), -1);
    assert_int_equal(toll_jwt_b64url_decode(buf, S("+/8")), -1);
    assert_int_equal(toll_jwt_b64url_decode(buf, S("c2lnc")), -1);
    assert_int_equal(toll_jwt_b64url_decode(buf, S("c2 n")), -1);
}


static void
test_json_object(void **state)
{
    json_t         *v;
    unsigned char   buf[64];

    (void) state;

    /* {"a":1} */
    v = toll_jwt_json(S("eyJhIjoxfQ"), buf);
    assert_non_null(v);
    json_decref(v);

    /* [1] is not an object; {"a":1,"a":2} has a duplicate */
    assert_null(toll_jwt_json(S("WzFd"), buf));
    assert_null(toll_jwt_json(S("eyJhIjoxLCJhIjoyfQ"), buf));
    assert_null(toll_jwt_json(S("e30="), buf));
}


static void
test_header(void **state)
{
    json_t             *h;
    const char         *why;
    toll_jwt_header_t   hd;

    (void) state;

    h = test_json("{\"alg\":\"EdDSA\",\"kid\":\"k1\"}");
    assert_int_equal(toll_jwt_header_decode(h, &hd, &why), TOLL_JWT_OK);
    assert_int_equal(hd.alg, TOLL_JWT_EDDSA);
    assert_int_equal(hd.kid_len, 2);
    assert_memory_equal(hd.kid, "k1", 2);
    json_decref(h);

    h = test_json("{\"alg\":\"HS256\"}");
    assert_int_equal(toll_jwt_header_decode(h, &hd, &why), TOLL_JWT_OK);
    assert_int_equal(hd.alg, TOLL_JWT_HS256);
    assert_null(hd.kid);
    json_decref(h);

    h = test_json("{\"alg\":\"none\"}");
    assert_int_equal(toll_jwt_header_decode(h, &hd, &why), TOLL_JWT_UNKNOWN);
    assert_string_equal(why, "an \"alg\" no key has");
    json_decref(h);

    h = test_json("{\"alg\":\"RS256 \"}");
    assert_int_equal(toll_jwt_header_decode(h, &hd, &why), TOLL_JWT_UNKNOWN);
    json_decref(h);

    h = test_json("{\"alg\":\"RS256\",\"crit\":[]}");
    assert_int_equal(toll_jwt_header_decode(h, &hd, &why), TOLL_JWT_UNKNOWN);
    assert_string_equal(why, "a \"crit\" header");
    json_decref(h);

    h = test_json("{\"alg\":\"RS256\",\"kid\":1}");
    assert_int_equal(toll_jwt_header_decode(h, &hd, &why), TOLL_JWT_UNKNOWN);
    json_decref(h);

    h = test_json("{\"alg\":[\"RS256\"]}");
    assert_int_equal(toll_jwt_header_decode(h, &hd, &why), TOLL_JWT_UNKNOWN);
    assert_string_equal(why, "no \"alg\" in the header");
    json_decref(h);
}


static void
test_claims_valid(void **state)
{
    const char         *why;
    toll_jwt_claims_t   out;

    (void) state;

    assert_int_equal(test_claims("{\"sub\":\"alice\","
                         "\"iss\":\"https://idp.example.com/\","
                         "\"aud\":[\"x\",\"api\"],\"exp\":1700000001,"
                         "\"nbf\":1700000030,\"scope\":\"read plan:pro\"}",
                         &out, &why),
                     TOLL_JWT_OK);
    assert_int_equal(out.buyer_len, 5);
    assert_int_equal(out.plan_len, 3);
    assert_int_equal(out.expires_at, 1700000031);

    /* no plan word: the default */
    assert_int_equal(test_claims("{\"sub\":\"a\",\"aud\":\"api\","
                         "\"iss\":\"https://idp.example.com/\","
                         "\"exp\":1700000001,\"scope\":\"read\"}",
                         &out, &why),
                     TOLL_JWT_OK);
    assert_ptr_equal(out.plan, test_policy.default_plan);
}


static void
test_claims_refused(void **state)
{
    const char         *why;
    toll_jwt_claims_t   out;

#define BASE "\"sub\":\"a\",\"aud\":\"api\"," \
             "\"iss\":\"https://idp.example.com/\""

    (void) state;

    /* exp: now + leeway is too late; missing; not an integer; too big */
    assert_int_equal(test_claims("{" BASE ",\"exp\":1699999970}", &out, &why),
                     TOLL_JWT_EXPIRED);
    assert_int_equal(out.expires_at, 0);
    assert_int_equal(test_claims("{" BASE "}", &out, &why), TOLL_JWT_CLAIMS);
    assert_string_equal(why, "no \"exp\"");
    assert_int_equal(test_claims("{" BASE ",\"exp\":1.7e9}", &out, &why),
                     TOLL_JWT_CLAIMS);
    assert_int_equal(test_claims("{" BASE ",\"exp\":-1}", &out, &why),
                     TOLL_JWT_CLAIMS);
    assert_int_equal(test_claims("{" BASE ",\"exp\":4611686018427387904}",
                                 &out, &why),
                     TOLL_JWT_CLAIMS);

    /* nbf, iat one second beyond the leeway */
    assert_int_equal(test_claims("{" BASE ",\"exp\":1800000000,"
                                 "\"nbf\":1700000031}", &out, &why),
                     TOLL_JWT_CLAIMS);
    assert_int_equal(test_claims("{" BASE ",\"exp\":1800000000,"
                                 "\"iat\":1700000031}", &out, &why),
                     TOLL_JWT_CLAIMS);

    /* aud, iss, buyer, plan */
    assert_int_equal(test_claims("{\"sub\":\"a\",\"aud\":[\"apix\"],"
                                 "\"iss\":\"https://idp.example.com/\","
                                 "\"exp\":1800000000}", &out, &why),
                     TOLL_JWT_CLAIMS);
    assert_int_equal(test_claims("{\"sub\":\"a\",\"aud\":\"api\","
                                 "\"iss\":\"https://idp.example.com\","
                                 "\"exp\":1800000000}", &out, &why),
                     TOLL_JWT_CLAIMS);
    assert_int_equal(test_claims("{\"sub\":\"\",\"aud\":\"api\","
                                 "\"iss\":\"https://idp.example.com/\","
                                 "\"exp\":1800000000}", &out, &why),
                     TOLL_JWT_CLAIMS);
    assert_int_equal(test_claims("{" BASE ",\"exp\":1800000000,"
                                 "\"scope\":\"plan:\"}", &out, &why),
                     TOLL_JWT_CLAIMS);
    assert_string_equal(why, "the plan claim names no valid plan");
    assert_null(out.buyer);

#undef BASE
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_json_object),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_claims_valid),
        cmocka_unit_test(test_claims_refused),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
