/*
 * toll: integers and durations from text (toll_parse.h).
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "toll_parse.h"


int
toll_parse_int64(const char *text, int64_t min, int64_t max, int64_t *out)
{
    int          negative;
    int64_t      n, digit;
    const char  *p;

    negative = (text[0] == '-');
    p = negative ? text + 1 : text;

    /* "-0" is no one's way of writing zero: refused as malformed */
    if (*p < '0' || *p > '9' || (negative && *p == '0')) {
        return -1;
    }

    /*
     * Accumulated negative, whose range is the larger one, so that
     * INT64_MIN parses without a special case.
     */

    n = 0;

    for ( /* void */ ; *p >= '0' && *p <= '9'; p++) {
        digit = *p - '0';

        if (n < (INT64_MIN + digit) / 10) {
            return -1;
        }

        n = n * 10 - digit;
    }

    if (*p != '\0') {
        return -1;
    }

    if (!negative) {
        if (n == INT64_MIN) {
            return -1;
        }

        n = -n;
    }

    if (n < min || n > max) {
        return -1;
    }

    *out = n;

    return 0;
}


int
toll_parse_duration_ms(const char *text, int64_t min_ms, int64_t max_ms,
    int64_t *ms)
{
    char         digits[TOLL_PARSE_DURATION_DIGITS_MAX + 1];
    size_t       len;
    int64_t      n, unit;
    const char  *p;

    for (p = text; *p >= '0' && *p <= '9'; p++) { /* void */ }

    len = (size_t) (p - text);

    if (len == 0 || len > TOLL_PARSE_DURATION_DIGITS_MAX) {
        return -1;
    }

    if (strcmp(p, "ms") == 0) {
        unit = 1;

    } else if (*p == '\0' || strcmp(p, "s") == 0) {
        unit = 1000;

    } else if (strcmp(p, "m") == 0) {
        unit = 60000;

    } else {
        return -1;
    }

    memcpy(digits, text, len);
    digits[len] = '\0';

    /* nine digits times a minute stays far inside int64_t */
    if (toll_parse_int64(digits, 0, INT64_MAX / unit, &n) != 0) {
        return -1;
    }

    n *= unit;

    if (n < min_ms || n > max_ms) {
        return -1;
    }

    *ms = n;

    return 0;
}
