/*
 * toll: integers and durations from text, for toll-settle's
 * configuration and the command lines of toll-settle and tollctl.
 *
 * One grammar for every program: an optional "-" and decimal digits,
 * nothing else.  strtoll() alone would skip leading blanks, take a "+"
 * and stop at the first stray byte; here a value is the whole string or
 * it is refused.  No allocation, no I/O, errno left as it was.
 */

#ifndef _TOLL_PARSE_H_INCLUDED_
#define _TOLL_PARSE_H_INCLUDED_


#include <stdint.h>


/* the digits a duration may have before its unit: up to 999,999,999 */
#define TOLL_PARSE_DURATION_DIGITS_MAX  9


/*
 * text as an integer within [min, max]: "0", "42", "-7"; refused are
 * "", " 1", "1 ", "+1", "-0", "-", "0x10", "1e3", and anything outside
 * the bounds or int64_t.  Leading zeros are taken ("080" is 80).
 * Returns 0 with *out set, or -1 with *out untouched.
 */
int toll_parse_int64(const char *text, int64_t min, int64_t max,
    int64_t *out);

/*
 * A duration in milliseconds within [min_ms, max_ms]: digits then a
 * unit, "250ms", "10s", "2m", or digits alone, which are seconds ("10"
 * is 10 s).  No sign, no blanks, no fraction, no other unit.  Returns 0
 * with *ms set, or -1 with *ms untouched.
 */
int toll_parse_duration_ms(const char *text, int64_t min_ms, int64_t max_ms,
    int64_t *ms);


#endif /* _TOLL_PARSE_H_INCLUDED_ */
