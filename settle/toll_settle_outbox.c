/*
 * toll-settle: the webhook outbox in the ledger: the SQL of the webhook
 * sender (toll_settle_outbox.h), on a connection of its own.
 *
 * The statements are prepared once (SQLITE_PREPARE_PERSISTENT) and reset
 * after each use.  A statement that returns no row also drops its
 * bindings, so that a text bound SQLITE_STATIC is never read after the
 * call that bound it.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <sqlite3.h>

#include "toll_ledger.h"
#include "toll_settle_outbox.h"


enum {
    TOLL_SETTLE_SQL_BEGIN = 0,
    TOLL_SETTLE_SQL_COMMIT,
    TOLL_SETTLE_SQL_ROLLBACK,
    TOLL_SETTLE_SQL_MAX_SEQ,
    TOLL_SETTLE_SQL_CURSOR_GET,
    TOLL_SETTLE_SQL_CURSOR_SET,
    TOLL_SETTLE_SQL_EVENTS_AFTER,
    TOLL_SETTLE_SQL_DELIVERY_ADD,
    TOLL_SETTLE_SQL_DUE,
    TOLL_SETTLE_SQL_DELIVERED,
    TOLL_SETTLE_SQL_ATTEMPTED,
    TOLL_SETTLE_SQL_UNSETTLED,
    TOLL_SETTLE_SQL_N
};


static const char  *toll_settle_outbox_sql[TOLL_SETTLE_SQL_N] = {
    "BEGIN IMMEDIATE",
    "COMMIT",
    "ROLLBACK",
    "SELECT coalesce(max(seq), 0) FROM events",
    "SELECT value FROM meta WHERE name = '" TOLL_SETTLE_OUTBOX_CURSOR "'",
    "INSERT INTO meta (name, value) VALUES ('" TOLL_SETTLE_OUTBOX_CURSOR
    "', ?1) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    "SELECT seq, type FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    "INSERT OR IGNORE INTO deliveries (event_seq, url, status, attempts,"
    " next_at_ms) VALUES (?1, ?2, 'pending', 0, ?3)",
    "SELECT d.id, d.attempts, d.next_at_ms, e.id, e.type, e.body"
    " FROM deliveries d JOIN events e ON e.seq = d.event_seq"
    " WHERE d.status = 'pending' AND d.url = ?1"
    " ORDER BY d.next_at_ms, d.id LIMIT ?2",
    "UPDATE deliveries SET status = 'delivered', attempts = ?2,"
    " last_status = ?3, last_error = NULL, delivered_at = ?4"
    " WHERE id = ?1 AND status = 'pending'",
    "UPDATE deliveries SET status = ?2, attempts = ?3, last_status = ?4,"
    " last_error = ?5, next_at_ms = ?6"
    " WHERE id = ?1 AND status = 'pending'",
    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE status = 'pending'"
    " AND url = ?1 AND event_seq <= ?2)"
};


struct toll_settle_outbox_s {
    sqlite3                   *db;
    sqlite3_stmt              *sql[TOLL_SETTLE_SQL_N];
};


static int toll_settle_outbox_scalar(sqlite3_stmt *st, int64_t *out);
static int toll_settle_outbox_step_done(sqlite3_stmt *st);


int
toll_settle_outbox_open(const char *path, toll_settle_outbox_t **out,
    char *err, size_t err_size)
{
    int                    rc;
    char                   pragmas[128], ignored[8];
    size_t                 i;
    toll_settle_outbox_t  *ob;

    *out = NULL;

    ob = calloc(1, sizeof(toll_settle_outbox_t));
    if (ob == NULL) {
        snprintf(err, err_size, "webhooks: out of memory");
        return -1;
    }

    rc = sqlite3_open_v2(path, &ob->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, err_size, "webhooks: cannot open the ledger \"%s\": "
                 "%s", path,
                 ob->db ? sqlite3_errmsg(ob->db) : sqlite3_errstr(rc));
        goto failed;
    }

    snprintf(pragmas, sizeof(pragmas), "PRAGMA busy_timeout = %d;"
             "PRAGMA synchronous = FULL;PRAGMA foreign_keys = ON;",
             TOLL_LEDGER_BUSY_TIMEOUT_MS);

    if (sqlite3_exec(ob->db, pragmas, NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, err_size, "webhooks: ledger \"%s\": %s", path,
                 sqlite3_errmsg(ob->db));
        goto failed;
    }

    for (i = 0; i < TOLL_SETTLE_SQL_N; i++) {
        rc = sqlite3_prepare_v3(ob->db, toll_settle_outbox_sql[i], -1,
                                SQLITE_PREPARE_PERSISTENT, &ob->sql[i],
                                NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, err_size, "webhooks: ledger \"%s\" is not a toll "
                     "ledger of this version: %s", path,
                     sqlite3_errmsg(ob->db));
            goto failed;
        }
    }

    *out = ob;

    return 0;

failed:

    /* err says why it failed; a close that fails too adds nothing */
    (void) toll_settle_outbox_close(ob, ignored, sizeof(ignored));

    return -1;
}


int
toll_settle_outbox_close(toll_settle_outbox_t *ob, char *err,
    size_t err_size)
{
    int     rc;
    size_t  i;

    if (ob == NULL) {
        return 0;
    }

    for (i = 0; i < TOLL_SETTLE_SQL_N; i++) {
        sqlite3_finalize(ob->sql[i]);
    }

    rc = 0;

    if (ob->db != NULL && sqlite3_close(ob->db) != SQLITE_OK) {
        snprintf(err, err_size, "%s", sqlite3_errmsg(ob->db));
        rc = -1;
    }

    free(ob);

    return rc;
}


const char *
toll_settle_outbox_errmsg(toll_settle_outbox_t *ob)
{
    return sqlite3_errmsg(ob->db);
}


int
toll_settle_outbox_max_seq(toll_settle_outbox_t *ob, int64_t *seq)
{
    if (toll_settle_outbox_scalar(ob->sql[TOLL_SETTLE_SQL_MAX_SEQ], seq)
        != 0)
    {
        *seq = -1;
        return -1;
    }

    return 0;
}


int
toll_settle_outbox_begin(toll_settle_outbox_t *ob)
{
    return toll_settle_outbox_step_done(ob->sql[TOLL_SETTLE_SQL_BEGIN]);
}


int
toll_settle_outbox_commit(toll_settle_outbox_t *ob)
{
    return toll_settle_outbox_step_done(ob->sql[TOLL_SETTLE_SQL_COMMIT]);
}


void
toll_settle_outbox_rollback(toll_settle_outbox_t *ob)
{
    (void) sqlite3_step(ob->sql[TOLL_SETTLE_SQL_ROLLBACK]);
    sqlite3_reset(ob->sql[TOLL_SETTLE_SQL_ROLLBACK]);
}


int
toll_settle_outbox_cursor_get(toll_settle_outbox_t *ob, int64_t *cursor,
    int *malformed, char *bad, size_t bad_size)
{
    int            rc;
    char          *end;
    long long      v;
    const char    *text;
    sqlite3_stmt  *st;

    st = ob->sql[TOLL_SETTLE_SQL_CURSOR_GET];

    *cursor = 0;
    *malformed = 0;
    bad[0] = '\0';

    rc = sqlite3_step(st);

    if (rc == SQLITE_ROW) {
        text = (const char *) sqlite3_column_text(st, 0);

        errno = 0;
        v = (text != NULL) ? strtoll(text, &end, 10) : -1;

        if (text == NULL || errno != 0 || end == text || *end != '\0'
            || v < 0)
        {
            *malformed = 1;
            snprintf(bad, bad_size, "%s", text ? text : "");
            v = 0;
        }

        *cursor = v;
        rc = sqlite3_step(st);
    }

    sqlite3_reset(st);

    return (rc == SQLITE_DONE) ? 0 : -1;
}


int
toll_settle_outbox_cursor_set(toll_settle_outbox_t *ob, int64_t cursor)
{
    char           value[sizeof("-9223372036854775808")];
    sqlite3_stmt  *st;

    snprintf(value, sizeof(value), "%lld", (long long) cursor);

    st = ob->sql[TOLL_SETTLE_SQL_CURSOR_SET];
    sqlite3_bind_text(st, 1, value, -1, SQLITE_TRANSIENT);

    return toll_settle_outbox_step_done(st);
}


void
toll_settle_outbox_events_start(toll_settle_outbox_t *ob, int64_t after,
    int limit)
{
    sqlite3_stmt  *st;

    st = ob->sql[TOLL_SETTLE_SQL_EVENTS_AFTER];

    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int(st, 2, limit);
}


int
toll_settle_outbox_events_next(toll_settle_outbox_t *ob, int64_t *seq,
    const char **type)
{
    int            rc;
    sqlite3_stmt  *st;

    st = ob->sql[TOLL_SETTLE_SQL_EVENTS_AFTER];

    rc = sqlite3_step(st);

    if (rc == SQLITE_ROW) {
        *seq = sqlite3_column_int64(st, 0);
        *type = (const char *) sqlite3_column_text(st, 1);
        return 1;
    }

    return (rc == SQLITE_DONE) ? 0 : -1;
}


void
toll_settle_outbox_events_end(toll_settle_outbox_t *ob)
{
    sqlite3_reset(ob->sql[TOLL_SETTLE_SQL_EVENTS_AFTER]);
}


int
toll_settle_outbox_delivery_add(toll_settle_outbox_t *ob, int64_t seq,
    const char *url, int64_t next_at_ms)
{
    sqlite3_stmt  *st;

    st = ob->sql[TOLL_SETTLE_SQL_DELIVERY_ADD];

    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_text(st, 2, url, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, next_at_ms);

    return toll_settle_outbox_step_done(st);
}


void
toll_settle_outbox_due_start(toll_settle_outbox_t *ob, const char *url,
    int limit)
{
    sqlite3_stmt  *st;

    st = ob->sql[TOLL_SETTLE_SQL_DUE];

    sqlite3_bind_text(st, 1, url, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, limit);
}


int
toll_settle_outbox_due_next(toll_settle_outbox_t *ob, toll_settle_due_t *row)
{
    int            rc;
    sqlite3_stmt  *st;

    st = ob->sql[TOLL_SETTLE_SQL_DUE];

    rc = sqlite3_step(st);

    if (rc != SQLITE_ROW) {
        return (rc == SQLITE_DONE) ? 0 : -1;
    }

    row->id = sqlite3_column_int64(st, 0);
    row->attempts = sqlite3_column_int64(st, 1);
    row->next_at_ms = sqlite3_column_int64(st, 2);

    /* each text before its length: the length is of the text form */
    row->event_id = sqlite3_column_text(st, 3);
    row->event_id_len = sqlite3_column_bytes(st, 3);
    row->event_type = sqlite3_column_text(st, 4);
    row->event_type_len = sqlite3_column_bytes(st, 4);
    row->body = (const char *) sqlite3_column_text(st, 5);
    row->body_len = sqlite3_column_bytes(st, 5);

    return 1;
}


void
toll_settle_outbox_due_end(toll_settle_outbox_t *ob)
{
    sqlite3_reset(ob->sql[TOLL_SETTLE_SQL_DUE]);
}


int
toll_settle_outbox_delivered(toll_settle_outbox_t *ob, int64_t id,
    int64_t attempt, long http_status, int64_t at)
{
    sqlite3_stmt  *st;

    st = ob->sql[TOLL_SETTLE_SQL_DELIVERED];

    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, attempt);
    sqlite3_bind_int64(st, 3, http_status);
    sqlite3_bind_int64(st, 4, at);

    return toll_settle_outbox_step_done(st);
}


int
toll_settle_outbox_attempted(toll_settle_outbox_t *ob, int64_t id,
    const char *status, int64_t attempt, long http_status,
    const char *error, int64_t next_at_ms)
{
    sqlite3_stmt  *st;

    st = ob->sql[TOLL_SETTLE_SQL_ATTEMPTED];

    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, status, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, attempt);

    if (http_status != 0) {
        sqlite3_bind_int64(st, 4, http_status);

    } else {
        sqlite3_bind_null(st, 4);
    }

    sqlite3_bind_text(st, 5, error, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, next_at_ms);

    return toll_settle_outbox_step_done(st);
}


int
toll_settle_outbox_unsettled(toll_settle_outbox_t *ob, const char *url,
    int64_t seq, int *pending)
{
    int64_t        exists;
    sqlite3_stmt  *st;

    st = ob->sql[TOLL_SETTLE_SQL_UNSETTLED];

    sqlite3_bind_text(st, 1, url, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, seq);

    if (toll_settle_outbox_scalar(st, &exists) != 0) {
        return -1;
    }

    *pending = (exists != 0);

    return 0;
}


/* the integer of a statement's one row into *out, and resets it */
static int
toll_settle_outbox_scalar(sqlite3_stmt *st, int64_t *out)
{
    int  rc;

    rc = sqlite3_step(st);

    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
    }

    sqlite3_reset(st);

    return (rc == SQLITE_ROW) ? 0 : -1;
}


/* runs a statement that returns no row, and resets it */
static int
toll_settle_outbox_step_done(sqlite3_stmt *st)
{
    int  rc;

    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);

    return (rc == SQLITE_DONE) ? 0 : -1;
}
