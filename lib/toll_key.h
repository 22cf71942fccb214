/*
 * toll: API key formats, credential parsing, secret hashing and the Redis
 * names of key records.  Shared by the nginx module, tollctl and
 * toll-settle, so that every program agrees on what a key looks like.
 *
 * Plain C11, no allocation, no I/O: safe inside an nginx worker.
 */

#ifndef _TOLL_KEY_H_INCLUDED_
#define _TOLL_KEY_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include "toll_names.h"


/*
 * A token is "<key_id>:<secret>".  Both halves use the characters of
 * base64url ([A-Za-z0-9_-]), so a token never needs quoting in a header,
 * a shell or a Redis key name.
 */
#define TOLL_KEY_ID_LEN_MIN        1
#define TOLL_KEY_ID_LEN_MAX        64
#define TOLL_SECRET_LEN_MIN        16
#define TOLL_SECRET_LEN_MAX        256

/* what tollctl generates: "tk_" + 16 hex digits, 43 base64url chars */
#define TOLL_KEY_ID_PREFIX         "tk_"
#define TOLL_KEY_ID_RANDOM_BYTES   8
#define TOLL_SECRET_RANDOM_BYTES   32     /* 256 bits of entropy */
#define TOLL_KEY_ID_GEN_LEN        (sizeof(TOLL_KEY_ID_PREFIX) - 1        \
                                    + 2 * TOLL_KEY_ID_RANDOM_BYTES)
#define TOLL_SECRET_GEN_LEN        43     /* base64url of 32 bytes */

#define TOLL_SECRET_HASH_LEN       32     /* SHA-256 */
#define TOLL_SECRET_HASH_HEX_LEN   64

/* "toll:key:{<key_id>}" (lib/toll_names.h) */
#define TOLL_REDIS_KEY_NAME_MAX    (toll_name_len(TOLL_NAME_KEY_PREFIX)     \
                                    + TOLL_KEY_ID_LEN_MAX                  \
                                    + toll_name_len(TOLL_NAME_TAG_END))

#define TOLL_STATUS_ACTIVE         "active"
#define TOLL_STATUS_REVOKED        "revoked"

/*
 * An imported one-part key ("test_sk_...", as another platform issued
 * it): base64url characters only, so that it can never be read as a
 * "key_id:secret" token or as a JWT (no ':', no '.').  Its key id is
 * derived from it, "ik_" and 32 hex digits of SHA-256 over a label and
 * the token: the label keeps the id from being a part of the stored
 * secret hash (SHA-256 of the token alone).
 */
#define TOLL_OPAQUE_LEN_MIN        20
#define TOLL_OPAQUE_LEN_MAX        TOLL_SECRET_LEN_MAX
#define TOLL_OPAQUE_ID_PREFIX      "ik_"
#define TOLL_OPAQUE_ID_LABEL       "toll imported key id\n"
#define TOLL_OPAQUE_ID_HASH_BYTES  16
#define TOLL_OPAQUE_ID_LEN         (sizeof(TOLL_OPAQUE_ID_PREFIX) - 1      \
                                    + 2 * TOLL_OPAQUE_ID_HASH_BYTES)

#define TOLL_OWNER_LEN_MAX         128
#define TOLL_PLAN_LEN_MAX          64


typedef enum {
    TOLL_ROLE_BUYER = 0,
    TOLL_ROLE_PROVIDER,
    TOLL_ROLE_ADMIN
} toll_role_e;


typedef enum {
    TOLL_CRED_OK = 0,
    TOLL_CRED_MALFORMED
} toll_cred_rc_e;


/* spans into the caller's buffer; nothing is copied */
typedef struct {
    const unsigned char  *key_id;
    size_t                key_id_len;
    const unsigned char  *secret;
    size_t                secret_len;
} toll_token_t;


int toll_key_id_valid(const unsigned char *p, size_t len);
int toll_secret_valid(const unsigned char *p, size_t len);

/*
 * An owner id goes into a request header to the upstream: 1 to
 * TOLL_OWNER_LEN_MAX printable ASCII characters, no spaces, the first not
 * '}' (it would empty the hash tag of its Redis names).  A plan name:
 * 0 to TOLL_PLAN_LEN_MAX characters of [A-Za-z0-9_.-].
 */
int toll_owner_valid(const unsigned char *p, size_t len);
int toll_plan_valid(const unsigned char *p, size_t len);

/* "key_id:secret", exactly one colon, both halves valid */
toll_cred_rc_e toll_token_parse(const unsigned char *p, size_t len,
    toll_token_t *tok);

/*
 * An Authorization header value: "Bearer" (any case), one or more spaces
 * or tabs, a token, nothing after it.
 */
toll_cred_rc_e toll_bearer_parse(const unsigned char *p, size_t len,
    toll_token_t *tok);

/*
 * The token of an Authorization header value: "Bearer" (any case), one or
 * more spaces or tabs, then everything to the end.  Nothing is checked of
 * the token itself.
 */
toll_cred_rc_e toll_bearer_token(const unsigned char *p, size_t len,
    const unsigned char **token, size_t *token_len);

/* base64url only, TOLL_OPAQUE_LEN_MIN to TOLL_OPAQUE_LEN_MAX characters */
int toll_opaque_valid(const unsigned char *p, size_t len);

/*
 * A one-part token: checked, its key id derived into id (not
 * NUL-terminated), tok->key_id pointing at id and tok->secret at the
 * whole token, whose SHA-256 is the record's secret hash.  The caller
 * checks the prefix: which ones are accepted is configuration.
 */
toll_cred_rc_e toll_opaque_parse(const unsigned char *p, size_t len,
    unsigned char id[TOLL_OPAQUE_ID_LEN], toll_token_t *tok);

/* SHA-256 of the secret; returns 0, or -1 when libcrypto fails */
int toll_secret_hash(const unsigned char *secret, size_t len,
    unsigned char out[TOLL_SECRET_HASH_LEN]);

/* constant time: the time taken does not depend on where a and b differ */
int toll_hash_equal(const unsigned char a[TOLL_SECRET_HASH_LEN],
    const unsigned char b[TOLL_SECRET_HASH_LEN]);

/* writes 2 * len lowercase hex digits, no NUL */
void toll_hex_encode(const unsigned char *src, size_t len, char *dst);
/* exactly 2 * len hex digits of either case; returns 0 on success */
int toll_hex_decode(const char *src, size_t src_len, unsigned char *dst,
    size_t len);

/* returns the name's length, or 0 when key_id is invalid */
size_t toll_key_redis_name(const unsigned char *key_id, size_t len,
    char buf[TOLL_REDIS_KEY_NAME_MAX + 1]);

const char *toll_role_name(toll_role_e role);
/* returns -1 for an unknown role name */
int toll_role_parse(const char *p, size_t len);

/*
 * Fills key_id (TOLL_KEY_ID_GEN_LEN chars) and secret (TOLL_SECRET_GEN_LEN
 * chars) from the OpenSSL CSPRNG; both NUL-terminated.  Returns 0 on
 * success, -1 when the CSPRNG fails.
 */
int toll_key_generate(char key_id[TOLL_KEY_ID_GEN_LEN + 1],
    char secret[TOLL_SECRET_GEN_LEN + 1]);


#endif /* _TOLL_KEY_H_INCLUDED_ */
