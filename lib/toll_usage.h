/*
 * toll: a buyer's usage as JSON, the answer of toll_usage
 * (docs/directives.md#toll_usage).  A pure function of its rows, so that
 * the module writes it and the fuzzer checks it alike.
 *
 * The names come from Redis, where anything may have written them: they
 * are printed as they are, of any length, as JSON strings (escaped, and
 * with each byte that is not part of valid UTF-8 written as U+FFFD), so
 * that the answer is valid JSON whatever Redis holds.
 *
 * Plain C11, no allocation, no I/O: safe inside an nginx worker.
 */

#ifndef _TOLL_USAGE_H_INCLUDED_
#define _TOLL_USAGE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


typedef struct {
    int64_t               calls;
    int64_t               free_calls;
    int64_t               paid_calls;
    int64_t               errors;
    int64_t               amount_micros;
    int64_t               units;        /* a service's, not summed */
} toll_usage_counts_t;


typedef struct {
    const unsigned char  *service;
    size_t                service_len;
    const unsigned char  *provider;
    size_t                provider_len;
    toll_usage_counts_t   counts;
    int64_t               free_remaining;
} toll_usage_row_t;


/* a prepaid balance in one currency (docs/metering.md) */
typedef struct {
    const unsigned char  *currency;
    size_t                currency_len;
    int64_t               balance;      /* what the buyer has left */
    int64_t               available;    /* of it, not held by a node */
    int64_t               held;         /* of it, held by nodes */
} toll_usage_balance_t;


/*
 * A count of a usage hash, as HINCRBY leaves it: an int64_t in decimal
 * digits after an optional "-", at most TOLL_USAGE_COUNT_LEN_MAX bytes
 * (as the drain's claim script checks before it mirrors a count); no
 * "+", no space, no other character.  Returns 0 and sets *v, or -1.
 */
#define TOLL_USAGE_COUNT_LEN_MAX  20    /* "-9223372036854775808" */

int toll_usage_count_parse(const char *s, size_t len, int64_t *v);

/*
 * Sums the rows' counts into totals.  Returns 0, or -1 when a sum does
 * not fit in int64_t (totals are then unspecified).
 */
int toll_usage_totals(const toll_usage_row_t *rows, size_t nrows,
    toll_usage_counts_t *totals);

/*
 * Writes the answer into buf, or only measures it when buf is NULL;
 * returns its length in bytes either way (no NUL is written).  A caller
 * calls it twice: to size the buffer, then to fill it.
 *
 *   {"buyer":"B","totals":{"calls":N,"free_calls":N,"paid_calls":N,
 *    "errors":N,"amount":"D"},"services":[{"service":"S","provider":"P",
 *    "calls":N,"free_calls":N,"free_remaining":N,"paid_calls":N,
 *    "errors":N,"amount":"D","units":N},...],"balances":[{"currency":"C",
 *    "balance":"D","available":"D","held":"D"},...]}  and a newline
 */
size_t toll_usage_json(char *buf, const unsigned char *buyer,
    size_t buyer_len, const toll_usage_counts_t *totals,
    const toll_usage_row_t *rows, size_t nrows,
    const toll_usage_balance_t *balances, size_t nbalances);

/*
 * The bytes as the inside of a JSON string: '"' and '\' escaped, control
 * characters as \u00XX, valid UTF-8 as it is, any other byte as \ufffd.
 * Writes into dst unless it is NULL; returns the length.
 */
size_t toll_json_escape(char *dst, const unsigned char *src, size_t len);


#endif /* _TOLL_USAGE_H_INCLUDED_ */
