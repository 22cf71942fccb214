/*
 * tollctl buyer set-cap | show: a buyer's spend caps in Redis, and what
 * the current day and month count as used (docs/tollctl.md, "Spend
 * caps"; docs/metering.md, "Spend caps").
 *
 * Caps live in the buyer's hash "toll:cap:{<buyer>}" (lib/toll_names.h),
 * the buyer's and its keys' alike; every change bumps "toll:cap:gen" in
 * the same transaction, which every nginx reads once a second to learn
 * that its cached caps are stale.  Every value is checked before Redis
 * is contacted, so that a refused command writes nothing.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "toll_key.h"
#include "toll_money.h"
#include "toll_names.h"
#include "toll_parse.h"
#include "tollctl.h"
#include "tollctl_buyer.h"


#define TOLLCTL_CAP_CURRENCY_DEFAULT  "USD"

/* a period hash's name: the cap hash's, ":d" or ":m", YYYYMMDD */
#define TOLLCTL_CAP_PERIOD_LEN                                                \
    (sizeof(TOLL_NAME_CAP_PREFIX) + TOLL_OWNER_LEN_MAX + 2                   \
     + TOLL_NAME_DAY_LEN + 1)


/* a day as YYYYMMDD, with room for what the compiler cannot rule out */
#define TOLLCTL_CAP_DAY_BUF           32


static size_t tollctl_caps_cmds(tollctl_caps_t *c, const char *buyer,
    const char *key_id, tollctl_cmd_t *cmds);
static int tollctl_cap_amount(const char *opt, const char *name,
    int64_t *out);
static void tollctl_cap_periods(int64_t anchor, char *day, char *month);
static json_t *tollctl_cap_list(redisReply *caps, redisReply *day,
    redisReply *month, const char *currency);
static int tollctl_cap_add(json_t *list, const char *f, size_t len,
    const char *value, redisReply *day, redisReply *month,
    const char *currency);
static int64_t tollctl_cap_used(redisReply *hash, const char *field,
    size_t len);
static json_t *tollctl_cap_money(int64_t micros);
static const char *tollctl_cap_colon(const char *s, size_t len);


int
tollctl_buyer_set_cap(tollctl_t *ctl, tollctl_opts_t *o)
{
    int             rc;
    const char     *buyer;
    tollctl_caps_t  c;

    buyer = o->args[0];

    if (o->opt[TOLLCTL_OPT_DAILY] == NULL
        && o->opt[TOLLCTL_OPT_MONTHLY] == NULL
        && o->opt[TOLLCTL_OPT_ANCHOR] == NULL)
    {
        return tollctl_usage_error("\"buyer set-cap\" needs --daily, "
                                   "--monthly or --anchor");
    }

    if (!toll_owner_valid((const unsigned char *) buyer, strlen(buyer))) {
        return tollctl_error(EX_DATAERR,
                             "invalid BUYER: use 1 to %d visible ASCII "
                             "characters, no spaces, not '}' first (it would "
                             "empty the Redis hash tag)", TOLL_OWNER_LEN_MAX);
    }

    rc = tollctl_caps_check(&c, o->opt[TOLLCTL_OPT_CURRENCY],
                            o->opt[TOLLCTL_OPT_DAILY],
                            o->opt[TOLLCTL_OPT_MONTHLY], "--daily",
                            "--monthly");
    if (rc != EX_OK) {
        return rc;
    }

    if (o->opt[TOLLCTL_OPT_ANCHOR] != NULL
        && toll_parse_int64(o->opt[TOLLCTL_OPT_ANCHOR], 1,
                            TOLL_CAP_ANCHOR_MAX, &c.anchor)
           != 0)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid --anchor \"%s\": use a day of the "
                             "month from 1 to %d", o->opt[TOLLCTL_OPT_ANCHOR],
                             TOLL_CAP_ANCHOR_MAX);
    }

    rc = tollctl_connect(ctl);
    if (rc != EX_OK) {
        return rc;
    }

    if (tollctl_caps_write(ctl, &c, buyer, NULL) != EX_OK) {
        return EX_UNAVAILABLE;
    }

    return tollctl_buyer_show(ctl, o);
}


int
tollctl_caps_check(tollctl_caps_t *c, const char *currency,
    const char *daily_opt, const char *monthly_opt, const char *daily_name,
    const char *monthly_name)
{
    memset(c, 0, sizeof(tollctl_caps_t));

    c->currency = currency ? currency : TOLLCTL_CAP_CURRENCY_DEFAULT;

    if (!toll_money_currency_valid(c->currency, strlen(c->currency))) {
        return tollctl_error(EX_DATAERR,
                             "invalid --currency \"%s\": use 3 to %d "
                             "upper-case letters and digits, a letter "
                             "first (USD)", c->currency,
                             TOLL_MONEY_CURRENCY_LEN_MAX);
    }

    if (tollctl_cap_amount(daily_opt, daily_name, &c->daily) != EX_OK
        || tollctl_cap_amount(monthly_opt, monthly_name, &c->monthly)
           != EX_OK)
    {
        return EX_DATAERR;
    }

    return EX_OK;
}


/* an amount ("10.50", 0 stops all spending) or "none" */
static int
tollctl_cap_amount(const char *opt, const char *name, int64_t *out)
{
    int  err;

    *out = TOLLCTL_CAP_UNSET;

    if (opt == NULL) {
        return EX_OK;
    }

    if (strcmp(opt, "none") == 0) {
        *out = TOLLCTL_CAP_NONE;
        return EX_OK;
    }

    err = toll_money_parse(opt, strlen(opt), out);

    if (err != TOLL_MONEY_OK) {
        *out = TOLLCTL_CAP_UNSET;
        return tollctl_error(EX_DATAERR, "invalid %s \"%s\": %s; use an "
                             "amount such as 10.50, or none", name, opt,
                             toll_money_strerror(err));
    }

    return EX_OK;
}


/*
 * Two steps, each in one slot (docs/redis.md "Slots"): the cap hash's
 * HSET and HDEL in one transaction, then the generation's INCR, which
 * tells the nodes to read their caps again.  Interrupted between them,
 * the caps are written and the nodes learn of them with the next change
 * of any cap: the command failed, and running it again is harmless.
 */
int
tollctl_caps_write(tollctl_t *ctl, tollctl_caps_t *c, const char *buyer,
    const char *key_id)
{
    size_t          n;
    redisReply     *reply;
    tollctl_cmd_t   cmds[2], gen;

    n = tollctl_caps_cmds(c, buyer, key_id, cmds);

    if (n) {
        reply = tollctl_redis_exec(ctl, cmds, n);
        if (reply == NULL) {
            return EX_UNAVAILABLE;
        }

        freeReplyObject(reply);
    }

    tollctl_cmd_init(&gen, "INCR");
    tollctl_cmd_add_str(&gen, TOLL_NAME_CAP_GEN);

    reply = tollctl_redis_run(ctl, &gen);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    freeReplyObject(reply);

    return EX_OK;
}


static size_t
tollctl_caps_cmds(tollctl_caps_t *c, const char *buyer, const char *key_id,
    tollctl_cmd_t *cmds)
{
    int          i;
    size_t       n;
    int64_t      v[2];
    const char  *period[2] = { TOLL_CAP_DAILY, TOLL_CAP_MONTHLY };

    snprintf(c->name, sizeof(c->name), "%s%s%s", TOLL_NAME_CAP_PREFIX, buyer,
             TOLL_NAME_TAG_END);

    v[0] = c->daily;
    v[1] = c->monthly;

    tollctl_cmd_init(&cmds[0], "HSET");
    tollctl_cmd_add_str(&cmds[0], c->name);
    tollctl_cmd_init(&cmds[1], "HDEL");
    tollctl_cmd_add_str(&cmds[1], c->name);

    for (i = 0; i < 2; i++) {
        if (key_id) {
            snprintf(c->field[i], sizeof(c->field[i]), "%s%s:%s:%s",
                     TOLL_CAP_KEY, key_id, c->currency, period[i]);

        } else {
            snprintf(c->field[i], sizeof(c->field[i]), "%s:%s",
                     c->currency, period[i]);
        }

        if (v[i] == TOLLCTL_CAP_NONE) {
            tollctl_cmd_add_str(&cmds[1], c->field[i]);

        } else if (v[i] >= 0) {
            snprintf(c->value[i], sizeof(c->value[i]), "%lld",
                     (long long) v[i]);
            tollctl_cmd_add_str(&cmds[0], c->field[i]);
            tollctl_cmd_add_str(&cmds[0], c->value[i]);
        }
    }

    if (c->anchor) {
        snprintf(c->value[2], sizeof(c->value[2]), "%lld",
                 (long long) c->anchor);
        tollctl_cmd_add_str(&cmds[0], TOLL_CAP_ANCHOR);
        tollctl_cmd_add_str(&cmds[0], c->value[2]);
    }

    /* HSET or HDEL with nothing to do is dropped */

    n = 0;

    for (i = 0; i < 2; i++) {
        if (cmds[i].argc > 2) {
            cmds[n++] = cmds[i];
        }
    }

    return n;
}


int
tollctl_buyer_show(tollctl_t *ctl, tollctl_opts_t *o)
{
    int             rc;
    char            day[TOLLCTL_CAP_DAY_BUF], month[TOLLCTL_CAP_DAY_BUF];
    char            name[TOLLCTL_CAP_PERIOD_LEN];
    char            dname[TOLLCTL_CAP_PERIOD_LEN + 2 * TOLLCTL_CAP_DAY_BUF];
    char            mname[TOLLCTL_CAP_PERIOD_LEN + 2 * TOLLCTL_CAP_DAY_BUF];
    size_t          i;
    int64_t         anchor;
    json_t         *out, *list;
    const char     *buyer, *currency;
    redisReply     *caps, *periods[2];
    tollctl_cmd_t   cmd, cmds[2];

    buyer = o->args[0];
    currency = o->opt[TOLLCTL_OPT_CURRENCY];

    if (!toll_owner_valid((const unsigned char *) buyer, strlen(buyer))) {
        return tollctl_error(EX_DATAERR,
                             "invalid BUYER: use 1 to %d visible ASCII "
                             "characters, no spaces, not '}' first (it would "
                             "empty the Redis hash tag)", TOLL_OWNER_LEN_MAX);
    }

    if (currency && !toll_money_currency_valid(currency, strlen(currency))) {
        return tollctl_error(EX_DATAERR, "invalid --currency \"%s\"",
                             currency);
    }

    rc = tollctl_connect(ctl);
    if (rc != EX_OK) {
        return rc;
    }

    snprintf(name, sizeof(name), "%s%s%s", TOLL_NAME_CAP_PREFIX, buyer,
             TOLL_NAME_TAG_END);

    tollctl_cmd_init(&cmd, "HGETALL");
    tollctl_cmd_add_str(&cmd, name);

    caps = tollctl_redis_run(ctl, &cmd);
    if (caps == NULL) {
        return EX_UNAVAILABLE;
    }

    anchor = 1;

    for (i = 0; caps->type == REDIS_REPLY_ARRAY && i + 1 < caps->elements;
         i += 2)
    {
        if (strcmp(caps->element[i]->str, TOLL_CAP_ANCHOR) == 0
            && toll_parse_int64(caps->element[i + 1]->str, 1,
                                TOLL_CAP_ANCHOR_MAX, &anchor)
               != 0)
        {
            anchor = 1;
        }
    }

    tollctl_cap_periods(anchor, day, month);

    snprintf(dname, sizeof(dname), "%s%s%s", name, TOLL_NAME_CAP_DAY, day);
    snprintf(mname, sizeof(mname), "%s%s%s", name, TOLL_NAME_CAP_MONTH,
             month);

    tollctl_cmd_init(&cmds[0], "HGETALL");
    tollctl_cmd_add_str(&cmds[0], dname);
    tollctl_cmd_init(&cmds[1], "HGETALL");
    tollctl_cmd_add_str(&cmds[1], mname);

    if (tollctl_redis_pipeline(ctl, cmds, 2, periods) != 0) {
        freeReplyObject(caps);
        return EX_UNAVAILABLE;
    }

    list = tollctl_cap_list(caps, periods[0], periods[1], currency);

    freeReplyObject(caps);
    freeReplyObject(periods[0]);
    freeReplyObject(periods[1]);

    if (list == NULL) {
        return tollctl_error(EX_SOFTWARE, "out of memory");
    }

    out = json_pack("{s:s,s:I,s:s,s:s,s:o}", "buyer", buyer, "anchor",
                    (json_int_t) anchor, "day", day, "month", month,
                    "caps", list);
    if (out == NULL) {
        return tollctl_error(EX_SOFTWARE, "out of memory");
    }

    rc = tollctl_print_json(out);
    json_decref(out);

    return rc;
}


/* today (UTC) and the first day of the month it is in, from the anchor */
static void
tollctl_cap_periods(int64_t anchor, char *day, char *month)
{
    int        y, m;
    time_t     now;
    struct tm  tm;

    now = time(NULL);
    gmtime_r(&now, &tm);

    y = tm.tm_year + 1900;
    m = tm.tm_mon + 1;

    snprintf(day, TOLLCTL_CAP_DAY_BUF, "%04d%02d%02d", y, m, tm.tm_mday);

    if (tm.tm_mday < anchor) {
        m--;

        if (m == 0) {
            m = 12;
            y--;
        }
    }

    snprintf(month, TOLLCTL_CAP_DAY_BUF, "%04d%02d%02d", y, m,
             (int) anchor);
}


static json_t *
tollctl_cap_list(redisReply *caps, redisReply *day, redisReply *month,
    const char *currency)
{
    size_t       i;
    json_t      *list;
    redisReply  *f;

    list = json_array();
    if (list == NULL) {
        return NULL;
    }

    for (i = 0; caps->type == REDIS_REPLY_ARRAY && i + 1 < caps->elements;
         i += 2)
    {
        f = caps->element[i];

        if (tollctl_cap_add(list, f->str, f->len, caps->element[i + 1]->str,
                            day, month, currency)
            != 0)
        {
            json_decref(list);
            return NULL;
        }
    }

    return list;
}


/* one cap field, "[key:<id>:]<CUR>:daily|monthly", as an object */
static int
tollctl_cap_add(json_t *list, const char *f, size_t len, const char *value,
    redisReply *day, redisReply *month, const char *currency)
{
    int          monthly;
    char         used[TOLLCTL_CAP_FIELD_LEN];
    size_t       plen, klen;
    int64_t      cap, u;
    json_t      *e;
    const char  *colon, *cur, *key;

    colon = tollctl_cap_colon(f, len);
    if (colon == NULL) {
        return 0;       /* "anchor" */
    }

    monthly = (strcmp(colon + 1, TOLL_CAP_MONTHLY) == 0);

    if (!monthly && strcmp(colon + 1, TOLL_CAP_DAILY) != 0) {
        return 0;
    }

    plen = colon + 1 - f;                       /* "...<CUR>:" */
    cur = tollctl_cap_colon(f, colon - f);
    cur = cur ? cur + 1 : f;
    key = NULL;
    klen = 0;

    if (strncmp(f, TOLL_CAP_KEY, toll_name_len(TOLL_CAP_KEY)) == 0) {
        key = f + toll_name_len(TOLL_CAP_KEY);
        klen = (cur > key) ? (size_t) (cur - 1 - key) : 0;
    }

    if (currency && ((size_t) (colon - cur) != strlen(currency)
                     || strncmp(cur, currency, colon - cur) != 0))
    {
        return 0;
    }

    if (plen + sizeof(TOLL_CAP_USED) > sizeof(used)
        || toll_parse_int64(value, 0, INT64_MAX, &cap) != 0)
    {
        return 0;
    }

    memcpy(used, f, plen);
    memcpy(used + plen, TOLL_CAP_USED, sizeof(TOLL_CAP_USED));

    u = tollctl_cap_used(monthly ? month : day, used,
                         plen + toll_name_len(TOLL_CAP_USED));

    e = json_pack("{s:s,s:s#,s:s,s:o,s:I,s:o,s:I,s:o}",
                  "scope", key ? "key" : "buyer",
                  "currency", cur, (int) (colon - cur),
                  "period", monthly ? TOLL_CAP_MONTHLY : TOLL_CAP_DAILY,
                  "cap", tollctl_cap_money(cap), "cap_micros",
                  (json_int_t) cap, "used", tollctl_cap_money(u),
                  "used_micros", (json_int_t) u,
                  "remaining", tollctl_cap_money(cap > u ? cap - u : 0));

    if (e == NULL
        || (key && json_object_set_new(e, "key_id",
                                       json_stringn(key, klen)) != 0))
    {
        json_decref(e);
        return -1;
    }

    return json_array_append_new(list, e);
}


static int64_t
tollctl_cap_used(redisReply *hash, const char *field, size_t len)
{
    size_t   i;
    int64_t  v;

    for (i = 0; hash->type == REDIS_REPLY_ARRAY && i + 1 < hash->elements;
         i += 2)
    {
        if (hash->element[i]->len == len
            && memcmp(hash->element[i]->str, field, len) == 0
            && toll_parse_int64(hash->element[i + 1]->str, INT64_MIN,
                                INT64_MAX, &v) == 0)
        {
            return v;
        }
    }

    return 0;
}


/* the last ':' of s; NULL: none */
static const char *
tollctl_cap_colon(const char *s, size_t len)
{
    while (len--) {
        if (s[len] == ':') {
            return s + len;
        }
    }

    return NULL;
}


static json_t *
tollctl_cap_money(int64_t micros)
{
    char  buf[TOLL_MONEY_STR_MAX];

    toll_money_format(micros, buf);

    return json_string(buf);
}


/*
 * tollctl buyer set-plan BUYER PLAN | clear-plan BUYER: the plan of the
 * buyer's callers whose credential names none ("toll:buyer:{<buyer>}"
 * field "plan"; docs/limits.md, "Per buyer").  nginx reads it through its
 * key cache, so a change takes effect within toll_cache_ttl (and a first
 * plan within toll_cache_negative_ttl).  Prints {"buyer", "plan"}.
 */

int
tollctl_buyer_set_plan(tollctl_t *ctl, tollctl_opts_t *o)
{
    int             rc;
    char            name[sizeof(TOLL_NAME_BUYER_PREFIX) + TOLL_OWNER_LEN_MAX
                         + 1];
    json_t         *out;
    const char     *buyer, *plan;
    redisReply     *reply;
    tollctl_cmd_t   cmd;

    buyer = o->args[0];
    plan = (o->nargs > 1) ? o->args[1] : NULL;

    if (!toll_owner_valid((const unsigned char *) buyer, strlen(buyer))) {
        return tollctl_error(EX_DATAERR,
                             "invalid BUYER: use 1 to %d visible ASCII "
                             "characters, no spaces, not '}' first (it would "
                             "empty the Redis hash tag)", TOLL_OWNER_LEN_MAX);
    }

    if (plan != NULL
        && (plan[0] == '\0'
            || !toll_plan_valid((const unsigned char *) plan, strlen(plan))))
    {
        return tollctl_error(EX_DATAERR,
                             "invalid PLAN: use 1 to %d characters of "
                             "[A-Za-z0-9_.-]", TOLL_PLAN_LEN_MAX);
    }

    rc = tollctl_connect(ctl);
    if (rc != EX_OK) {
        return rc;
    }

    *toll_name_tagged(name, TOLL_NAME_BUYER_PREFIX, buyer, strlen(buyer))
        = '\0';

    tollctl_cmd_init(&cmd, plan ? "HSET" : "HDEL");
    tollctl_cmd_add_str(&cmd, name);
    tollctl_cmd_add_str(&cmd, TOLL_BUYER_PLAN);

    if (plan) {
        tollctl_cmd_add_str(&cmd, plan);
    }

    reply = tollctl_redis_run(ctl, &cmd);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    freeReplyObject(reply);

    out = plan ? json_pack("{s:s,s:s}", "buyer", buyer, "plan", plan)
               : json_pack("{s:s,s:n}", "buyer", buyer, "plan");
    if (out == NULL) {
        return tollctl_error(EX_SOFTWARE, "out of memory");
    }

    rc = tollctl_print_json(out);
    json_decref(out);

    return rc;
}
