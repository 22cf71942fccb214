/*
 * toll-settle: the webhook outbox in the ledger (docs/settle.md,
 * "Webhooks"): the events to fan out, the deliveries (table deliveries)
 * and the fan-out cursor (meta "webhook_cursor").
 *
 * Every statement the webhook sender runs against the ledger is here,
 * prepared once on a connection of its own.  The functions return -1 on
 * an SQLite error and leave the words to toll_settle_outbox_errmsg():
 * the sender decides what is worth a log line.  One thread at a time.
 */

#ifndef _TOLL_SETTLE_OUTBOX_H_INCLUDED_
#define _TOLL_SETTLE_OUTBOX_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define TOLL_SETTLE_OUTBOX_CURSOR  "webhook_cursor"


typedef struct toll_settle_outbox_s  toll_settle_outbox_t;


/*
 * A pending delivery and its event, as toll_settle_outbox_due_next()
 * reads it: the pointers hold until the next call on the outbox.
 */
typedef struct {
    int64_t                id;
    int64_t                attempts;       /* made so far */
    int64_t                next_at_ms;     /* wall clock */
    const unsigned char   *event_id;       /* may be NULL */
    int                    event_id_len;
    const unsigned char   *event_type;     /* may be NULL */
    int                    event_type_len;
    const char            *body;           /* may be NULL */
    int                    body_len;
} toll_settle_due_t;


/*
 * A connection of its own to the ledger at path (which must exist), its
 * statements prepared.  0, or -1 with one line in err and *out NULL.
 */
int toll_settle_outbox_open(const char *path, toll_settle_outbox_t **out,
    char *err, size_t err_size);

/*
 * Finalizes, closes and frees; NULL ok.  -1 when SQLite refused to close
 * the connection, the reason in err.
 */
int toll_settle_outbox_close(toll_settle_outbox_t *ob, char *err,
    size_t err_size);

/* the last SQLite error of the connection, for a log line */
const char *toll_settle_outbox_errmsg(toll_settle_outbox_t *ob);

/* the highest event sequence number, 0 when there is none */
int toll_settle_outbox_max_seq(toll_settle_outbox_t *ob, int64_t *seq);

/* the fan-out's transaction: BEGIN IMMEDIATE, COMMIT, ROLLBACK */
int toll_settle_outbox_begin(toll_settle_outbox_t *ob);
int toll_settle_outbox_commit(toll_settle_outbox_t *ob);
void toll_settle_outbox_rollback(toll_settle_outbox_t *ob);

/*
 * The cursor, 0 when unset.  A value that is not a number reads as 0,
 * with *malformed set and its text in bad (bad_size > 0), even when the
 * read then fails.
 */
int toll_settle_outbox_cursor_get(toll_settle_outbox_t *ob, int64_t *cursor,
    int *malformed, char *bad, size_t bad_size);
int toll_settle_outbox_cursor_set(toll_settle_outbox_t *ob, int64_t cursor);

/*
 * The events after seq, in order, at most limit: each _next() is 1 with
 * a row, 0 at the end, -1 on an error; _end() resets the read, whenever
 * it stops.  *type holds until the next call on the outbox.
 */
void toll_settle_outbox_events_start(toll_settle_outbox_t *ob, int64_t after,
    int limit);
int toll_settle_outbox_events_next(toll_settle_outbox_t *ob, int64_t *seq,
    const char **type);
void toll_settle_outbox_events_end(toll_settle_outbox_t *ob);

/*
 * A pending delivery of event seq to url, due at next_at_ms; none if the
 * pair has one already (UNIQUE (event_seq, url)).
 */
int toll_settle_outbox_delivery_add(toll_settle_outbox_t *ob, int64_t seq,
    const char *url, int64_t next_at_ms);

/*
 * The pending deliveries to url, by next_at_ms then id, at most limit,
 * read as the events are; url must hold until _end().
 */
void toll_settle_outbox_due_start(toll_settle_outbox_t *ob, const char *url,
    int limit);
int toll_settle_outbox_due_next(toll_settle_outbox_t *ob,
    toll_settle_due_t *row);
void toll_settle_outbox_due_end(toll_settle_outbox_t *ob);

/* delivery id, still pending, delivered at its attempt-th attempt */
int toll_settle_outbox_delivered(toll_settle_outbox_t *ob, int64_t id,
    int64_t attempt, long http_status, int64_t at);

/*
 * delivery id, still pending, after an attempt that did not deliver:
 * status "pending" (retried at next_at_ms) or "failed"; http_status 0
 * when there was no answer.
 */
int toll_settle_outbox_attempted(toll_settle_outbox_t *ob, int64_t id,
    const char *status, int64_t attempt, long http_status,
    const char *error, int64_t next_at_ms);

/* *pending: whether a delivery to url of an event up to seq is pending */
int toll_settle_outbox_unsettled(toll_settle_outbox_t *ob, const char *url,
    int64_t seq, int *pending);


#endif /* _TOLL_SETTLE_OUTBOX_H_INCLUDED_ */
