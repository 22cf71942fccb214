/*
 * tollctl quarantine: the claims toll-settle set aside because the ledger
 * refused them (docs/settle.md, "Quarantine").
 *
 * A quarantined claim keeps its key in Redis, as the drain claimed it;
 * the hash toll:drain:quarantine names it with when and why.  "list"
 * shows them; "replay" puts a claim back in toll:drain:open, where the
 * next toll-settle pass posts it (or sets it aside again, with the new
 * reason).  tollctl never posts a claim itself: the fees and the posting
 * rules live in toll-settle alone.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "toll_names.h"
#include "toll_scripts.h"
#include "tollctl.h"
#include "tollctl_quarantine.h"


static int tollctl_quarantine_print(tollctl_t *ctl, int json);
static int tollctl_quarantine_put_back(tollctl_t *ctl, int all, int argc,
    char **argv);
static int tollctl_quarantine_output(json_t *list, int json);
static int tollctl_quarantine_one(tollctl_t *ctl, const char *claim,
    size_t len);
static redisReply *tollctl_quarantine_send(tollctl_t *ctl, const char *verb,
    const char *key, const char *claim, size_t len);
static json_t *tollctl_quarantine_entry(const redisReply *name,
    const redisReply *value, const redisReply *content);


int
tollctl_quarantine_list(tollctl_t *ctl, tollctl_opts_t *o)
{
    int  rc;

    if (o->opt[TOLLCTL_OPT_ALL] != NULL || o->nargs != 0) {
        return tollctl_usage_error("\"quarantine list\" takes no "
                                   "argument but --json");
    }

    rc = tollctl_connect(ctl);

    return (rc == EX_OK) ? tollctl_quarantine_print(ctl, ctl->json) : rc;
}


int
tollctl_quarantine_replay(tollctl_t *ctl, tollctl_opts_t *o)
{
    int  rc, all;

    all = (o->opt[TOLLCTL_OPT_ALL] != NULL);

    if (all == (o->nargs != 0)) {
        return tollctl_usage_error("\"quarantine replay\" takes claims or "
                                   "--all");
    }

    rc = tollctl_connect(ctl);

    return (rc == EX_OK)
           ? tollctl_quarantine_put_back(ctl, all, o->nargs, o->args)
           : rc;
}


static int
tollctl_quarantine_print(tollctl_t *ctl, int json)
{
    int             rc;
    size_t          i, n;
    json_t         *list, *e;
    redisReply     *all, **contents;
    tollctl_cmd_t   cmd, *cmds;

    tollctl_cmd_init(&cmd, "HGETALL");
    tollctl_cmd_add_str(&cmd, TOLL_NAME_DRAIN_QUARANTINE);

    all = tollctl_redis_run(ctl, &cmd);
    if (all == NULL) {
        return EX_UNAVAILABLE;
    }

    if (all->type != REDIS_REPLY_ARRAY || all->elements % 2) {
        freeReplyObject(all);
        return tollctl_error(EX_UNAVAILABLE, "redis %s: HGETALL "
                             TOLL_NAME_DRAIN_QUARANTINE ": unexpected reply",
                             ctl->addr.text);
    }

    n = all->elements / 2;
    list = json_array();
    cmds = calloc(n + 1, sizeof(tollctl_cmd_t));
    contents = calloc(n + 1, sizeof(redisReply *));

    if (list == NULL || cmds == NULL || contents == NULL) {
        rc = tollctl_error(EX_OSERR, "out of memory");
        goto done;
    }

    /*
     * A claim set aside because it is not a hash has no counts to show:
     * read as empty (lua/quarantine_read.lua), where HGETALL would refuse
     * the whole list.  Sent whole: in a pipeline, a NOSCRIPT could not be
     * answered in turn.
     */

    for (i = 0; i < n; i++) {
        tollctl_cmd_init(&cmds[i], "EVAL");
        tollctl_cmd_add(&cmds[i],
                        toll_scripts[TOLL_SCRIPT_QUARANTINE_READ].text,
                        toll_scripts[TOLL_SCRIPT_QUARANTINE_READ].len);
        tollctl_cmd_add_str(&cmds[i], "1");
        tollctl_cmd_add(&cmds[i], all->element[2 * i]->str,
                        all->element[2 * i]->len);
    }

    if (n > 0 && tollctl_redis_pipeline(ctl, cmds, n, contents) != 0) {
        rc = EX_UNAVAILABLE;
        goto done;
    }

    rc = EX_OK;

    for (i = 0; i < n; i++) {
        e = tollctl_quarantine_entry(all->element[2 * i],
                                     all->element[2 * i + 1], contents[i]);
        if (e == NULL || json_array_append_new(list, e) != 0) {
            rc = tollctl_error(EX_OSERR, "out of memory");
            goto done;
        }
    }

    rc = tollctl_quarantine_output(list, json);

done:

    for (i = 0; contents != NULL && i < n; i++) {
        if (contents[i] != NULL) {
            freeReplyObject(contents[i]);
        }
    }

    free(contents);
    free(cmds);
    json_decref(list);
    freeReplyObject(all);

    return rc;
}


/* as JSON, indented, or as a table */
static int
tollctl_quarantine_output(json_t *list, int json)
{
    size_t   i;
    json_t  *e;

    if (json) {
        if (json_dumpf(list, stdout, JSON_INDENT(2) | JSON_SORT_KEYS) != 0
            || fputc('\n', stdout) == EOF)
        {
            return tollctl_error(EX_IOERR, "cannot write the output");
        }

        return EX_OK;
    }

    printf("%-20s  %-8s  %-32s  %-10s  %s\n", "BUYER", "DAY", "BATCH",
           "SINCE", "REASON");

    json_array_foreach(list, i, e) {
        printf("%-20s  %-8s  %-32s  %-10lld  %s\n",
               json_string_value(json_object_get(e, "buyer")),
               json_string_value(json_object_get(e, "day")),
               json_string_value(json_object_get(e, "batch")),
               (long long) json_integer_value(json_object_get(e, "since")),
               json_string_value(json_object_get(e, "reason")));
    }

    if (fflush(stdout) != 0) {
        return tollctl_error(EX_IOERR, "cannot write the output");
    }

    return EX_OK;
}


/*
 * One claim as JSON: its name taken apart (toll:drain:{BUYER}:DAY:BATCH),
 * "<unix time> <reason>" and the counts it holds, as Redis holds them.
 */
static json_t *
tollctl_quarantine_entry(const redisReply *name, const redisReply *value,
    const redisReply *content)
{
    size_t       i, len;
    const char  *s, *sp;
    json_t      *e, *fields;
    long long    since;
    toll_name_t  cn;

    e = json_object();
    fields = json_object();

    if (e == NULL || fields == NULL) {
        json_decref(e);
        json_decref(fields);
        return NULL;
    }

    s = name->str;
    len = name->len;

    json_object_set_new(e, "claim", json_stringn(s, len));

    /* the buyer may hold '}': the day and batch are the last two parts */

    if (toll_name_claim_parse(s, len, &cn) == 0) {
        json_object_set_new(e, "buyer", json_stringn(cn.buyer, cn.buyer_len));
        json_object_set_new(e, "day", json_string(cn.day));
        json_object_set_new(e, "batch", json_string(cn.batch));

    } else {
        json_object_set_new(e, "buyer", json_string("?"));
        json_object_set_new(e, "day", json_string("?"));
        json_object_set_new(e, "batch", json_string("?"));
    }

    since = 0;
    sp = (value->type == REDIS_REPLY_STRING)
         ? memchr(value->str, ' ', value->len) : NULL;

    if (sp != NULL) {
        since = strtoll(value->str, NULL, 10);
        json_object_set_new(e, "reason",
            json_stringn(sp + 1, value->len - (sp + 1 - value->str)));

    } else {
        json_object_set_new(e, "reason", json_string(""));
    }

    json_object_set_new(e, "since", json_integer(since));

    if (content != NULL && content->type == REDIS_REPLY_ARRAY) {
        for (i = 0; i + 1 < content->elements; i += 2) {
            if (content->element[i]->type == REDIS_REPLY_STRING
                && content->element[i + 1]->type == REDIS_REPLY_STRING)
            {
                json_object_setn_new_nocheck(fields,
                    content->element[i]->str, content->element[i]->len,
                    json_stringn(content->element[i + 1]->str,
                                 content->element[i + 1]->len));
            }
        }
    }

    /* an empty content: the claim's key is gone (deleted by hand) */
    json_object_set_new(e, "fields", fields);

    return e;
}


static int
tollctl_quarantine_put_back(tollctl_t *ctl, int all, int argc,
    char **argv)
{
    int             rc;
    size_t          i, n;
    redisReply     *names;
    tollctl_cmd_t   cmd;

    if (!all) {
        for (i = 0; i < (size_t) argc; i++) {
            rc = tollctl_quarantine_one(ctl, argv[i], strlen(argv[i]));
            if (rc != EX_OK) {
                return rc;
            }
        }

        n = argc;
        goto replayed;
    }

    tollctl_cmd_init(&cmd, "HKEYS");
    tollctl_cmd_add_str(&cmd, TOLL_NAME_DRAIN_QUARANTINE);

    names = tollctl_redis_run(ctl, &cmd);
    if (names == NULL) {
        return EX_UNAVAILABLE;
    }

    if (names->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(names);
        return tollctl_error(EX_UNAVAILABLE, "redis %s: HKEYS "
                             TOLL_NAME_DRAIN_QUARANTINE ": unexpected reply",
                             ctl->addr.text);
    }

    n = names->elements;

    for (i = 0; i < n; i++) {
        rc = tollctl_quarantine_one(ctl, names->element[i]->str,
                                    names->element[i]->len);
        if (rc != EX_OK) {
            freeReplyObject(names);
            return rc;
        }
    }

    freeReplyObject(names);

replayed:

    printf("replayed %zu claim%s: the next toll-settle pass posts %s\n", n,
           (n == 1) ? "" : "s", (n == 1) ? "it" : "them");

    return (fflush(stdout) == 0) ? EX_OK
           : tollctl_error(EX_IOERR, "cannot write the output");
}


/*
 * Open first, then out of quarantine: stopped in between, the claim is
 * in both, and the next pass takes it from open all the same.
 */
static int
tollctl_quarantine_one(tollctl_t *ctl, const char *claim, size_t len)
{
    int          found;
    redisReply  *r;

    r = tollctl_quarantine_send(ctl, "HEXISTS", TOLL_NAME_DRAIN_QUARANTINE,
                                claim, len);
    if (r == NULL) {
        return EX_UNAVAILABLE;
    }

    found = (r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    freeReplyObject(r);

    if (!found) {
        return tollctl_error(EX_NOINPUT, "\"%.*s\" is not in quarantine",
                             (int) len, claim);
    }

    r = tollctl_quarantine_send(ctl, "SADD", TOLL_NAME_DRAIN_OPEN, claim, len);
    if (r == NULL) {
        return EX_UNAVAILABLE;
    }

    freeReplyObject(r);

    r = tollctl_quarantine_send(ctl, "HDEL", TOLL_NAME_DRAIN_QUARANTINE,
                                claim, len);
    if (r == NULL) {
        return EX_UNAVAILABLE;
    }

    freeReplyObject(r);

    return EX_OK;
}


/* "VERB KEY CLAIM": the reply, or NULL after reporting an error */
static redisReply *
tollctl_quarantine_send(tollctl_t *ctl, const char *verb, const char *key,
    const char *claim, size_t len)
{
    tollctl_cmd_t  cmd;

    tollctl_cmd_init(&cmd, verb);
    tollctl_cmd_add_str(&cmd, key);
    tollctl_cmd_add(&cmd, claim, len);

    return tollctl_redis_run(ctl, &cmd);
}
