/*
 * Fuzz the decoder of a key record as Redis holds it
 * (lib/toll_key_record.c, which the gate runs on its HMGET reply).
 *
 * Input: for each of the seven fields, a length byte (0xff: the field is
 * absent, a nil) and that many bytes; each field lands in a buffer of its
 * exact size, so a read past a field shows.  A record the decoder finds
 * must satisfy every rule the gate relies on afterwards.
 */

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "toll_key.h"
#include "toll_key_record.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                  *copy[TOLL_KEY_F_N];
    size_t                 i, n;
    const char            *why;
    toll_key_field_t       f[TOLL_KEY_F_N];
    toll_key_record_t      rec;
    toll_key_record_rc_e   rc;

    for (i = 0; i < TOLL_KEY_F_N; i++) {
        copy[i] = NULL;
        f[i].data = NULL;
        f[i].len = 0;

        if (size == 0) {
            continue;
        }

        n = data[0];
        data++;
        size--;

        if (n == 0xff) {
            continue;
        }

        if (n > size) {
            n = size;
        }

        copy[i] = malloc(n ? n : 1);
        assert(copy[i] != NULL);
        memcpy(copy[i], data, n);

        f[i].data = copy[i];
        f[i].len = n;
        data += n;
        size -= n;
    }

    why = NULL;
    rc = toll_key_record_decode(f, &rec, &why);

    switch (rc) {

    case TOLL_KEY_RECORD_NONE:
        assert(f[TOLL_KEY_F_STATUS].data == NULL
               && f[TOLL_KEY_F_SECRET].data == NULL);
        assert(rec.owner == NULL && rec.rate_limit == -1);
        break;

    case TOLL_KEY_RECORD_INVALID:
        assert(why != NULL && strlen(why) > 0);
        assert(rec.owner == NULL && rec.rate_limit == -1 && !rec.revoked);
        break;

    case TOLL_KEY_RECORD_FOUND:
        assert(f[TOLL_KEY_F_SECRET].len == TOLL_SECRET_HASH_HEX_LEN);
        assert(rec.owner == f[TOLL_KEY_F_OWNER].data
               && rec.owner_len == f[TOLL_KEY_F_OWNER].len);
        assert(toll_owner_valid((const unsigned char *) rec.owner,
                                rec.owner_len));
        assert(rec.owner_len >= 1 && rec.owner_len <= TOLL_OWNER_LEN_MAX);
        assert(rec.plan_len <= TOLL_PLAN_LEN_MAX);
        assert(rec.plan_len == 0 || rec.plan == f[TOLL_KEY_F_PLAN].data);
        assert(rec.role == TOLL_ROLE_BUYER || rec.role == TOLL_ROLE_PROVIDER
               || rec.role == TOLL_ROLE_ADMIN);
        assert(rec.rate_limit >= -1 && rec.expires_at >= 0);

        /* only "active", exactly, is not revoked */
        assert(rec.revoked
               == !(f[TOLL_KEY_F_STATUS].len == 6
                    && memcmp(f[TOLL_KEY_F_STATUS].data, "active", 6) == 0));
        break;

    default:
        abort();
    }

    for (i = 0; i < TOLL_KEY_F_N; i++) {
        free(copy[i]);
    }

    return 0;
}
