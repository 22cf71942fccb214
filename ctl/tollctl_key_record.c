/*
 * tollctl: a key's record as "key show" and "key list" present it: read
 * with HGETALL, checked, turned into JSON (known fields in a fixed order,
 * the computed "expired", never the secret's hash) and printed as
 * "field: value" lines or as the list's table.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "toll_key.h"
#include "toll_parse.h"
#include "tollctl.h"
#include "tollctl_key_record.h"


#define TOLLCTL_VALUE_STR_LEN         (TOLLCTL_INT_STR_LEN                \
                                       + TOLLCTL_TIME_STR_LEN + 4)

/* fields tollctl computes for display only */
#define TOLLCTL_FIELD_EXPIRED         "expired"       /* shown, not stored */

#define TOLLCTL_STATUS_EXPIRED        "expired"       /* shown, not stored */


typedef enum {
    TOLLCTL_KIND_TEXT = 0,           /* shown as stored */
    TOLLCTL_KIND_NUMBER,             /* an integer */
    TOLLCTL_KIND_TIME,               /* unix seconds */
    TOLLCTL_KIND_EXPIRY              /* unix seconds; 0, never, is null */
} tollctl_kind_e;


typedef struct {
    const char       *name;
    tollctl_kind_e    kind;
} tollctl_field_t;


static const redisReply *tollctl_hash_get(const redisReply *hash,
    const char *field);
static int tollctl_field_extra(const redisReply *name);
static const tollctl_field_t *tollctl_field_find(const char *name);
static json_t *tollctl_field_json(const tollctl_field_t *f,
    const redisReply *value);
static json_t *tollctl_expired_json(const redisReply *value, time_t now);
static int tollctl_reply_ll(const redisReply *value, int64_t *out);
static const char *tollctl_value_text(const char *name, json_t *value,
    char *buf, size_t size);


/* the fields of a record as "key show" presents them, in this order */
static const tollctl_field_t  tollctl_fields[] = {
    { TOLL_FIELD_STATUS,         TOLLCTL_KIND_TEXT },
    { TOLL_FIELD_OWNER,          TOLLCTL_KIND_TEXT },
    { TOLL_FIELD_ROLE,           TOLLCTL_KIND_TEXT },
    { TOLL_FIELD_PLAN,           TOLLCTL_KIND_TEXT },
    { TOLL_FIELD_RATE_LIMIT,     TOLLCTL_KIND_NUMBER },
    { TOLL_FIELD_CREATED_AT,     TOLLCTL_KIND_TIME },
    { TOLL_FIELD_EXPIRES_AT,     TOLLCTL_KIND_EXPIRY },
    { TOLL_FIELD_REVOKED_AT,  TOLLCTL_KIND_TIME }
};

/* key list's table; "status_text" and "expires_text" are made for it */
static const tollctl_column_t  tollctl_key_columns[] = {
    { "KEY_ID",       TOLLCTL_FIELD_KEY_ID,  0 },
    { "OWNER",        TOLL_FIELD_OWNER,      0 },
    { "ROLE",         TOLL_FIELD_ROLE,       0 },
    { "PLAN",         TOLL_FIELD_PLAN,       0 },
    { "STATUS",       "status_text",         0 },
    { "EXPIRES_AT",   "expires_text",        0 }
};


int
tollctl_key_id_arg(tollctl_t *ctl, tollctl_opts_t *o, const char **key_id,
    char *name)
{
    *key_id = o->args[0];

    if (toll_key_redis_name((const unsigned char *) *key_id,
                            strlen(*key_id), name)
        == 0)
    {
        return tollctl_error(EX_DATAERR,
                             "invalid key id \"%s\": use 1 to %d of "
                             "A-Z a-z 0-9 _ -, e.g. tk_0123456789abcdef",
                             *key_id, TOLL_KEY_ID_LEN_MAX);
    }

    return tollctl_connect(ctl);
}


int
tollctl_record_show(tollctl_t *ctl, const char *key_id, const char *name)
{
    int      rc;
    json_t  *record;

    rc = tollctl_record_get(ctl, key_id, name, &record);
    if (rc != EX_OK) {
        return rc;
    }

    rc = tollctl_output(ctl, record, tollctl_print_record);
    json_decref(record);

    return rc;
}


int
tollctl_record_get(tollctl_t *ctl, const char *key_id, const char *name,
    json_t **record)
{
    int             rc;
    redisReply     *hash;
    tollctl_cmd_t   cmd;

    tollctl_cmd_init(&cmd, "HGETALL");
    tollctl_cmd_add_str(&cmd, name);

    hash = tollctl_redis_run(ctl, &cmd);
    if (hash == NULL) {
        return EX_UNAVAILABLE;
    }

    rc = tollctl_record_check(ctl, hash);

    if (rc == EX_OK && hash->elements == 0) {
        rc = tollctl_error(EX_NOINPUT, "no key %s; \"tollctl key list\" "
                           "shows the keys", key_id);
    }

    if (rc == EX_OK) {
        *record = tollctl_record_json(key_id, strlen(key_id), hash,
                                      time(NULL));

        if (*record == NULL) {
            rc = tollctl_error(EX_DATAERR, "the record of key %s holds a "
                               "field that is not UTF-8 text", key_id);
        }
    }

    freeReplyObject(hash);

    return rc;
}


/* HGETALL answers an array of field, value, field, value... */
int
tollctl_record_check(tollctl_t *ctl, const redisReply *hash)
{
    size_t  i;

    if (hash->type != REDIS_REPLY_ARRAY || hash->elements % 2 != 0) {
        goto unexpected;
    }

    for (i = 0; i < hash->elements; i++) {
        if (hash->element[i]->type != REDIS_REPLY_STRING) {
            goto unexpected;
        }
    }

    return EX_OK;

unexpected:

    return tollctl_error(EX_UNAVAILABLE, "redis %s: HGETALL: unexpected "
                         "reply", ctl->addr.text);
}


/*
 * What "key show" prints: key_id, the known fields in a fixed order
 * (absent ones as null), the computed "expired", then any other field as
 * text.  Never secret_sha256.  Returns NULL when a value is not UTF-8.
 */
json_t *
tollctl_record_json(const char *key_id, size_t key_id_len,
    const redisReply *hash, time_t now)
{
    int                     rc;
    size_t                  i;
    json_t                 *obj;
    const redisReply       *name, *value;
    const tollctl_field_t  *f;

    obj = json_object();
    if (obj == NULL) {
        return NULL;
    }

    rc = json_object_set_new(obj, TOLLCTL_FIELD_KEY_ID,
                             json_stringn(key_id, key_id_len));

    for (i = 0; i < TOLLCTL_NELTS(tollctl_fields); i++) {
        f = &tollctl_fields[i];
        value = tollctl_hash_get(hash, f->name);

        rc |= json_object_set_new(obj, f->name, tollctl_field_json(f, value));

        if (f->kind == TOLLCTL_KIND_EXPIRY) {
            rc |= json_object_set_new(obj, TOLLCTL_FIELD_EXPIRED,
                                      tollctl_expired_json(value, now));
        }
    }

    for (i = 0; i < hash->elements; i += 2) {
        name = hash->element[i];
        value = hash->element[i + 1];

        if (tollctl_field_extra(name)) {
            rc |= json_object_setn_new(obj, name->str, name->len,
                                       json_stringn(value->str, value->len));
        }
    }

    if (rc != 0) {
        json_decref(obj);
        return NULL;
    }

    return obj;
}


static const redisReply *
tollctl_hash_get(const redisReply *hash, const char *field)
{
    size_t             i, len;
    const redisReply  *name;

    len = strlen(field);

    for (i = 0; i < hash->elements; i += 2) {
        name = hash->element[i];

        if (name->len == len && memcmp(name->str, field, len) == 0) {
            return hash->element[i + 1];
        }
    }

    return NULL;
}


/* a stored field shown as it is: not known, not computed, not the hash */
static int
tollctl_field_extra(const redisReply *name)
{
    size_t        i;
    static const char  *hidden[] = {
        TOLL_FIELD_SECRET_SHA256, TOLLCTL_FIELD_KEY_ID, TOLLCTL_FIELD_EXPIRED
    };

    if (strlen(name->str) != name->len) {
        return 1;
    }

    for (i = 0; i < TOLLCTL_NELTS(hidden); i++) {
        if (strcmp(name->str, hidden[i]) == 0) {
            return 0;
        }
    }

    return tollctl_field_find(name->str) == NULL;
}


static const tollctl_field_t *
tollctl_field_find(const char *name)
{
    size_t  i;

    for (i = 0; i < TOLLCTL_NELTS(tollctl_fields); i++) {
        if (strcmp(name, tollctl_fields[i].name) == 0) {
            return &tollctl_fields[i];
        }
    }

    return NULL;
}


/* a number that does not parse is shown as the text stored */
static json_t *
tollctl_field_json(const tollctl_field_t *f, const redisReply *value)
{
    int64_t  n;

    if (value == NULL) {
        return json_null();
    }

    if (f->kind == TOLLCTL_KIND_TEXT || tollctl_reply_ll(value, &n) != 0) {
        return json_stringn(value->str, value->len);
    }

    if (f->kind == TOLLCTL_KIND_EXPIRY && n == 0) {
        return json_null();
    }

    return json_integer(n);
}


/* true when expires_at is set and past; null when it cannot be read */
static json_t *
tollctl_expired_json(const redisReply *value, time_t now)
{
    int64_t  t;

    if (value == NULL) {
        return json_false();
    }

    if (tollctl_reply_ll(value, &t) != 0) {
        return json_null();
    }

    return json_boolean(t != 0 && t <= (int64_t) now);
}


static int
tollctl_reply_ll(const redisReply *value, int64_t *out)
{
    if (value->type != REDIS_REPLY_STRING
        || strlen(value->str) != value->len)
    {
        return -1;
    }

    return toll_parse_int64(value->str, INT64_MIN, INT64_MAX, out);
}


/* "field: value" lines, values aligned */
void
tollctl_print_record(json_t *record)
{
    int          width;
    char         buf[TOLLCTL_VALUE_STR_LEN];
    json_t      *value;
    const char  *name;

    width = 0;

    json_object_foreach(record, name, value) {
        if ((int) strlen(name) > width) {
            width = (int) strlen(name);
        }
    }

    json_object_foreach(record, name, value) {
        printf("%s:%*s %s\n", name, width - (int) strlen(name), "",
               tollctl_value_text(name, value, buf, sizeof(buf)));
    }
}


void
tollctl_key_print_table(json_t *records)
{
    char         buf[TOLLCTL_TIME_STR_LEN];
    size_t       i;
    json_t      *record, *value;
    const char  *status, *expires;

    json_array_foreach(records, i, record) {
        value = json_object_get(record, TOLL_FIELD_STATUS);
        status = json_is_string(value) ? json_string_value(value) : "-";

        /* an active key past its expiry is refused: say so */
        if (strcmp(status, TOLL_STATUS_ACTIVE) == 0
            && json_is_true(json_object_get(record, TOLLCTL_FIELD_EXPIRED)))
        {
            status = TOLLCTL_STATUS_EXPIRED;
        }

        value = json_object_get(record, TOLL_FIELD_EXPIRES_AT);

        if (json_is_integer(value)) {
            expires = tollctl_time_text(json_integer_value(value), buf,
                                        sizeof(buf));

        } else if (json_is_string(value)) {
            expires = json_string_value(value);

        } else {
            expires = "never";
        }

        json_object_set_new(record, "status_text", json_string(status));
        json_object_set_new(record, "expires_text", json_string(expires));
    }

    tollctl_print_table(records, tollctl_key_columns,
                        TOLLCTL_NELTS(tollctl_key_columns));
}


static const char *
tollctl_value_text(const char *name, json_t *value, char *buf, size_t size)
{
    char                    date[TOLLCTL_TIME_STR_LEN];
    json_int_t              n;
    const tollctl_field_t  *f;

    f = tollctl_field_find(name);

    switch (json_typeof(value)) {

    case JSON_STRING:
        return json_string_value(value);

    case JSON_TRUE:
        return "true";

    case JSON_FALSE:
        return "false";

    case JSON_NULL:
        return (f != NULL && f->kind == TOLLCTL_KIND_EXPIRY) ? "never" : "-";

    case JSON_INTEGER:
        n = json_integer_value(value);

        if (f != NULL
            && (f->kind == TOLLCTL_KIND_TIME
                || f->kind == TOLLCTL_KIND_EXPIRY))
        {
            snprintf(buf, size, "%" JSON_INTEGER_FORMAT " (%s)", n,
                     tollctl_time_text(n, date, sizeof(date)));

        } else {
            snprintf(buf, size, "%" JSON_INTEGER_FORMAT, n);
        }

        return buf;

    default:
        return "?";
    }
}
