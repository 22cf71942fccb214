/*
 * toll: the ledger's internals, shared by its rooms in lib/:
 *
 *     toll_ledger.c           open, schema, the write transaction, text
 *     toll_ledger_post.c      posting drained usage
 *     toll_ledger_balance.c   posting prepaid balances
 *     toll_ledger_check.c     the consistency checks
 *     toll_ledger_query.c     balances, entries, usage, totals, gauges
 *     toll_settlement.c       settlements and their payment
 *
 * Not for programs: they use toll_ledger.h.
 */

#ifndef _TOLL_LEDGER_INT_H_INCLUDED_
#define _TOLL_LEDGER_INT_H_INCLUDED_


#include <stdint.h>

#include <sqlite3.h>
#include <jansson.h>

#include "toll_ledger.h"
#include "toll_money.h"


#define TOLL_LEDGER_ERR_MAX          256
/* "2026-03-01T00:00:00Z" and its NUL */
#define TOLL_LEDGER_TIME_STR_MAX     21


struct toll_ledger_s {
    sqlite3          *db;
    char              id[TOLL_LEDGER_BATCH_ID_LEN + 1];
    char              err[TOLL_LEDGER_ERR_MAX];

    /* the open write transaction's sums, checked before COMMIT */
    int               in_tx;
    int64_t           tx_debits_micros;
    int64_t           tx_credits_micros;
};


/* BEGIN IMMEDIATE: the write lock now, not at the first write */
int toll_ledger_begin(toll_ledger_t *lg);

/*
 * Checks that the transaction's debits equal its credits (abort() if
 * not: a program that unbalances the ledger must stop, GUIDE.md), adds
 * them to the totals row, and COMMITs.
 */
int toll_ledger_commit(toll_ledger_t *lg);
void toll_ledger_rollback(toll_ledger_t *lg);

/* the id of an account, created on first use; kind as the schema's */
int toll_ledger_account(toll_ledger_t *lg, const char *name,
    const char *kind, int64_t *id);

/*
 * One entry of an open transaction: exactly one of debit and credit is
 * > 0; a zero amount writes nothing.  Sums it into the transaction's
 * balance.
 */
int toll_ledger_entry(toll_ledger_t *lg, int64_t tx_id, const char *account,
    const char *kind, int64_t debit_micros, int64_t credit_micros);

/* records sqlite's message for what failed; returns ERROR or BUSY */
int toll_ledger_sql_error(toll_ledger_t *lg, const char *what);
int toll_ledger_set_error(toll_ledger_t *lg, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* prepare, bind, step helpers: every statement is finalized by the caller */
int toll_ledger_prepare(toll_ledger_t *lg, const char *sql,
    sqlite3_stmt **stmt);

/* steps a statement that returns no row and finalizes it; what names it */
int toll_ledger_step_done(toll_ledger_t *lg, sqlite3_stmt *st,
    const char *what);

/* builds the JSON object of the row st stands on; NULL: out of memory */
typedef json_t *(*toll_ledger_row_json_pt)(sqlite3_stmt *st);

/*
 * Steps st to its end into a new array in *out, one object a row from
 * row(); finalizes st whatever happens.  what names the read in the
 * message of an SQL error ("read entries").
 */
int toll_ledger_rows_json(toll_ledger_t *lg, sqlite3_stmt *st,
    toll_ledger_row_json_pt row, const char *what, json_t **out);

/* a text column as a JSON string, NULL as null */
json_t *toll_ledger_text_json(sqlite3_stmt *st, int col);

/* an amount as text with at least two decimals: "10.50", "0.000001" */
json_t *toll_ledger_amount_json(int64_t micros);
void toll_ledger_amount_text(int64_t micros, char buf[TOLL_MONEY_STR_MAX + 1]);

/* unix seconds as "2026-03-01T00:00:00Z" */
void toll_ledger_time_text(int64_t t, char buf[TOLL_LEDGER_TIME_STR_MAX]);
json_t *toll_ledger_time_json(int64_t t);


#endif /* _TOLL_LEDGER_INT_H_INCLUDED_ */
