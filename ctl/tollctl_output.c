/*
 * tollctl: what its commands print.  JSON on one line, tables and
 * "name: value" lines, times and amounts as text; the flush that tells a
 * full disk from success, and jansson's allocator, which wipes what it
 * frees (a new key's secret passes through jansson).
 */

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "tollctl.h"


/*
 * jansson allocates with these, so that the copies it makes of a new
 * key's secret (in the object and in the dumped text) are wiped when
 * freed.  Each block remembers its size in a header before it.
 */
typedef union {
    size_t            size;
    max_align_t       align;
} tollctl_alloc_hdr_t;


/* compact, one line: what scripts read */
int
tollctl_print_json(json_t *value)
{
    char  *text;

    text = json_dumps(value, JSON_COMPACT);
    if (text == NULL) {
        return tollctl_error(EX_OSERR, "out of memory");
    }

    fputs(text, stdout);
    fputc('\n', stdout);

    /* allocated by jansson, so through our allocator: wiped on free */
    tollctl_json_free(text);

    return EX_OK;
}


/* ISO 8601 in UTC; the bare number when the date cannot be formed */
const char *
tollctl_time_text(long long t, char *buf, size_t size)
{
    time_t     tt;
    struct tm  tm;

    tt = (time_t) t;

    if (gmtime_r(&tt, &tm) == NULL
        || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    {
        snprintf(buf, size, "%lld", t);
    }

    return buf;
}


/* a full disk or a closed pipe must not pass for success */
int
tollctl_stdout_flush(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        return -1;
    }

    return 0;
}


void *
tollctl_json_malloc(size_t size)
{
    tollctl_alloc_hdr_t  *hdr;

    if (size > SIZE_MAX - sizeof(tollctl_alloc_hdr_t)) {
        return NULL;
    }

    hdr = malloc(sizeof(tollctl_alloc_hdr_t) + size);
    if (hdr == NULL) {
        return NULL;
    }

    hdr->size = size;

    return hdr + 1;
}


void
tollctl_json_free(void *p)
{
    tollctl_alloc_hdr_t  *hdr;

    if (p == NULL) {
        return;
    }

    hdr = (tollctl_alloc_hdr_t *) p - 1;

    OPENSSL_cleanse(hdr, sizeof(tollctl_alloc_hdr_t) + hdr->size);
    free(hdr);
}


/*
 * JSON with --json, else text.  A failed write leaves stdout's error
 * flag set, which main() reports after its flush.
 */
int
tollctl_output(tollctl_t *ctl, json_t *value, void (*text)(json_t *value))
{
    if (ctl->json) {
        return tollctl_print_json(value);
    }

    text(value);

    return EX_OK;
}


/* "name: value" lines, aligned; micro-units are for scripts (--json) */
void
tollctl_print_fields(json_t *obj)
{
    int          width;
    char         buf[TOLLCTL_CELL_LEN_MAX];
    size_t       len, suffix;
    json_t      *value;
    const char  *name;

    width = 0;
    suffix = sizeof("_micros") - 1;

    json_object_foreach(obj, name, value) {
        len = strlen(name);

        if (len > suffix && strcmp(name + len - suffix, "_micros") == 0) {
            continue;
        }

        if ((int) len > width) {
            width = (int) len;
        }
    }

    json_object_foreach(obj, name, value) {
        len = strlen(name);

        if (len > suffix && strcmp(name + len - suffix, "_micros") == 0) {
            continue;
        }

        printf("%s:%*s %s\n", name, width - (int) len, "",
               tollctl_cell(value, buf, sizeof(buf)));
    }
}


void
tollctl_print_table(json_t *rows, const tollctl_column_t *cols,
    size_t ncols)
{
    char         buf[TOLLCTL_CELL_LEN_MAX];
    size_t       i, c, len, width[TOLLCTL_TABLE_COLUMNS_MAX];
    json_t      *row;
    const char  *cell;

    assert(ncols <= TOLLCTL_TABLE_COLUMNS_MAX);

    for (c = 0; c < ncols; c++) {
        width[c] = strlen(cols[c].header);
    }

    json_array_foreach(rows, i, row) {
        for (c = 0; c < ncols; c++) {
            len = strlen(tollctl_cell(json_object_get(row, cols[c].key), buf,
                                      sizeof(buf)));
            if (len > width[c]) {
                width[c] = len;
            }
        }
    }

    for (c = 0; c + 1 < ncols; c++) {
        printf(cols[c].right ? "%*s  " : "%-*s  ", (int) width[c],
               cols[c].header);
    }

    printf("%s\n", cols[c].header);

    json_array_foreach(rows, i, row) {
        for (c = 0; c < ncols; c++) {
            cell = tollctl_cell(json_object_get(row, cols[c].key), buf,
                                sizeof(buf));

            if (c + 1 == ncols) {
                printf("%s\n", cell);

            } else {
                printf(cols[c].right ? "%*s  " : "%-*s  ", (int) width[c],
                       cell);
            }
        }
    }
}


const char *
tollctl_cell(json_t *v, char *buf, size_t size)
{
    if (v == NULL) {
        return "-";
    }

    switch (json_typeof(v)) {

    case JSON_STRING:
        return json_string_value(v);

    case JSON_INTEGER:
        if (buf == NULL) {
            return "?";
        }

        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;

    case JSON_TRUE:
        return "true";

    case JSON_FALSE:
        return "false";

    default:
        return "-";
    }
}


/* as the ledger prints amounts ("10.50"); sign: "+" before a positive */
void
tollctl_amount_text(int64_t micros, int sign, char *buf, size_t size)
{
    char    digits[TOLL_MONEY_STR_MAX];
    char   *dot;
    size_t  len, decimals;

    len = toll_money_format(micros, digits);
    dot = strchr(digits, '.');
    decimals = (dot == NULL) ? 0 : len - (size_t) (dot - digits) - 1;

    snprintf(buf, size, "%s%s%s%s", (sign && micros > 0) ? "+" : "", digits,
             (dot == NULL) ? "." : "", (decimals == 0) ? "00"
                                       : (decimals == 1) ? "0" : "");
}
