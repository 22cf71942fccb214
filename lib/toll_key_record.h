/*
 * toll: a key record as Redis holds it (the hash "toll:key:{<key_id>}"
 * that tollctl writes), decoded into what the gate decides by.  Pure, so
 * that the module's decoder is the one the fuzzer runs.
 *
 * Plain C11, no allocation, no I/O: safe inside an nginx worker.
 */

#ifndef _TOLL_KEY_RECORD_H_INCLUDED_
#define _TOLL_KEY_RECORD_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include "toll_key.h"


/* the fields the gate reads, in the order of its HMGET */
typedef enum {
    TOLL_KEY_F_STATUS = 0,
    TOLL_KEY_F_SECRET,
    TOLL_KEY_F_OWNER,
    TOLL_KEY_F_ROLE,
    TOLL_KEY_F_PLAN,
    TOLL_KEY_F_RATE_LIMIT,
    TOLL_KEY_F_EXPIRES_AT,
    TOLL_KEY_F_SCOPES,
    TOLL_KEY_F_N
} toll_key_field_e;


/*
 * Scopes (a key record's "scopes", a JWT's scope claims, toll_require's
 * scope=) and role names (toll_require's role=, a JWT's role claims) are
 * tokens of [A-Za-z0-9] and "-._:/+@~*", so that they are safe as they
 * are in a JSON string, a header value and a log line; a list is tokens
 * joined by single spaces.  Bounded, so that a record or a token fits a
 * cache node and a header: a token of at most TOLL_SCOPE_LEN_MAX bytes,
 * a list of at most TOLL_SCOPES_MAX tokens and TOLL_SCOPES_LEN_MAX bytes
 * (roles: TOLL_ROLES_MAX, TOLL_ROLES_LEN_MAX).
 */
#define TOLL_SCOPE_LEN_MAX         128
#define TOLL_SCOPES_MAX            64
#define TOLL_SCOPES_LEN_MAX        2048
#define TOLL_ROLES_MAX             16
#define TOLL_ROLES_LEN_MAX         255


/* a field's value; data NULL: the field is absent (a nil in HMGET) */
typedef struct {
    const char           *data;
    size_t                len;
} toll_key_field_t;


typedef struct {
    const char           *owner;        /* into the fields, not copied */
    size_t                owner_len;
    const char           *plan;         /* NULL, len 0: none */
    size_t                plan_len;
    const char           *scopes;       /* a valid list; NULL, len 0:
                                           none */
    size_t                scopes_len;
    int64_t               rate_limit;   /* requests/minute; -1 none */
    int64_t               expires_at;   /* unix seconds; 0 never */
    toll_role_e           role;
    int                   revoked;
    unsigned char         secret_hash[TOLL_SECRET_HASH_LEN];
} toll_key_record_t;


typedef enum {
    TOLL_KEY_RECORD_FOUND = 0,
    TOLL_KEY_RECORD_NONE,               /* no such key */
    TOLL_KEY_RECORD_INVALID             /* *why says which rule */
} toll_key_record_rc_e;


/*
 * A record with neither status nor secret_sha256 is no key (NONE).  One
 * that breaks a rule is INVALID, which the gate refuses like an unknown
 * key: secret_sha256 must be 64 hex digits, owner valid
 * (toll_owner_valid), plan (if any) valid, role (if any) a known one,
 * rate_limit and expires_at (if any) non-negative decimal integers that
 * fit in int64_t, scopes (if any) a valid list (toll_scopes_valid; empty
 * is none).  Any status but "active" is revoked: a typo must not
 * open the gate.  On NONE and INVALID, *rec is zeroed with rate_limit -1.
 */
toll_key_record_rc_e toll_key_record_decode(
    const toll_key_field_t f[TOLL_KEY_F_N], toll_key_record_t *rec,
    const char **why);


/* 1: p is one token (see above) of at most TOLL_SCOPE_LEN_MAX bytes */
int toll_scope_valid(const char *p, size_t len);

/*
 * 1: p is tokens joined by single spaces, no leading or trailing one, at
 * most max_n tokens and max_len bytes; the empty list is valid.
 */
int toll_scopes_valid(const char *p, size_t len, size_t max_n,
    size_t max_len);


#endif /* _TOLL_KEY_RECORD_H_INCLUDED_ */
