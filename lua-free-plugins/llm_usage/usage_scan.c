/*
 * llm_usage: the streaming scanner (usage_scan.h).
 *
 * Two state machines, one inside the other: the event stream's lines
 * (data:, other fields, the blank line that ends an event) and, inside
 * each event's data or the whole body, a JSON reader that tracks only
 * what finding the path needs: the nesting (a bit per level), how many
 * levels of it are the path's, the key being compared, the number being
 * read.  Every state survives between two calls, so a cut anywhere, in a
 * key, a number or a CRLF, changes nothing.
 *
 * Most events of a stream cannot hold the path: only the one with the
 * usage does, and an event holds it only if its bytes hold the path's
 * last key in quotes, the needle.  So where no key or number of the path
 * is half read, the chunk is sought ahead for the next needle (memchr),
 * and back from it for the last blank line (memrchr): the events up to
 * that line are passed over unread, their values could only be none.
 * The event with the needle, and one cut by the chunk's end, are read
 * byte by byte.  Nothing is carried from one chunk to the next but the
 * state.
 */

#define _GNU_SOURCE                 /* memrchr() */

#include <string.h>

#include "usage_scan.h"


enum {
    J_VALUE = 0,        /* a value is expected */
    J_KEY,              /* a key or the object's end is expected */
    J_COLON,
    J_STRING,
    J_NUMBER,
    J_LITERAL,          /* true, false, null */
    J_AFTER,            /* "," or the container's end is expected */
    J_DONE,             /* the document is complete */
    J_ERROR
};

enum {
    L_FIELD = 0,        /* the line's field name, up to ":" */
    L_DATA_FIRST,       /* just after "data:": one space is skipped */
    L_DATA,
    L_SKIP              /* another field, or a comment */
};


/* the bytes that end a run of string text (1) or of a skipped line (2) */
static const unsigned char  usage_stop[256] = {
    ['"'] = 1, ['\\'] = 1, ['\n'] = 3, ['\r'] = 3
};


#define USAGE_NONE  ((size_t) -1)


/* what was found ahead in one chunk, good while not behind the reader */
typedef struct {
    size_t      key;                /* the next needle, or the chunk's end */
    size_t      limit;              /* blank was sought below it ... */
    size_t      from;               /* ... and from it */
    size_t      blank;              /* the last blank line there, or none */
} usage_ahead_t;


static size_t usage_sse_pass(usage_scan_t *s, usage_ahead_t *a,
    const char *data, size_t i, size_t len);
static size_t usage_last_blank(usage_ahead_t *a, const char *data, size_t i,
    size_t limit);
static size_t usage_rare(const char *needle, size_t len);
static size_t usage_ahead_key(const usage_path_t *p, const char *data,
    size_t i, size_t len);
static size_t usage_skip(const char *data, size_t i, size_t len,
    unsigned mask);
static void usage_json_reset(usage_scan_t *s);
static void usage_json_char(usage_scan_t *s, unsigned char c);
static void usage_json_value_end(usage_scan_t *s);
static void usage_json_push(usage_scan_t *s, int array);
static void usage_json_pop(usage_scan_t *s);
static void usage_json_digit(usage_scan_t *s, unsigned char c);
static void usage_sse_char(usage_scan_t *s, unsigned char c);
static void usage_sse_event(usage_scan_t *s);


int
usage_path_parse(usage_path_t *path, const char *text, size_t len)
{
    size_t  i, k;

    memset(path, 0, sizeof(usage_path_t));

    k = 0;

    for (i = 0; i <= len; i++) {
        if (i == len || text[i] == '.') {
            if (k == 0) {
                return -1;
            }

            path->len[path->n++] = k;
            k = 0;
            continue;
        }

        if (path->n == USAGE_PATH_MAX || k == USAGE_KEY_MAX
            || text[i] == '"' || text[i] == '\\')
        {
            return -1;
        }

        path->key[path->n][k++] = text[i];
    }

    k = path->n - 1;

    if (memchr(path->key[k], '\n', path->len[k]) == NULL
        && memchr(path->key[k], '\r', path->len[k]) == NULL)
    {
        for (i = 0; i < path->n; i++) {
            if (memchr(path->key[i], '\n', path->len[i]) != NULL
                || memchr(path->key[i], '\r', path->len[i]) != NULL)
            {
                return 0;
            }
        }

        path->needle[0] = '"';
        memcpy(path->needle + 1, path->key[k], path->len[k]);
        path->needle[path->len[k] + 1] = '"';
        path->needle_len = path->len[k] + 2;
        path->rare = usage_rare(path->needle, path->needle_len);
    }

    return 0;
}


void
usage_scan_init(usage_scan_t *s, const usage_path_t *path, int sse)
{
    memset(s, 0, sizeof(usage_scan_t));

    s->path = path;
    s->sse = sse;
}


void
usage_scan_feed(usage_scan_t *s, const char *data, size_t len)
{
    size_t         i;
    usage_ahead_t  a;

    a.key = USAGE_NONE;
    a.limit = USAGE_NONE;
    a.from = 0;
    a.blank = USAGE_NONE;

    for (i = 0; i < len; i++) {

        /*
         * At a chunk's or a line's start, when no key or number of the
         * path is half read (a number of the path is read while its
         * key_match is set), the event's rest matters only if it has
         * the needle: without it, the rest is passed over to the
         * event's blank line.
         */

        if (s->sse && s->path->needle_len
            && (i == 0 || (s->line == L_FIELD && s->field_len == 0))
            && !s->key_match
            && !(s->json == J_STRING && s->is_key && s->key_ok))
        {
            i = usage_sse_pass(s, &a, data, i, len);

            if (i == len) {
                break;
            }
        }

        /*
         * The bulk of a body is text inside strings, which only a quote,
         * a backslash or a line's end can stop: skipped here a byte at a
         * time without the state machines (a line's end inside a string
         * is no JSON, but ends an event stream's data line).
         */

        if (s->json == J_STRING && !s->escape && !(s->is_key && s->key_ok)
            && (!s->sse || s->line == L_DATA))
        {
            i = usage_skip(data, i, len, 1);

            if (i == len) {
                break;
            }

        } else if (s->sse
                   && (s->line == L_SKIP
                       || (s->line == L_DATA && s->json == J_ERROR)))
        {
            /* a line nothing is read from, to its end */
            i = usage_skip(data, i, len, 2);

            if (i == len) {
                break;
            }
        }

        if (s->sse && s->line == L_DATA && data[i] != '\n' && data[i] != '\r')
        {
            /* inside a data line, a byte is JSON's (and cr is clear) */
            usage_json_char(s, (unsigned char) data[i]);

        } else if (s->sse) {
            usage_sse_char(s, (unsigned char) data[i]);

        } else if (s->json != J_ERROR) {
            usage_json_char(s, (unsigned char) data[i]);
        }
    }
}


/*
 * Where the reader goes on from i, a line's or the chunk's start: past
 * the last blank line before the next needle (or the chunk's end), as
 * every event up to it is without the needle (and the event at i has no
 * key or number of the path half read): a value found before i stays,
 * and is that event's.  Else at i.
 */

static size_t
usage_sse_pass(usage_scan_t *s, usage_ahead_t *a, const char *data,
    size_t i, size_t len)
{
    size_t  e;

    if (data[i] == '\n' || data[i] == '\r') {
        return i;                   /* a blank line, or a line's end */
    }

    if (a->key == USAGE_NONE || a->key < i) {
        a->key = usage_ahead_key(s->path, data, i, len);
    }

    e = usage_last_blank(a, data, i, a->key);

    if (e == USAGE_NONE) {
        return i;                   /* the event has the needle, or goes on */
    }

    /* the blank line at e, as usage_sse_char() reads it */
    usage_sse_event(s);
    s->line = L_FIELD;
    s->field_len = 0;
    s->cr = (data[e] == '\r');

    i = e + 1;

    if (s->cr && i < len && data[i] == '\n') {
        s->cr = 0;                  /* a CRLF's LF */
        i++;
    }

    return i;
}


/*
 * The needle's first place from i on, or len.  memchr finds its rarest
 * byte at SIMD speed, memcmp checks the rest: glibc's memmem is several
 * times slower on text, a hash of byte pairs at a time.
 */

static size_t
usage_ahead_key(const usage_path_t *p, const char *data, size_t i,
    size_t len)
{
    size_t       r, n;
    const char  *q;

    r = p->rare;
    n = p->needle_len;

    while (len - i >= n) {
        q = memchr(data + i + r, p->needle[r], len - i - n + 1);

        if (q == NULL) {
            break;
        }

        i = (size_t) (q - data) - r;

        if (memcmp(data + i, p->needle, n) == 0) {
            return i;
        }

        i++;
    }

    return len;
}


/*
 * The byte of a needle least likely in JSON text: the quotes are in
 * every string, lower-case letters are common by their rank in English,
 * others ("_", capitals, digits) are rare in keys' and text's bytes.
 */

static size_t
usage_rare(const char *needle, size_t len)
{
    size_t       i, best, rank, best_rank;
    const char  *common, *c;

    common = "\" :,{}[]etaoinsrhldcumfpgwybvkxjqz";
    best = 0;
    best_rank = 0;

    for (i = 0; i < len; i++) {
        c = strchr(common, needle[i]);
        rank = (c == NULL || needle[i] == '\0') ? 1000 : 100 - (c - common);

        if (rank > best_rank) {
            best = i;
            best_rank = rank;
        }
    }

    return best;
}


/*
 * The last blank line from i on and below limit: the position of its
 * line end, or none.  A line end (LF, CR, or CR and LF) followed at
 * once by a CR or an LF ends an event, and nothing else does: a blank
 * line is an LF or a CR after an LF, or a CR after a CR.  memrchr finds
 * the line ends from limit back; once it finds no LF, it seeks no more.
 */

static size_t
usage_last_blank(usage_ahead_t *a, const char *data, size_t i, size_t limit)
{
    int          lf;
    size_t       p, lo;
    const char  *q, *r;

    if (a->limit == limit && a->from <= i) {
        return (a->blank != USAGE_NONE && a->blank > i) ? a->blank
                                                          : USAGE_NONE;
    }

    a->limit = limit;
    a->from = i;
    lf = 1;

    for ( ;; ) {
        q = lf ? memrchr(data + i, '\n', limit - i) : NULL;
        lf = (q != NULL);
        lo = q ? (size_t) (q - data) + 1 : i;
        r = memrchr(data + lo, '\r', limit - lo);
        q = r ? r : q;

        if (q == NULL || q == data + i) {
            p = USAGE_NONE;
            break;
        }

        p = (size_t) (q - data);

        if (data[p - 1] == '\n' || (data[p - 1] == '\r' && data[p] == '\r')) {
            break;
        }

        limit = p;
    }

    a->blank = p;

    return p;
}


/*
 * The first byte from i on that stops a run (usage_stop & mask), or len.
 * Runs in token streams are short and go byte by byte; past 16 bytes a
 * run is likely long, and memchr, once per stopping byte over a shrinking
 * span, is several times faster.
 */

static size_t
usage_skip(const char *data, size_t i, size_t len, unsigned mask)
{
    size_t       n;
    const char  *end, *q;

    for (n = 0; i < len && n < 16; i++, n++) {
        if (usage_stop[(unsigned char) data[i]] & mask) {
            return i;
        }
    }

    end = data + len;

    if (mask & 1) {
        q = memchr(data + i, '"', end - (data + i));
        end = q ? q : end;
        q = memchr(data + i, '\\', end - (data + i));
        end = q ? q : end;
    }

    q = memchr(data + i, '\n', end - (data + i));
    end = q ? q : end;
    q = memchr(data + i, '\r', end - (data + i));
    end = q ? q : end;

    return end - data;
}


int
usage_scan_finish(usage_scan_t *s, uint64_t *value)
{
    if (s->sse) {
        /* an event the stream ended in without its blank line counts */
        if (s->event_data) {
            usage_sse_event(s);
        }

    } else {
        /* a number still being read: the body was cut off (see above) */

        if (s->doc_found) {
            s->found = 1;
            s->value = s->doc_value;
        }
    }

    if (s->found) {
        *value = s->value;
    }

    return s->found;
}


/* the event stream: LF, CR and CRLF end lines */

static void
usage_sse_char(usage_scan_t *s, unsigned char c)
{
    if (c == '\n' && s->cr) {
        s->cr = 0;
        return;
    }

    s->cr = (c == '\r');

    if (c == '\r' || c == '\n') {
        if (s->line == L_FIELD && s->field_len == 0) {
            usage_sse_event(s);
        }

        s->line = L_FIELD;
        s->field_len = 0;
        return;
    }

    switch (s->line) {

    case L_FIELD:
        if (c != ':') {
            if (s->field_len < sizeof(s->field)) {
                s->field[s->field_len] = (char) c;
            }

            /* past 4: never "data", but still counted to say so */
            if (s->field_len <= sizeof(s->field)) {
                s->field_len++;
            }

            return;
        }

        if (s->field_len != 4 || memcmp(s->field, "data", 4) != 0) {
            s->line = L_SKIP;
            return;
        }

        /* the data lines of one event are one text, joined by LF */
        if (s->event_data) {
            usage_json_char(s, '\n');
        }

        s->event_data = 1;
        s->line = L_DATA_FIRST;
        return;

    case L_DATA_FIRST:
        s->line = L_DATA;

        if (c == ' ') {
            return;
        }

        /* fall through */

    case L_DATA:
        if (s->json != J_ERROR) {
            usage_json_char(s, c);
        }

        return;

    default: /* L_SKIP */
        return;
    }
}


/* an event ends: its data's value, if it has one, is the latest */

static void
usage_sse_event(usage_scan_t *s)
{
    /*
     * A number still being read when the event ends was cut off: a whole
     * document never ends inside one, and 4 may be the start of 42.  Not
     * counted: the event counts what it had before it, if anything.
     */

    if (s->event_data) {
        if (s->doc_found) {
            s->found = 1;
            s->value = s->doc_value;
        }
    }

    s->event_data = 0;
    usage_json_reset(s);
}


static void
usage_json_reset(usage_scan_t *s)
{
    s->arrays = 0;
    s->depth = 0;
    s->matched = 0;
    s->json = J_VALUE;
    s->key_pos = 0;
    s->number = 0;
    s->key_ok = 0;
    s->key_match = 0;
    s->is_key = 0;
    s->escape = 0;
    s->target = 0;
    s->bad = 0;
    s->doc_found = 0;
    s->doc_value = 0;
}


static int
usage_json_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}


static void
usage_json_char(usage_scan_t *s, unsigned char c)
{
    const usage_path_t  *p;

    p = s->path;

    switch (s->json) {

    case J_STRING:
        if (s->escape) {
            s->escape = 0;

        } else if (c == '\\') {
            /* keys on a path have no escapes: an escaped key is another */
            s->escape = 1;
            s->key_ok = 0;

        } else if (c == '"') {
            if (s->is_key) {
                s->key_match = s->key_ok
                               && s->key_pos == p->len[s->depth - 1];
                s->json = J_COLON;

            } else {
                usage_json_value_end(s);
            }

            return;
        }

        if (s->is_key && s->key_ok) {
            if (s->key_pos < p->len[s->depth - 1]
                && (char) c == p->key[s->depth - 1][s->key_pos])
            {
                s->key_pos++;

            } else {
                s->key_ok = 0;
            }
        }

        return;

    case J_NUMBER:
        if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.'
            || c == 'e' || c == 'E')
        {
            usage_json_digit(s, c);
            return;
        }

        usage_json_value_end(s);
        break;                      /* c is read again, after the value */

    case J_LITERAL:
        if (c >= 'a' && c <= 'z') {
            return;
        }

        usage_json_value_end(s);
        break;

    default:
        break;
    }

    if (usage_json_space(c)) {
        return;
    }

    switch (s->json) {

    case J_VALUE:
        if (c == '{' || c == '[') {
            usage_json_push(s, c == '[');
            return;
        }

        if (c == ']' && s->depth && (s->arrays & (1ull << (s->depth - 1)))) {
            usage_json_pop(s);                  /* an empty array */
            return;
        }

        if (c == '"') {
            s->is_key = 0;
            s->escape = 0;
            s->json = J_STRING;
            return;
        }

        if ((c >= '0' && c <= '9') || c == '-') {
            s->target = s->key_match && s->depth == p->n;
            s->bad = 0;
            s->number = 0;
            s->json = J_NUMBER;
            usage_json_digit(s, c);
            return;
        }

        if (c >= 'a' && c <= 'z') {
            s->json = J_LITERAL;
            return;
        }

        break;

    case J_KEY:
        if (c == '"') {
            s->is_key = 1;
            s->escape = 0;
            s->key_pos = 0;
            s->key_ok = (s->depth - 1 < p->n && s->matched == s->depth - 1);
            s->json = J_STRING;
            return;
        }

        if (c == '}') {
            usage_json_pop(s);                  /* an empty object */
            return;
        }

        break;

    case J_COLON:
        if (c == ':') {
            s->json = J_VALUE;
            return;
        }

        break;

    case J_AFTER:
        if (c == ',') {
            s->json = (s->arrays & (1ull << (s->depth - 1))) ? J_VALUE
                                                             : J_KEY;
            return;
        }

        if ((c == '}' || c == ']')
            && ((c == ']') == !!(s->arrays & (1ull << (s->depth - 1)))))
        {
            usage_json_pop(s);
            return;
        }

        break;

    default: /* J_DONE: only white space may follow */
        break;
    }

    s->json = J_ERROR;
}


static void
usage_json_push(usage_scan_t *s, int array)
{
    if (s->depth == USAGE_DEPTH_MAX) {
        s->json = J_ERROR;
        return;
    }

    /* the value of a key on the path opens the path's next level */
    if (!array && s->key_match && s->depth < s->path->n) {
        s->matched = s->depth;
    }

    s->key_match = 0;

    if (array) {
        s->arrays |= 1ull << s->depth;

    } else {
        s->arrays &= ~(1ull << s->depth);
    }

    s->depth++;
    s->json = array ? J_VALUE : J_KEY;
}


static void
usage_json_pop(usage_scan_t *s)
{
    /* leaving a level of the path: its parent is the deepest matched */
    if (s->depth >= 2 && s->matched == s->depth - 1) {
        s->matched = s->depth - 2;
    }

    s->depth--;
    usage_json_value_end(s);
}


static void
usage_json_value_end(usage_scan_t *s)
{
    if (s->json == J_NUMBER && s->target && !s->bad) {
        s->doc_found = 1;
        s->doc_value = s->number;
    }

    s->target = 0;
    s->key_match = 0;
    s->json = s->depth ? J_AFTER : J_DONE;
}


/* a count is digits only: a sign, a fraction or an exponent is no count */

static void
usage_json_digit(usage_scan_t *s, unsigned char c)
{
    if (!s->target || s->bad) {
        return;
    }

    if (c < '0' || c > '9'
        || s->number > (UINT64_MAX - (c - '0')) / 10)
    {
        s->bad = 1;
        return;
    }

    s->number = s->number * 10 + (c - '0');
}
