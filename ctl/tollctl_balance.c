/*
 * tollctl balance credit | debit | refund | show: a buyer's prepaid
 * balances in Redis (docs/tollctl.md, "Balances"; docs/metering.md,
 * "Prepaid balances").
 *
 * A credit, debit or refund is one run of lua/balance.lua, which checks
 * everything, moves the money and keeps the ref in one atomic step, once
 * per ref ever: a retry whose outcome the operator did not see writes
 * nothing and prints what the first run wrote.  Every value is checked
 * before Redis is contacted, so that a refused command sends nothing.
 *
 * "show" is in tollctl_balance_show.c.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "toll_money.h"
#include "toll_names.h"
#include "toll_parse.h"
#include "toll_scripts.h"
#include "tollctl.h"
#include "tollctl_balance.h"


#define TOLLCTL_CURRENCY_DEFAULT      "USD"
#define TOLLCTL_REF_LEN_MAX           128

/* "<CUR>:available", the longest field a movement names, NUL included */
#define TOLLCTL_BALANCE_FIELD_LEN                                             \
    (TOLL_MONEY_CURRENCY_LEN_MAX + 1 + sizeof(TOLL_BALANCE_AVAILABLE))

_Static_assert(sizeof(TOLL_BALANCE_CREDITS) <= sizeof(TOLL_BALANCE_AVAILABLE)
               && sizeof(TOLL_BALANCE_DEBITS)
                  <= sizeof(TOLL_BALANCE_AVAILABLE),
               "available is the longest field a movement names");

/* a record, "<kind> <CUR> <micros> <unix>", NUL included */
#define TOLLCTL_KIND_LEN_MAX          sizeof("credit")
#define TOLLCTL_RECORD_LEN                                                    \
    (TOLLCTL_KIND_LEN_MAX + TOLL_MONEY_CURRENCY_LEN_MAX + 2                  \
     + 2 * TOLLCTL_INT_STR_LEN)

/* lua/balance.lua's answers: {code, record or amount} */
#define TOLLCTL_BALANCE_USED          0      /* the ref was used before */
#define TOLLCTL_BALANCE_WRITTEN       1
#define TOLLCTL_BALANCE_OVERFLOW      2      /* the total would overflow */
#define TOLLCTL_BALANCE_SHORT         3      /* a take > available */


/* what a credit, a debit and a refund do to a balance */
typedef struct {
    const char       *name;          /* the verb and the record's kind */
    const char       *field;         /* the total it adds to */
    const char       *op;            /* lua/balance.lua's ARGV[7] */
    const char       *to;            /* "to" or "from" the buyer */
} tollctl_kind_t;


static const tollctl_kind_t  tollctl_kinds[] = {
    { "credit", TOLL_BALANCE_CREDITS, "credit", "to" },
    { "debit",  TOLL_BALANCE_DEBITS,  "take",   "from" },
    { "refund", TOLL_BALANCE_DEBITS,  "take",   "from" }
};


/* a movement's record, as lua/balance.lua keeps it under its ref */
typedef struct {
    const tollctl_kind_t  *kind;
    char                   currency[TOLL_MONEY_CURRENCY_LEN_MAX + 1];
    int64_t                amount;       /* micro-units, > 0 */
    int64_t                created_at;   /* unix seconds */
} tollctl_record_t;


typedef struct {
    const char            *buyer;
    size_t                 buyer_len;
    const char            *ref;
    size_t                 ref_len;
    tollctl_record_t       rec;
    char                   text[TOLLCTL_RECORD_LEN];
    size_t                 text_len;
} tollctl_move_t;




static int tollctl_balance_move(tollctl_t *ctl, tollctl_opts_t *o,
    const tollctl_kind_t *kind);
static int tollctl_move_parse(tollctl_move_t *mv, tollctl_opts_t *o,
    const tollctl_kind_t *kind);
static int tollctl_index_check(tollctl_t *ctl);
static int tollctl_move_send(tollctl_t *ctl, tollctl_move_t *mv);
static int tollctl_move_answer(tollctl_t *ctl, const tollctl_move_t *mv,
    const redisReply *r);
static int tollctl_move_again(const tollctl_move_t *mv,
    const redisReply *prev);
static int tollctl_move_print(const tollctl_move_t *mv,
    const tollctl_record_t *rec, int existing);
static int tollctl_record_parse(const char *s, size_t len,
    tollctl_record_t *rec);

static int tollctl_amount_check(const char *text, int64_t *micros);
static int tollctl_ref_valid(const char *ref, size_t len);
static void tollctl_reply_amount(const redisReply *r, char *buf);



int
tollctl_balance_credit(tollctl_t *ctl, tollctl_opts_t *o)
{
    return tollctl_balance_move(ctl, o, &tollctl_kinds[0]);
}


int
tollctl_balance_debit(tollctl_t *ctl, tollctl_opts_t *o)
{
    return tollctl_balance_move(ctl, o, &tollctl_kinds[1]);
}


int
tollctl_balance_refund(tollctl_t *ctl, tollctl_opts_t *o)
{
    return tollctl_balance_move(ctl, o, &tollctl_kinds[2]);
}


static int
tollctl_balance_move(tollctl_t *ctl, tollctl_opts_t *o,
    const tollctl_kind_t *kind)
{
    int             rc;
    tollctl_move_t  mv;

    rc = tollctl_move_parse(&mv, o, kind);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_connect(ctl);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_index_check(ctl);
    if (rc != EX_OK) {
        return rc;
    }

    return tollctl_move_send(ctl, &mv);
}


/* a usage error comes before any value is checked, as in every verb */
static int
tollctl_move_parse(tollctl_move_t *mv, tollctl_opts_t *o,
    const tollctl_kind_t *kind)
{
    int          rc;
    char         text[TOLL_NAME_TEXT_MAX];
    time_t       now;
    const char  *cur;

    memset(mv, 0, sizeof(tollctl_move_t));

    mv->ref = o->opt[TOLLCTL_OPT_REF];

    if (mv->ref == NULL) {
        return tollctl_usage_error("\"balance %s\" needs --ref, a reference "
                                   "that names this %s once", kind->name,
                                   kind->name);
    }

    mv->buyer = o->args[0];
    mv->buyer_len = strlen(mv->buyer);

    rc = tollctl_balance_buyer_check(mv->buyer);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_amount_check(o->args[1], &mv->rec.amount);
    if (rc != EX_OK) {
        return rc;
    }

    cur = o->opt[TOLLCTL_OPT_CURRENCY];
    cur = (cur != NULL) ? cur : TOLLCTL_CURRENCY_DEFAULT;

    rc = tollctl_balance_currency_check(cur);
    if (rc != EX_OK) {
        return rc;
    }

    mv->ref_len = strlen(mv->ref);

    if (!tollctl_ref_valid(mv->ref, mv->ref_len)) {
        toll_name_text(text, mv->ref, mv->ref_len);
        return tollctl_error(EX_DATAERR,
                             "invalid --ref \"%s\": use 1 to %d of "
                             "A-Z a-z 0-9 . _ : @ / + = -, e.g. a "
                             "payment's id", text, TOLLCTL_REF_LEN_MAX);
    }

    now = time(NULL);
    if (now == (time_t) -1) {
        return tollctl_error(EX_OSERR, "cannot read the clock");
    }

    mv->rec.kind = kind;
    mv->rec.created_at = (int64_t) now;
    strcpy(mv->rec.currency, cur);

    mv->text_len = (size_t) snprintf(mv->text, sizeof(mv->text),
                                     "%s %s %lld %lld", kind->name, cur,
                                     (long long) mv->rec.amount,
                                     (long long) mv->rec.created_at);

    return EX_OK;
}


/*
 * An index that is not a set would refuse the SADD after the script
 * wrote the movement: a ref toll-settle would never be told of, and an
 * error after a success.  Its type is read first, as key create does.
 */
static int
tollctl_index_check(tollctl_t *ctl)
{
    int             ok;
    redisReply     *reply;
    tollctl_cmd_t   cmd;

    tollctl_cmd_init(&cmd, "TYPE");
    tollctl_cmd_add_str(&cmd, TOLL_NAME_BALANCE_INDEX);

    reply = tollctl_redis_run(ctl, &cmd);
    if (reply == NULL) {
        return EX_UNAVAILABLE;
    }

    ok = (reply->type == REDIS_REPLY_STATUS
          && (strcmp(reply->str, "set") == 0
              || strcmp(reply->str, "none") == 0));

    if (!ok) {
        tollctl_error(EX_UNAVAILABLE, "redis %s: " TOLL_NAME_BALANCE_INDEX
                      " is a %s, not a set (WRONGTYPE); make it the set of "
                      "buyers again before moving money", ctl->addr.text,
                      (reply->type == REDIS_REPLY_STATUS) ? reply->str
                                                          : "?");
    }

    freeReplyObject(reply);

    return ok ? EX_OK : EX_UNAVAILABLE;
}


/*
 * The script, sent whole (EVAL): in a pipeline a NOSCRIPT could not be
 * answered in turn.  The buyer joins toll:balance:index after the
 * script, in the same write: toll-settle, which takes a buyer out of the
 * index once its journal is posted, then never misses a ref the script
 * wrote.  A refused movement leaves the buyer in the index too; settle
 * finds an empty journal and takes it out.
 */
static int
tollctl_move_send(tollctl_t *ctl, tollctl_move_t *mv)
{
    int             rc;
    char           *p;
    char            names[3][TOLLCTL_BALANCE_NAME_LEN];
    char            field[TOLLCTL_BALANCE_FIELD_LEN];
    char            available[TOLLCTL_BALANCE_FIELD_LEN];
    char            amount[TOLLCTL_INT_STR_LEN], bound[TOLLCTL_INT_STR_LEN];
    size_t          i, lens[3];
    redisReply     *replies[2];
    tollctl_cmd_t   cmds[2];

    static const char *const  suffixes[3] = {
        "", TOLL_NAME_BALANCE_REFS, TOLL_NAME_BALANCE_JOURNAL
    };

    for (i = 0; i < 3; i++) {
        p = toll_name_balance(names[i], mv->buyer, mv->buyer_len,
                              suffixes[i]);
        lens[i] = (size_t) (p - names[i]);
    }

    snprintf(field, sizeof(field), "%s:%s", mv->rec.currency,
             mv->rec.kind->field);
    snprintf(available, sizeof(available), "%s:" TOLL_BALANCE_AVAILABLE,
             mv->rec.currency);
    snprintf(amount, sizeof(amount), "%lld", (long long) mv->rec.amount);

    /* the most the total may hold before it: checked in Lua, no number */
    snprintf(bound, sizeof(bound), "%lld",
             (long long) (INT64_MAX - mv->rec.amount));

    tollctl_cmd_init(&cmds[0], "EVAL");
    tollctl_cmd_add(&cmds[0], toll_scripts[TOLL_SCRIPT_BALANCE].text,
                    toll_scripts[TOLL_SCRIPT_BALANCE].len);
    tollctl_cmd_add_str(&cmds[0], "3");

    for (i = 0; i < 3; i++) {
        tollctl_cmd_add(&cmds[0], names[i], lens[i]);
    }

    tollctl_cmd_add(&cmds[0], mv->ref, mv->ref_len);
    tollctl_cmd_add(&cmds[0], mv->text, mv->text_len);
    tollctl_cmd_add_str(&cmds[0], field);
    tollctl_cmd_add_str(&cmds[0], amount);
    tollctl_cmd_add_str(&cmds[0], available);
    tollctl_cmd_add_str(&cmds[0], bound);
    tollctl_cmd_add_str(&cmds[0], mv->rec.kind->op);

    tollctl_cmd_init(&cmds[1], "SADD");
    tollctl_cmd_add_str(&cmds[1], TOLL_NAME_BALANCE_INDEX);
    tollctl_cmd_add(&cmds[1], mv->buyer, mv->buyer_len);

    if (tollctl_redis_pipeline(ctl, cmds, 2, replies) != 0) {
        return EX_UNAVAILABLE;
    }

    rc = tollctl_move_answer(ctl, mv, replies[0]);

    freeReplyObject(replies[0]);
    freeReplyObject(replies[1]);

    return rc;
}


static int
tollctl_move_answer(tollctl_t *ctl, const tollctl_move_t *mv,
    const redisReply *r)
{
    char                    has[TOLL_NAME_TEXT_MAX];
    char                    amount[TOLL_MONEY_STR_MAX];
    const tollctl_record_t  *rec;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2
        || r->element[0]->type != REDIS_REPLY_INTEGER
        || r->element[1]->type != REDIS_REPLY_STRING)
    {
        return tollctl_error(EX_UNAVAILABLE, "redis %s: EVAL balance: "
                             "unexpected reply", ctl->addr.text);
    }

    rec = &mv->rec;
    (void) toll_money_format(rec->amount, amount);

    switch (r->element[0]->integer) {

    case TOLLCTL_BALANCE_WRITTEN:
        return tollctl_move_print(mv, rec, 0);

    case TOLLCTL_BALANCE_USED:
        return tollctl_move_again(mv, r->element[1]);

    case TOLLCTL_BALANCE_OVERFLOW:
        tollctl_reply_amount(r->element[1], has);
        return tollctl_error(EX_DATAERR,
                             "%s of %s %s %s %s refused: its %s:%s, %s, "
                             "would pass the most an amount may be, "
                             "9223372036854.775807; nothing written",
                             rec->kind->name, amount, rec->currency,
                             rec->kind->to, mv->buyer, rec->currency,
                             rec->kind->field, has);

    case TOLLCTL_BALANCE_SHORT:
        tollctl_reply_amount(r->element[1], has);
        return tollctl_error(EX_DATAERR,
                             "%s of %s %s %s %s refused: only %s %s is "
                             "available (what nodes hold and what was spent "
                             "cannot be taken); nothing written",
                             rec->kind->name, amount, rec->currency,
                             rec->kind->to, mv->buyer, has, rec->currency);

    default:
        return tollctl_error(EX_UNAVAILABLE, "redis %s: EVAL balance: "
                             "unexpected answer %lld", ctl->addr.text,
                             (long long) r->element[0]->integer);
    }
}


/*
 * The ref was used before: the same movement again is a retry, answered
 * as the first run was; anything else under that ref is refused.
 */
static int
tollctl_move_again(const tollctl_move_t *mv, const redisReply *prev)
{
    char              text[TOLL_NAME_TEXT_MAX];
    char              amount[TOLL_MONEY_STR_MAX];
    tollctl_record_t  rec;

    if (tollctl_record_parse(prev->str, prev->len, &rec) != 0) {
        toll_name_text(text, prev->str, prev->len);
        return tollctl_error(EX_DATAERR,
                             "ref \"%s\" was already used (its record reads "
                             "\"%s\"); nothing written: use a new ref",
                             mv->ref, text);
    }

    if (rec.kind == mv->rec.kind && rec.amount == mv->rec.amount
        && strcmp(rec.currency, mv->rec.currency) == 0)
    {
        return tollctl_move_print(mv, &rec, 1);
    }

    (void) toll_money_format(rec.amount, amount);

    return tollctl_error(EX_DATAERR,
                         "ref \"%s\" was already used for %s %s %s; nothing "
                         "written: use a new ref for a new movement",
                         mv->ref, rec.kind->name, amount, rec.currency);
}


static int
tollctl_move_print(const tollctl_move_t *mv, const tollctl_record_t *rec,
    int existing)
{
    int      rc;
    char     amount[TOLL_MONEY_STR_MAX];
    json_t  *out;

    (void) toll_money_format(rec->amount, amount);

    /* buyer and ref were checked: printable ASCII, valid UTF-8 */
    out = json_pack("{s:s%,s:s,s:s%,s:s,s:s,s:I,s:b}",
                    "ref", mv->ref, mv->ref_len,
                    "kind", rec->kind->name,
                    "buyer", mv->buyer, mv->buyer_len,
                    "currency", rec->currency,
                    "amount", amount,
                    "created_at", (json_int_t) rec->created_at,
                    "existing", existing);
    if (out == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    rc = tollctl_print_json(out);
    json_decref(out);

    return rc;
}


/* "<kind> <CUR> <micros> <unix>", as tollctl_move_parse() writes it */
static int
tollctl_record_parse(const char *s, size_t len, tollctl_record_t *rec)
{
    char    buf[TOLLCTL_RECORD_LEN], *part[4], *p, *last;
    size_t  i, n;

    if (len >= sizeof(buf) || memchr(s, '\0', len) != NULL) {
        return -1;
    }

    memcpy(buf, s, len);
    buf[len] = '\0';
    n = 0;

    for (p = strtok_r(buf, " ", &last); p != NULL;
         p = strtok_r(NULL, " ", &last))
    {
        if (n == 4) {
            return -1;
        }

        part[n++] = p;
    }

    if (n != 4 || !toll_money_currency_valid(part[1], strlen(part[1]))
        || toll_parse_int64(part[2], 1, INT64_MAX, &rec->amount) != 0
        || toll_parse_int64(part[3], 0, INT64_MAX, &rec->created_at) != 0)
    {
        return -1;
    }

    rec->kind = NULL;

    for (i = 0; i < TOLLCTL_NELTS(tollctl_kinds); i++) {
        if (strcmp(part[0], tollctl_kinds[i].name) == 0) {
            rec->kind = &tollctl_kinds[i];
        }
    }

    if (rec->kind == NULL) {
        return -1;
    }

    strcpy(rec->currency, part[1]);

    return 0;
}


/* the module's rule for a key's owner, who is the buyer it bills */
int
tollctl_balance_buyer_check(const char *buyer)
{
    if (!toll_owner_valid((const unsigned char *) buyer, strlen(buyer))) {
        return tollctl_error(EX_DATAERR,
                             "invalid BUYER: use a key's owner, 1 to %d "
                             "visible ASCII characters, no spaces, not '}' "
                             "first (it would empty the Redis hash tag)",
                             TOLL_OWNER_LEN_MAX);
    }

    return EX_OK;
}


static int
tollctl_amount_check(const char *text, int64_t *micros)
{
    int   err;
    char  shown[TOLL_NAME_TEXT_MAX];

    toll_name_text(shown, text, strlen(text));

    err = toll_money_parse(text, strlen(text), micros);

    if (err != TOLL_MONEY_OK) {
        return tollctl_error(EX_DATAERR, "invalid AMOUNT \"%s\": %s", shown,
                             toll_money_strerror(err));
    }

    /* a movement of nothing would still spend a ref and post an entry */
    if (*micros == 0) {
        return tollctl_error(EX_DATAERR, "invalid AMOUNT \"%s\": must be "
                             "more than 0", shown);
    }

    return EX_OK;
}


int
tollctl_balance_currency_check(const char *cur)
{
    char  shown[TOLL_NAME_TEXT_MAX];

    if (!toll_money_currency_valid(cur, strlen(cur))) {
        toll_name_text(shown, cur, strlen(cur));
        return tollctl_error(EX_DATAERR,
                             "invalid --currency \"%s\": unknown currency; "
                             "use its code, 3 to %d upper-case letters and "
                             "digits from a letter, as USD, EUR, USDC",
                             shown, TOLL_MONEY_CURRENCY_LEN_MAX);
    }

    return EX_OK;
}


/*
 * A ref goes into a record, a journal and the ledger, and into logs and
 * shell commands: letters, digits and the punctuation of payment ids,
 * no space (the record's separator).
 */
static int
tollctl_ref_valid(const char *ref, size_t len)
{
    char    c;
    size_t  i;

    if (len == 0 || len > TOLLCTL_REF_LEN_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = ref[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9')
            || (c != '\0' && strchr("._:@/+=-", c) != NULL))
        {
            continue;
        }

        return 0;
    }

    return 1;
}


/* an amount the script answered, as money, or as Redis wrote it */
static void
tollctl_reply_amount(const redisReply *r, char *buf)
{
    char     digits[TOLLCTL_INT_STR_LEN];
    int64_t  v;

    if (r->len < sizeof(digits)) {
        memcpy(digits, r->str, r->len);
        digits[r->len] = '\0';

        if (toll_parse_int64(digits, INT64_MIN, INT64_MAX, &v) == 0) {
            (void) toll_money_format(v, buf);
            return;
        }
    }

    toll_name_text(buf, r->str, r->len);
}
