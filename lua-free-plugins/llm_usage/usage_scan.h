/*
 * llm_usage: a streaming scanner for one number in JSON, in a whole JSON
 * body or in the data: events of a text/event-stream.
 *
 * The scanner keeps a fixed state (no buffer of the body): it is fed the
 * body in chunks of any size, a byte at a time if need be, and finds the
 * same number wherever the chunks are cut.  It reads, it does not
 * validate: a malformed document yields what was found before the fault.
 */

#ifndef _USAGE_SCAN_H_INCLUDED_
#define _USAGE_SCAN_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define USAGE_PATH_MAX   8       /* components of a path */
#define USAGE_KEY_MAX    64      /* bytes of a component */
#define USAGE_DEPTH_MAX  64      /* nesting a document may have */


/* a path of object keys, "usage.total_tokens" */
typedef struct {
    size_t          n;
    size_t          len[USAGE_PATH_MAX];
    char            key[USAGE_PATH_MAX][USAGE_KEY_MAX];

    /*
     * The last key in quotes, "\"total_tokens\"": an event whose bytes do
     * not hold it cannot hold the path, and is passed over unread.
     * needle_len is 0 if a key has a CR or LF (an event's lines could
     * then join into it): every event is read.  It is sought by memchr
     * of its rarest byte, needle[rare].
     */
    size_t          needle_len;
    size_t          rare;
    char            needle[USAGE_KEY_MAX + 2];
} usage_path_t;


typedef struct {
    const usage_path_t  *path;
    int                  sse;

    /* the JSON document being read */
    uint64_t             arrays;      /* bit d: the level d + 1 is [ */
    unsigned             depth;
    unsigned             matched;     /* levels on the path so far */
    unsigned             json;        /* its state */
    size_t               key_pos;
    uint64_t             number;
    unsigned             key_ok:1;
    unsigned             key_match:1;
    unsigned             is_key:1;
    unsigned             escape:1;
    unsigned             target:1;    /* the number is the path's value */
    unsigned             bad:1;       /* ... and is no count */
    unsigned             doc_found:1;
    uint64_t             doc_value;

    /* the event stream's line being read */
    unsigned             line;
    unsigned             field_len;
    char                 field[4];
    unsigned             cr:1;
    unsigned             event_data:1;

    /* the result: the last value found */
    unsigned             found:1;
    uint64_t             value;
} usage_scan_t;


/* "a.b.c" -> path; 0, or -1 (empty, too many or too long components) */
int usage_path_parse(usage_path_t *path, const char *text, size_t len);

void usage_scan_init(usage_scan_t *s, const usage_path_t *path, int sse);
void usage_scan_feed(usage_scan_t *s, const char *data, size_t len);

/* the end of the body: 1 and *value if found, else 0 */
int usage_scan_finish(usage_scan_t *s, uint64_t *value);


#endif /* _USAGE_SCAN_H_INCLUDED_ */
