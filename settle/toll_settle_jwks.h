/*
 * toll-settle: JWKS that follow the identity provider (docs/settle.md,
 * "Key sets"; docs/jwt.md, "Fetched key sets").
 *
 * A thread of its own fetches each "jwks NAME URL" over HTTPS on its
 * schedule, checks the document strictly and publishes the accepted keys
 * to Redis (lib/toll_names.h, TOLL_NAME_JWKS_PREFIX) with a generation
 * the nginx workers poll.  A fetch that fails, or a document that is
 * refused, leaves the last good set where it is: only the failure is
 * counted.  The drain never waits for it.
 */

#ifndef _TOLL_SETTLE_JWKS_H_INCLUDED_
#define _TOLL_SETTLE_JWKS_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define TOLL_SETTLE_JWKS_MAX              16
#define TOLL_SETTLE_JWKS_INTERVAL_DEFAULT 300000        /* 5 minutes */
#define TOLL_SETTLE_JWKS_INTERVAL_MIN     1000
#define TOLL_SETTLE_JWKS_INTERVAL_MAX     86400000      /* a day */
/* a document larger than this is not a key set */
#define TOLL_SETTLE_JWKS_BODY_MAX         (256 * 1024)
#define TOLL_SETTLE_JWKS_TIMEOUT_MS       5000


/* one "jwks NAME URL [interval=D]" line */
typedef struct {
    char                  *name;               /* owned */
    char                  *url;                /* owned, https:// */
    int64_t                interval_ms;
} toll_settle_jwks_src_t;


typedef struct {
    toll_settle_jwks_src_t srcs[TOLL_SETTLE_JWKS_MAX];
    size_t                 n;
    char                  *ca;                 /* jwks_ca FILE, owned */
} toll_settle_jwks_conf_t;


/* what the metrics page shows of one set */
typedef struct {
    const char            *name;
    uint64_t               fetches;
    uint64_t               failures;
    int64_t                last_success_ms;    /* unix ms, 0: never */
    int64_t                gen;                /* last published, 0 */
} toll_settle_jwks_stat_t;


typedef struct toll_settle_jwks_s  toll_settle_jwks_t;

struct toll_settle_conf_s;


/*
 * "jwks NAME URL [interval=D]" and "jwks_ca FILE" (args[0] is the
 * directive); 0, or -1 with the message in err.
 */
int toll_settle_jwks_conf(toll_settle_jwks_conf_t *jc, char **args,
    int nargs, char *err, size_t err_size);
void toll_settle_jwks_conf_free(toll_settle_jwks_conf_t *jc);

/* the fetcher's thread, with its own Redis connection; NULL: none */
int toll_settle_jwks_start(const struct toll_settle_conf_s *conf,
    toll_settle_jwks_t **j, char *err, size_t err_size);
void toll_settle_jwks_stop(toll_settle_jwks_t *j);

/* up to max sets' figures, read without a lock; the count */
size_t toll_settle_jwks_stats(toll_settle_jwks_stat_t *out, size_t max);


#endif /* _TOLL_SETTLE_JWKS_H_INCLUDED_ */
