/*
 * toll: the Redis layout, described once (docs/redis.md).
 *
 * Every key name, hash field and TTL that more than one program uses:
 * the module writes usage and reads keys, toll-settle drains usage, and
 * tollctl writes keys and reads all of it.  Names are built and taken
 * apart here and nowhere else, so that the three agree on every byte.
 *
 * A name carries its subject (a key id, a buyer, a limit subject) inside
 * "{...}", a Redis Cluster hash tag: all of a subject's keys live in one
 * slot, so that one script may touch them together.  A buyer may hold
 * '{', '}' and ':', but not '}' first, which would end the tag empty: a
 * name is read from its end, where its form is fixed.
 *
 * Plain C11, no allocation, no I/O: safe inside an nginx worker.
 */

#ifndef _TOLL_NAMES_H_INCLUDED_
#define _TOLL_NAMES_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* key records (lib/toll_key.h): "toll:key:{<key_id>}", and their index */
#define TOLL_NAME_KEY_PREFIX       "toll:key:{"
#define TOLL_NAME_KEY_INDEX        "toll:keys"

/* a key record's fields, as tollctl writes and the module reads */
#define TOLL_FIELD_STATUS          "status"         /* active | revoked */
#define TOLL_FIELD_SECRET_SHA256   "secret_sha256"  /* 64 lowercase hex */
#define TOLL_FIELD_OWNER           "owner"
#define TOLL_FIELD_ROLE            "role"           /* buyer|provider|admin */
#define TOLL_FIELD_PLAN            "plan"           /* may be absent */
#define TOLL_FIELD_RATE_LIMIT      "rate_limit"     /* requests/minute */
#define TOLL_FIELD_EXPIRES_AT      "expires_at"     /* unix seconds; 0 never */
#define TOLL_FIELD_CREATED_AT      "created_at"     /* unix seconds */
#define TOLL_FIELD_REVOKED_AT      "revoked_at"     /* unix seconds */
/* space-separated tokens (toll_scope_valid); may be absent: none */
#define TOLL_FIELD_SCOPES          "scopes"


/* a buyer's usage of a UTC day: "toll:usage:{<buyer>}:<YYYYMMDD>" */
#define TOLL_NAME_USAGE_PREFIX     "toll:usage:{"
#define TOLL_NAME_USAGE_MATCH      "toll:usage:{*}:*"
/* the usage hashes with counts not yet drained (a set of names) */
#define TOLL_NAME_USAGE_INDEX      "toll:usage:index"
/* after "}": the buyer's flush ids (zset) and days with usage (set) */
#define TOLL_NAME_USAGE_FLUSHES    ":flushes"
#define TOLL_NAME_USAGE_DAYS       ":days"
/* after the day: what toll-settle drained of it, for readers */
#define TOLL_NAME_USAGE_MIRROR     ":drained"

/* a claim: "toll:drain:{<buyer>}:<YYYYMMDD>:<32 lowercase hex>" */
#define TOLL_NAME_DRAIN_PREFIX     "toll:drain:{"
/* claims made and not yet deleted (set); claims set aside (hash) */
#define TOLL_NAME_DRAIN_OPEN       "toll:drain:open"
#define TOLL_NAME_DRAIN_QUARANTINE "toll:drain:quarantine"
/* the ledger id the Redis is bound to (string) */
#define TOLL_NAME_SETTLE_LEDGER    "toll:settle:ledger"
/*
 * A mark written just before a WAIT: "toll:wait:" and the name of the
 * key whose slot it marks (same hash tag, same primary).  A WAIT counts
 * replicas that have this connection's writes; a connection that wrote
 * nothing (a claim found after a restart) would count every replica
 * connected.  Once the mark is on a replica, so is every earlier write
 * of that primary, whoever made it.  It expires by itself.
 */
#define TOLL_NAME_WAIT_PREFIX      "toll:wait:"
#define TOLL_WAIT_MARK_TTL_MS      "10000"

/* a buyer's free calls granted, per service (hash) */
#define TOLL_NAME_FREE_PREFIX      "toll:free:{"
/* a limit subject's windows of every node (hash) */
#define TOLL_NAME_LIMIT_PREFIX     "toll:rl:{"

/*
 * A buyer's prepaid balances (hash): "toll:balance:{<buyer>}", fields
 * "<CUR>:<field>" below; after it, ":refs" (hash: ref -> "<kind> <CUR>
 * <micros> <unix>", every credit, debit and refund ever made, for
 * idempotency) and ":journal" (set: refs not yet in the ledger).
 * docs/metering.md#prepaid-balances.
 */
#define TOLL_NAME_BALANCE_PREFIX   "toll:balance:{"
#define TOLL_NAME_BALANCE_REFS     ":refs"
#define TOLL_NAME_BALANCE_JOURNAL  ":journal"
/* the buyers whose journal toll-settle has to post (a set of buyers) */
#define TOLL_NAME_BALANCE_INDEX    "toll:balance:index"

/*
 * A balance's fields after "<CUR>:".  Always, to the micro-unit:
 * credits - debits = available + held + spent.
 */
#define TOLL_BALANCE_AVAILABLE     "available"  /* not held by any node */
#define TOLL_BALANCE_HELD          "held"       /* the sum of the holds */
#define TOLL_BALANCE_SPENT         "spent"      /* charged, as metered */
#define TOLL_BALANCE_CREDITS       "credits"    /* credited, ever */
#define TOLL_BALANCE_DEBITS        "debits"     /* debited and refunded */
#define TOLL_BALANCE_HOLD          "hold:"      /* + node: what it holds */
#define TOLL_BALANCE_SEEN          "seen:"      /* + node: Redis's unix
                                                   time it last asked */

/*
 * A buyer's spend caps (hash): "toll:cap:{<buyer>}", fields
 * "<CUR>:daily", "<CUR>:monthly" (the buyer's), "key:<key_id>:<CUR>:daily"
 * and "...:monthly" (a key's), "anchor" (the month's first day, 1..28);
 * amounts in micro-units.  After it, a period's hash: ":d<YYYYMMDD>" (a
 * UTC day) or ":m<YYYYMMDD>" (the month that starts that day), fields
 * "<CUR>:used" and "key:<key_id>:<CUR>:used": what nodes leased of the
 * caps in the period, and "<CUR>:full", "key:<key_id>:<CUR>:full" = 1
 * once lua/cap.lua found the cap without room for a call (toll-settle's
 * 100 % alert).  docs/metering.md#spend-caps.
 */
#define TOLL_NAME_CAP_PREFIX       "toll:cap:{"
#define TOLL_NAME_CAP_DAY          ":d"
#define TOLL_NAME_CAP_MONTH        ":m"
/* bumped by every change of any cap: the nodes re-read theirs (string) */
#define TOLL_NAME_CAP_GEN          "toll:cap:gen"
#define TOLL_CAP_DAILY             "daily"
#define TOLL_CAP_MONTHLY           "monthly"
#define TOLL_CAP_USED              "used"
#define TOLL_CAP_FULL              "full"       /* no room left: 100 % */
#define TOLL_CAP_KEY               "key:"       /* + key id + ":" + CUR */
#define TOLL_CAP_ANCHOR            "anchor"
#define TOLL_CAP_ANCHOR_MAX        28
/* a period's hash outlives its period: a day's by a day, a month's
   (31 days at most) by one more month, from its last write */
#define TOLL_TTL_CAP_MONTH         5356800       /* 62 days */

/*
 * A buyer's record (hash): "toll:buyer:{<buyer>}", field "plan": the plan
 * of its callers whose credential names none (tollctl buyer set-plan;
 * docs/limits.md#per-buyer).
 */
#define TOLL_NAME_BUYER_PREFIX     "toll:buyer:{"
#define TOLL_BUYER_PLAN            "plan"

/*
 * A JWKS that toll-settle fetched (settle/toll_settle_jwks.c), one hash
 * per name of a "jwks" line: "keys" the accepted set (compact JSON, never
 * empty), "gen" bumped by each change of it, "fetched" the last good
 * fetch (unix ms).  The workers poll "gen" (docs/jwt.md, "Fetched key
 * sets").  A name is 1 to 64 of [A-Za-z0-9_.-].
 */
#define TOLL_NAME_JWKS_PREFIX      "toll:jwks:{"
#define TOLL_JWKS_KEYS             "keys"
#define TOLL_JWKS_GEN              "gen"
#define TOLL_JWKS_FETCHED          "fetched"
#define TOLL_JWKS_NAME_LEN_MAX     64

#define TOLL_NAME_TAG_END          "}"

#define TOLL_NAME_DAY_LEN          8        /* YYYYMMDD */
#define TOLL_NAME_BATCH_LEN        32       /* a flush or claim id */
/*
 * The longest buyer a usage or claim name holds: a usage hash's name is
 * then at most 1,024 bytes, and every hash the drain may claim has a
 * claim name and a mirror name that the readers take too.
 */
#define TOLL_NAME_BUYER_LEN_MAX    1002

/* a number above as a string literal, for a command's argument */
#define TOLL_STR(n)                TOLL_STR_(n)
#define TOLL_STR_(n)               #n

/* the length of a prefix or suffix above */
#define toll_name_len(s)           (sizeof(s) - 1)

/* "toll:usage:{" b "}:" day, with room for ":drained" */
#define TOLL_NAME_USAGE_LEN(blen)                                            \
    (toll_name_len(TOLL_NAME_USAGE_PREFIX) + (blen) + 2                      \
     + TOLL_NAME_DAY_LEN + toll_name_len(TOLL_NAME_USAGE_MIRROR))
/* "toll:cap:{" b "}:d" day, or ":m" day */
#define TOLL_NAME_CAP_LEN(blen)                                              \
    (toll_name_len(TOLL_NAME_CAP_PREFIX) + (blen) + 1                        \
     + toll_name_len(TOLL_NAME_CAP_DAY) + TOLL_NAME_DAY_LEN)
/* "toll:drain:{" b "}:" day ":" id */
#define TOLL_NAME_CLAIM_LEN(blen)                                            \
    (toll_name_len(TOLL_NAME_DRAIN_PREFIX) + (blen) + 3                      \
     + TOLL_NAME_DAY_LEN + TOLL_NAME_BATCH_LEN)
/* the longest name of those: a claim's */
#define TOLL_NAME_LEN_MAX          TOLL_NAME_CLAIM_LEN(TOLL_NAME_BUYER_LEN_MAX)


/*
 * TTLs, in seconds.  The meter keeps a buyer's flush ids 7 days, so that
 * a batch sent again within them is known; their set lives a day longer.
 * The mirror of drained usage outlives the flush ids: a day read by
 * toll_usage or tollctl reconcile shows its drained calls as long as a
 * late batch of it could still arrive.
 */
#define TOLL_TTL_FLUSH_IDS         604800        /* 7 days */
#define TOLL_TTL_FLUSHES           691200        /* 8 days */
#define TOLL_TTL_MIRROR            3024000       /* 35 days */


/*
 * A usage hash holds, per service, "<service>:<field>": eight counts as
 * int64 decimal strings, the service's provider and its currency.
 */
typedef enum {
    TOLL_USAGE_CALLS = 0,
    TOLL_USAGE_FREE_CALLS,
    TOLL_USAGE_PAID_CALLS,
    TOLL_USAGE_AMOUNT,          /* amount_micros */
    TOLL_USAGE_ERRORS,
    TOLL_USAGE_LATENCY,         /* latency_ms */
    TOLL_USAGE_PREPAID,         /* prepaid_micros: of amount_micros, what
                                   the buyer's balance paid */
    TOLL_USAGE_UNITS,           /* units the calls were charged for */
    TOLL_USAGE_COUNTS,          /* the number of counts */
    TOLL_USAGE_PROVIDER = TOLL_USAGE_COUNTS,
    TOLL_USAGE_CURRENCY,        /* the service's currency */
    TOLL_USAGE_FIELDS
} toll_usage_field_e;

/* the fields' names, without the ':': "calls" ... "currency" */
#define TOLL_USAGE_PROVIDER_NAME   "provider"
#define TOLL_USAGE_CURRENCY_NAME   "currency"
extern const char *const  toll_usage_fields[TOLL_USAGE_FIELDS];


/* a usage or claim name taken apart; buyer points into the name */
typedef struct {
    const char  *buyer;
    size_t       buyer_len;
    char         day[TOLL_NAME_DAY_LEN + 1];
    char         batch[TOLL_NAME_BATCH_LEN + 1];   /* claims only */
    int          mirror;                           /* ":drained" */
} toll_name_t;


/*
 * The builders write at p, without a NUL, and return the end, as nginx's
 * ngx_cpymem() does; the caller sizes the buffer with the macros above.
 */

/* prefix + subject + "}": a key record, free tier or limit hash */
char *toll_name_tagged(char *p, const char *prefix, const char *subject,
    size_t len);
/* "toll:balance:{<buyer>}" + suffix ("", ":refs", ":journal") */
char *toll_name_balance(char *p, const char *buyer, size_t len,
    const char *suffix);

/* "toll:cap:{<buyer>}" + suffix ("", ":d<YYYYMMDD>", ":m<YYYYMMDD>") */
char *toll_name_cap(char *p, const char *buyer, size_t len,
    const char *suffix);
/*
 * A period's hash: "toll:cap:{<buyer>}:d<day>" (month 0) or ":m<day>"
 * (month 1, day the month's start); TOLL_NAME_CAP_LEN(blen) bytes at most
 */
char *toll_name_cap_period(char *p, const char *buyer, size_t len,
    int month, const char *day);
/* "toll:usage:{<buyer>}" + suffix (":days", ":flushes", ":" ...) */
char *toll_name_buyer(char *p, const char *buyer, size_t len,
    const char *suffix);
/* "toll:usage:{<buyer>}:<day>", day being TOLL_NAME_DAY_LEN digits */
char *toll_name_usage(char *p, const char *buyer, size_t len,
    const char *day);
/* "toll:drain:{<buyer>}:<day>:<batch>" */
char *toll_name_claim(char *p, const char *buyer, size_t len,
    const char *day, const char *batch);

/*
 * Takes apart a usage hash's name or its mirror's (n->mirror), or a
 * claim's.  A buyer is 1 to TOLL_NAME_BUYER_LEN_MAX bytes, and holds no
 * '\n' (it is logged, and listed a line each) and no NUL (it becomes a C
 * string).  Returns 0, or -1 for any other name.
 */
int toll_name_usage_parse(const char *name, size_t len, toll_name_t *n);
/* "toll:balance:{<buyer>}": 0 and the buyer (pointing into name), or -1 */
int toll_name_balance_parse(const char *name, size_t len,
    const char **buyer, size_t *buyer_len);
/*
 * a buyer as every reader takes one: 1 to 1,002 bytes, no '\n' or NUL,
 * not '}' first (an empty hash tag)
 */
int toll_name_buyer_valid(const char *s, size_t len);
int toll_name_claim_parse(const char *name, size_t len, toll_name_t *n);
/* a "jwks" set's name: 1 to 64 of [A-Za-z0-9_.-] */
int toll_name_jwks_valid(const char *s, size_t len);

/*
 * Takes apart a usage hash's field "<service>:<field>" at its last ':':
 * returns the field (a toll_usage_field_e) and sets *service_len, or -1
 * when the field is unknown or the service empty.
 */
int toll_usage_field_parse(const char *f, size_t len, size_t *service_len);

/*
 * A name as a log line may hold it, NUL-terminated in dst: printable
 * ASCII as it is, '\\' and every other byte as \xHH, cut with "..." to
 * fit TOLL_NAME_TEXT_MAX bytes.  Anything may have written a key.
 */
#define TOLL_NAME_TEXT_MAX         256

void toll_name_text(char dst[TOLL_NAME_TEXT_MAX], const char *name,
    size_t len);


#endif /* _TOLL_NAMES_H_INCLUDED_ */
