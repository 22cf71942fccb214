/*
 * toll: money as integers.  Prices are written in config and by tollctl as
 * decimal strings of the currency ("0.05") and held everywhere else as
 * int64_t micro-units (1e-6 of the currency): 0.05 is 50000.  Shared by
 * the nginx module, tollctl and toll-settle, so that every program reads
 * and prints an amount the same way (DESIGN.md, decision 3).
 *
 * No float or double anywhere: every result is exact or an error.  Plain
 * C11 (with GCC/Clang's overflow builtins), no allocation, no I/O: safe
 * inside an nginx worker.
 */

#ifndef _TOLL_MONEY_H_INCLUDED_
#define _TOLL_MONEY_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define TOLL_MICROS_PER_UNIT       1000000
/* the digits TOLL_MICROS_PER_UNIT allows after the decimal point */
#define TOLL_MONEY_DECIMALS_MAX    6

/* a fee rate's denominator: one basis point is 1/100 of a percent */
#define TOLL_BP_PER_UNIT           10000

/*
 * The longest formatted amount, its NUL included: INT64_MIN is
 * "-9223372036854.775808", 21 characters.
 */
#define TOLL_MONEY_STR_MAX         22


typedef enum {
    TOLL_MONEY_OK = 0,
    TOLL_MONEY_EMPTY = -1,
    TOLL_MONEY_SYNTAX = -2,
    TOLL_MONEY_NEGATIVE = -3,
    TOLL_MONEY_PRECISION = -4,
    TOLL_MONEY_OVERFLOW = -5
} toll_money_err_e;


/*
 * Parses an amount of the currency into micro-units.  Accepted: one or more
 * ASCII digits, optionally followed by "." and 1 to 6 digits.  Leading
 * zeros are accepted ("007.5").  Nothing else: no sign, no whitespace, no
 * exponent, no hex, no "5." or ".5", no thousands separator, no non-ASCII
 * digit, no NUL (len is the length; s need not be NUL-terminated).
 *
 * A 7th decimal is rejected even when it is zero ("0.0000010"): the rule
 * is about how the string is written, not its value, so an operator who
 * wrote more precision than toll keeps is told so instead of having it
 * silently rounded or dropped; a long run of decimals is also the usual
 * sign of a price written in the wrong unit.
 *
 * When several rules are broken the first of this order is reported:
 * EMPTY, SYNTAX, NEGATIVE ("-" before an otherwise well-formed amount),
 * PRECISION, OVERFLOW (above INT64_MAX micro-units, 9223372036854.775807).
 *
 * Returns TOLL_MONEY_OK (0) and sets *micros, or a negative
 * toll_money_err_e and leaves *micros untouched.
 */
int toll_money_parse(const char *s, size_t len, int64_t *micros);

/*
 * A unit price (toll_service ... unit_price=), in nano-units (1e-9 of
 * the currency): the same rules as toll_money_parse() with up to 9
 * decimals, since a price per token or record is often below a micro-unit
 * ("0.00000015", 150 nano-units).  Returns as toll_money_parse() does.
 */
#define TOLL_NANOS_PER_UNIT            1000000000
#define TOLL_NANOS_PER_MICRO           1000
#define TOLL_UNIT_PRICE_DECIMALS_MAX   9

int toll_money_parse_unit_price(const char *s, size_t len, int64_t *nanos);

/*
 * What units cost at unit_nanos each, in micro-units: the exact product
 * rounded once, half up (0.5 micro-unit and above go up), as the fee
 * is: 3 units at 0.0000005 (500 nano-units) are 1.5 micro-units, charged
 * 2; 1 unit at 0.0000004 is 0.4, charged 0.  Returns TOLL_MONEY_OK,
 * TOLL_MONEY_NEGATIVE or TOLL_MONEY_OVERFLOW (above INT64_MAX
 * micro-units); *micros is left untouched on an error.
 */
int toll_money_units(int64_t units, int64_t unit_nanos, int64_t *micros);

/*
 * A currency code, as toll_service, the balances and tollctl take it:
 * 3 to 16 bytes, an upper-case letter, then upper-case letters and digits
 * ("USD", "EUR", "USDC").  One spelling per currency, so that "usd" is
 * never a second balance beside "USD".  1 when valid, else 0.
 */
#define TOLL_MONEY_CURRENCY_LEN_MAX  16

int toll_money_currency_valid(const char *s, size_t len);

/*
 * A short phrase to follow the value in a message, as in
 * 'invalid price "0.0000001": has more than 6 decimal places'.
 */
const char *toll_money_strerror(int err);

/*
 * Writes micros as the shortest decimal string of the currency that
 * toll_money_parse() reads back (after its "-", for a negative amount):
 * 50000 is "0.05", 0 is "0", 1000000 is "1", 1 is "0.000001", -50000 is
 * "-0.05".  Every int64_t is handled, INT64_MIN included.  NUL-terminated,
 * at most TOLL_MONEY_STR_MAX bytes; returns the length without the NUL.
 */
size_t toll_money_format(int64_t micros, char buf[TOLL_MONEY_STR_MAX]);

/*
 * Exact arithmetic on micro-units: returns TOLL_MONEY_OK and sets the
 * result, or TOLL_MONEY_OVERFLOW and leaves it untouched when the exact
 * result does not fit in int64_t.
 */
int toll_money_add(int64_t a, int64_t b, int64_t *sum);
int toll_money_mul(int64_t micros, int64_t count, int64_t *product);

/*
 * The fee of fee_bp basis points (1/100 of a percent) on an amount:
 * amount_micros * fee_bp / 10000, rounded half up to the micro-unit
 * (x.5 micro-units and above go up, below x.5 go down).  10.5 at 1000 bp
 * (10%) is 1.05: fee(10500000, 1000) = 1050000; fee(5, 1000) = 1 (0.5
 * rounds up), fee(4, 1000) = 0.
 *
 * Half up, not half even: a fee is rounded once per settlement entry, not
 * summed from many rounded parts, so the bias of half up is at most half a
 * micro-unit per entry, and it is the rule people check a receipt by.
 *
 * The result is exact for every pair of arguments, even where
 * amount_micros * fee_bp itself would not fit in 64 bits.  Rates above
 * 10000 bp (more than the amount) are allowed here; a caller that must
 * forbid them checks first.
 *
 * Both arguments must be >= 0: rounding a negative amount "half up" would
 * round a refund's fee differently from the charge's (-0.5 up is 0, 0.5 up
 * is 1), so a refund should reverse the fee entry it refunds rather than
 * compute a new one.  Returns TOLL_MONEY_OK and sets *fee_micros,
 * TOLL_MONEY_NEGATIVE, or TOLL_MONEY_OVERFLOW; *fee_micros is untouched on
 * error.
 */
int toll_money_fee_bp(int64_t amount_micros, int64_t fee_bp,
    int64_t *fee_micros);


#endif /* _TOLL_MONEY_H_INCLUDED_ */
