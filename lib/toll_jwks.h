/*
 * toll: a JWKS document as toll-settle publishes it (docs/settle.md,
 * "Key sets").
 */

#ifndef _TOLL_JWKS_H_INCLUDED_
#define _TOLL_JWKS_H_INCLUDED_


#include <stddef.h>


#define TOLL_JWKS_KEYS_MAX         64
#define TOLL_JWKS_KID_LEN_MAX      256


/*
 * The document's accepted keys, as the compact JSON {"keys":[...]} the
 * workers read (malloc'ed, *out), or -1 with the reason in err.  Strict:
 * an object with a "keys" array of 1 to 64 objects, each with a string
 * "kty" of RSA, EC or OKP, a "kid", an "alg" of RS256, ES256 or EdDSA or
 * a "use" of "sig", public members of the right sizes and no private
 * one; keys with "use" "enc" are left out; no accepted key refuses it.
 * Pure: no I/O.
 */
int toll_jwks_check(const char *body, size_t len, char **out,
    char *err, size_t err_size);


#endif /* _TOLL_JWKS_H_INCLUDED_ */
