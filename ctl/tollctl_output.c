/*
 * tollctl: what its commands print.  JSON on one line, tables and
 * "name: value" lines, times and amounts as text; the flush that tells a
 * full disk from success, and jansson's allocator, which wipes what it
 * frees (a new key's secret passes through jansson).
 */

#include <errno.h>
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
