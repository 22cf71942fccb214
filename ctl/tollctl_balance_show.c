/*
 * tollctl balance show: a buyer's prepaid balances as Redis holds them
 * (docs/tollctl.md, "balance show").
 *
 * One HGETALL of toll:balance:{<buyer>}, taken apart per currency, and
 * the invariant the scripts keep checked in int64 arithmetic that says
 * when it overflows: credits - debits = available + held + spent.  The
 * hash is read, never mended: a field tollctl does not know is refused
 * by name, since sums without it would mislead.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "toll_key.h"
#include "toll_money.h"
#include "toll_names.h"
#include "toll_parse.h"
#include "tollctl.h"
#include "tollctl_balance.h"


/* the totals of one currency that "show" reads */
typedef enum {
    TOLLCTL_BAL_AVAILABLE = 0,
    TOLLCTL_BAL_HELD,
    TOLLCTL_BAL_SPENT,
    TOLLCTL_BAL_CREDITS,
    TOLLCTL_BAL_DEBITS,
    TOLLCTL_BAL_N
} tollctl_bal_e;


static const char *const  tollctl_bal_fields[TOLLCTL_BAL_N] = {
    TOLL_BALANCE_AVAILABLE,
    TOLL_BALANCE_HELD,
    TOLL_BALANCE_SPENT,
    TOLL_BALANCE_CREDITS,
    TOLL_BALANCE_DEBITS
};


typedef struct {
    char              currency[TOLL_MONEY_CURRENCY_LEN_MAX + 1];
    int64_t           v[TOLLCTL_BAL_N];
    json_t           *nodes;         /* node -> {"node","amount","seen"} */
} tollctl_bal_t;


typedef struct {
    const char       *filter;        /* --currency, or NULL: every one */
    char              name[TOLL_NAME_TEXT_MAX];   /* for messages */
    tollctl_bal_t    *bal;
    size_t            n;
} tollctl_show_t;


static int tollctl_show_read(tollctl_show_t *s, const redisReply *all);
static int tollctl_show_field(tollctl_show_t *s, const redisReply *f,
    const redisReply *v);
static tollctl_bal_t *tollctl_show_currency(tollctl_show_t *s,
    const char *cur, size_t len);
static int tollctl_show_node(tollctl_bal_t *b, const char *node,
    size_t len, int hold, int64_t v);
static int tollctl_show_print(tollctl_show_t *s, const char *buyer);
static json_t *tollctl_show_balance(const tollctl_bal_t *b);
static json_t *tollctl_show_holds(json_t *nodes);
static int tollctl_bal_consistent(const int64_t *v);
static int tollctl_bal_cmp(const void *a, const void *b);
static int tollctl_str_cmp(const void *a, const void *b);


int
tollctl_balance_show(tollctl_t *ctl, tollctl_opts_t *o)
{
    int             rc;
    char           *p, name[TOLLCTL_BALANCE_NAME_LEN];
    size_t          i, len;
    redisReply     *all;
    tollctl_cmd_t   cmd;
    tollctl_show_t  s;

    memset(&s, 0, sizeof(tollctl_show_t));

    rc = tollctl_balance_buyer_check(o->args[0]);
    if (rc != EX_OK) {
        return rc;
    }

    s.filter = o->opt[TOLLCTL_OPT_CURRENCY];

    if (s.filter != NULL) {
        rc = tollctl_balance_currency_check(s.filter);
        if (rc != EX_OK) {
            return rc;
        }
    }

    rc = tollctl_connect(ctl);
    if (rc != EX_OK) {
        return rc;
    }

    p = toll_name_balance(name, o->args[0], strlen(o->args[0]), "");
    len = (size_t) (p - name);
    toll_name_text(s.name, name, len);

    tollctl_cmd_init(&cmd, "HGETALL");
    tollctl_cmd_add(&cmd, name, len);

    all = tollctl_redis_run(ctl, &cmd);
    if (all == NULL) {
        return EX_UNAVAILABLE;
    }

    rc = tollctl_show_read(&s, all);

    if (rc == EX_OK) {
        rc = tollctl_show_print(&s, o->args[0]);
    }

    for (i = 0; i < s.n; i++) {
        json_decref(s.bal[i].nodes);
    }

    free(s.bal);
    freeReplyObject(all);

    return rc;
}


static int
tollctl_show_read(tollctl_show_t *s, const redisReply *all)
{
    int     rc;
    size_t  i;

    if (all->type != REDIS_REPLY_ARRAY || all->elements % 2) {
        return tollctl_error(EX_UNAVAILABLE, "HGETALL %s: unexpected reply",
                             s->name);
    }

    /* at most a currency per field */
    s->bal = calloc(all->elements / 2 + 1, sizeof(tollctl_bal_t));
    if (s->bal == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    for (i = 0; i < all->elements; i += 2) {
        rc = tollctl_show_field(s, all->element[i], all->element[i + 1]);
        if (rc != EX_OK) {
            return rc;
        }
    }

    return EX_OK;
}


/*
 * "<CUR>:<total>", "<CUR>:hold:<node>" or "<CUR>:seen:<node>", each an
 * int64 as HINCRBY and HSET leave it.  Anything else means the hash was
 * written by something that does not keep the invariant: shown as an
 * error, not skipped, since the sums would mislead.
 */
static int
tollctl_show_field(tollctl_show_t *s, const redisReply *f,
    const redisReply *v)
{
    int             i;
    char            digits[TOLLCTL_INT_STR_LEN];
    char            ftext[TOLL_NAME_TEXT_MAX], vtext[TOLL_NAME_TEXT_MAX];
    size_t          clen, rlen;
    int64_t         n;
    const char     *colon, *rest;
    tollctl_bal_t  *b;

    if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
        return tollctl_error(EX_UNAVAILABLE, "HGETALL %s: unexpected reply",
                             s->name);
    }

    toll_name_text(ftext, f->str, f->len);

    colon = memchr(f->str, ':', f->len);
    clen = (colon != NULL) ? (size_t) (colon - f->str) : 0;

    if (colon == NULL || !toll_money_currency_valid(f->str, clen)) {
        goto unknown;
    }

    /* another currency's field, damaged or not, is not this answer's */
    if (s->filter != NULL
        && (clen != strlen(s->filter)
            || memcmp(f->str, s->filter, clen) != 0))
    {
        return EX_OK;
    }

    if (v->len >= sizeof(digits)) {
        goto not_int;
    }

    memcpy(digits, v->str, v->len);
    digits[v->len] = '\0';

    if (memchr(v->str, '\0', v->len) != NULL
        || toll_parse_int64(digits, INT64_MIN, INT64_MAX, &n) != 0)
    {
        goto not_int;
    }

    b = tollctl_show_currency(s, f->str, clen);
    if (b == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    rest = colon + 1;
    rlen = f->len - clen - 1;

    for (i = 0; i < TOLLCTL_BAL_N; i++) {
        if (rlen == strlen(tollctl_bal_fields[i])
            && memcmp(rest, tollctl_bal_fields[i], rlen) == 0)
        {
            b->v[i] = n;
            return EX_OK;
        }
    }

    if (rlen > toll_name_len(TOLL_BALANCE_HOLD)
        && memcmp(rest, TOLL_BALANCE_HOLD, toll_name_len(TOLL_BALANCE_HOLD))
           == 0)
    {
        i = tollctl_show_node(b, rest + toll_name_len(TOLL_BALANCE_HOLD),
                              rlen - toll_name_len(TOLL_BALANCE_HOLD), 1, n);

    } else if (rlen > toll_name_len(TOLL_BALANCE_SEEN)
               && memcmp(rest, TOLL_BALANCE_SEEN,
                         toll_name_len(TOLL_BALANCE_SEEN))
                  == 0)
    {
        i = tollctl_show_node(b, rest + toll_name_len(TOLL_BALANCE_SEEN),
                              rlen - toll_name_len(TOLL_BALANCE_SEEN), 0, n);

    } else {
        goto unknown;
    }

    if (i == -1) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    if (i == 0) {
        goto unknown;
    }

    return EX_OK;

unknown:

    return tollctl_error(EX_DATAERR,
                         "%s: field \"%s\" is not a balance's "
                         "(<CUR>:available, held, spent, credits, debits, "
                         "hold:<node>, seen:<node>): something else wrote "
                         "it; remove it, or mend it, to read the balance",
                         s->name, ftext);

not_int:

    toll_name_text(vtext, v->str, v->len);

    return tollctl_error(EX_DATAERR,
                         "%s: field \"%s\" holds \"%s\", not an int64 of "
                         "micro-units: something else wrote it; mend it "
                         "to read the balance", s->name, ftext, vtext);
}


static tollctl_bal_t *
tollctl_show_currency(tollctl_show_t *s, const char *cur, size_t len)
{
    size_t          i;
    tollctl_bal_t  *b;

    for (i = 0; i < s->n; i++) {
        if (strlen(s->bal[i].currency) == len
            && memcmp(s->bal[i].currency, cur, len) == 0)
        {
            return &s->bal[i];
        }
    }

    b = &s->bal[s->n];

    b->nodes = json_object();
    if (b->nodes == NULL) {
        return NULL;
    }

    s->n++;
    memcpy(b->currency, cur, len);
    b->currency[len] = '\0';

    return b;
}


/*
 * A node's hold (hold) or when it last asked; a node may have one
 * without the other.  Returns 1, 0 for a node's id that is not visible
 * ASCII (the module writes hex), or -1 out of memory.
 */
static int
tollctl_show_node(tollctl_bal_t *b, const char *node, size_t len, int hold,
    int64_t v)
{
    char     id[TOLL_OWNER_LEN_MAX + 1], amount[TOLL_MONEY_STR_MAX];
    json_t  *e, *value;

    if (!toll_owner_valid((const unsigned char *) node, len)) {
        return 0;
    }

    memcpy(id, node, len);
    id[len] = '\0';

    e = json_object_get(b->nodes, id);

    if (e == NULL) {
        e = json_pack("{s:s,s:s,s:n}", "node", id, "amount", "0", "seen");
        if (e == NULL || json_object_set_new(b->nodes, id, e) != 0) {
            return -1;
        }
    }

    if (hold) {
        (void) toll_money_format(v, amount);
        value = json_string(amount);

    } else {
        value = json_integer((json_int_t) v);
    }

    if (value == NULL
        || json_object_set_new(e, hold ? "amount" : "seen", value) != 0)
    {
        return -1;
    }

    return 1;
}


static int
tollctl_show_print(tollctl_show_t *s, const char *buyer)
{
    int      rc;
    size_t   i;
    json_t  *out, *list, *one;

    qsort(s->bal, s->n, sizeof(tollctl_bal_t), tollctl_bal_cmp);

    list = json_array();
    out = json_pack("{s:s,s:o}", "buyer", buyer, "balances", list);

    if (out == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    rc = EX_OK;

    for (i = 0; i < s->n; i++) {
        one = tollctl_show_balance(&s->bal[i]);

        if (one == NULL) {
            rc = tollctl_error(EX_OSERR, "out of memory");
            break;
        }

        if (json_is_string(one)) {
            /* available + held does not fit: the hash is damaged */
            rc = tollctl_error(EX_DATAERR, "%s: %s available + held is "
                               "more than an int64 holds: something else "
                               "wrote it; mend it to read the balance",
                               s->name, s->bal[i].currency);
            json_decref(one);
            break;
        }

        if (json_array_append_new(list, one) != 0) {
            rc = tollctl_error(EX_OSERR, "out of memory");
            break;
        }
    }

    if (rc == EX_OK) {
        rc = tollctl_print_json(out);
    }

    json_decref(out);

    return rc;
}


/* a currency's object, NULL out of memory, or a string on overflow */
static json_t *
tollctl_show_balance(const tollctl_bal_t *b)
{
    int      i;
    char     amount[TOLL_MONEY_STR_MAX];
    json_t  *e, *holds;
    int64_t  balance;

    if (toll_money_add(b->v[TOLLCTL_BAL_AVAILABLE], b->v[TOLLCTL_BAL_HELD],
                       &balance)
        != TOLL_MONEY_OK)
    {
        return json_string("overflow");
    }

    (void) toll_money_format(balance, amount);

    e = json_pack("{s:s,s:s}", "currency", b->currency, "balance", amount);
    if (e == NULL) {
        return NULL;
    }

    for (i = 0; i < TOLLCTL_BAL_N; i++) {
        (void) toll_money_format(b->v[i], amount);

        if (json_object_set_new(e, tollctl_bal_fields[i],
                                json_string(amount))
            != 0)
        {
            json_decref(e);
            return NULL;
        }
    }

    holds = tollctl_show_holds(b->nodes);

    if (holds == NULL
        || json_object_set_new(e, "consistent",
                               json_boolean(tollctl_bal_consistent(b->v)))
           != 0
        || json_object_set_new(e, "holds", holds) != 0)
    {
        json_decref(e);
        return NULL;
    }

    return e;
}


/* the nodes' holds as an array, by node */
static json_t *
tollctl_show_holds(json_t *nodes)
{
    size_t        i, n;
    json_t       *holds, *value;
    const char   *key, **keys;

    n = json_object_size(nodes);
    keys = calloc(n + 1, sizeof(const char *));
    holds = json_array();

    if (keys == NULL || holds == NULL) {
        free(keys);
        json_decref(holds);
        return NULL;
    }

    i = 0;

    json_object_foreach(nodes, key, value) {
        keys[i++] = key;
    }

    qsort(keys, n, sizeof(const char *), tollctl_str_cmp);

    for (i = 0; i < n; i++) {
        if (json_array_append(holds, json_object_get(nodes, keys[i])) != 0) {
            json_decref(holds);
            holds = NULL;
            break;
        }
    }

    free(keys);

    return holds;
}


/* credits - debits = available + held + spent, every step checked */
static int
tollctl_bal_consistent(const int64_t *v)
{
    int64_t  in, out;

    if (v[TOLLCTL_BAL_DEBITS] == INT64_MIN
        || toll_money_add(v[TOLLCTL_BAL_CREDITS], -v[TOLLCTL_BAL_DEBITS],
                          &in)
           != TOLL_MONEY_OK
        || toll_money_add(v[TOLLCTL_BAL_AVAILABLE], v[TOLLCTL_BAL_HELD],
                          &out)
           != TOLL_MONEY_OK
        || toll_money_add(out, v[TOLLCTL_BAL_SPENT], &out) != TOLL_MONEY_OK)
    {
        return 0;
    }

    return in == out;
}


static int
tollctl_bal_cmp(const void *a, const void *b)
{
    return strcmp(((const tollctl_bal_t *) a)->currency,
                  ((const tollctl_bal_t *) b)->currency);
}


static int
tollctl_str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}
