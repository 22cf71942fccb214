/*
 * toll: key sets that follow the identity provider (ngx_http_toll_jwks.h).
 *
 * Each worker holds each set in a pool of its own, with the EVP_PKEYs it
 * parsed; a new generation is parsed into a new pool and swapped in on
 * the Redis reply, between two requests (a token is verified within one
 * call of the access handler), and the old pool destroyed at once, its
 * keys with it.  The keys checked are rebuilt into one array after a
 * swap: toll_jwt_key's first, then every set's, so that the selection in
 * ngx_http_toll_jwt.c stays as it is.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "toll_names.h"
#include "ngx_http_toll_jwks.h"
#include "ngx_http_toll_jwt_keys.h"
#include "ngx_http_toll_metrics_int.h"
#include "ngx_http_toll_redis.h"


/* a set held larger than this is refused unread */
#define NGX_HTTP_TOLL_JWKS_DOC_MAX     (256 * 1024)
/* the sets the metrics keep figures of, in a small zone of their own */
#define NGX_HTTP_TOLL_JWKS_SLOTS       16


/*
 * A set's figures, shared by the workers (the metrics): a zone of its
 * own, "toll_jwks", so the toll zone's layout is not touched.
 */
typedef struct {
    u_char                     name[TOLL_JWKS_NAME_LEN_MAX];
    size_t                     len;           /* 0: a free slot */
    ngx_atomic_t               gen;           /* the newest held */
    ngx_atomic_t               since;         /* when first held, unix */
    ngx_atomic_t               failures;      /* reads that failed */
} ngx_http_toll_jwks_slot_t;


typedef struct {
    ngx_str_t                  name;
    ngx_str_t                  key;           /* its Redis hash */
    ngx_uint_t                 algs;          /* bit per alg allowed */

    /* the worker's */
    int64_t                    gen;           /* held; 0: none yet */
    ngx_pool_t                *pool;          /* its keys and EVP_PKEYs */
    ngx_array_t               *keys;          /* ngx_http_toll_jwt_key_t */
    ngx_uint_t                 reading;       /* a command out */
    ngx_http_toll_jwks_slot_t *slot;          /* its figures, or NULL */
} ngx_http_toll_jwks_set_t;


static void ngx_http_toll_jwks_poll(ngx_event_t *ev);
static void ngx_http_toll_jwks_read(ngx_msec_t now);
static void ngx_http_toll_jwks_gen_reply(void *data, redisReply *reply);
static void ngx_http_toll_jwks_set_reply(void *data, redisReply *reply);
static ngx_int_t ngx_http_toll_jwks_parse(ngx_http_toll_jwks_set_t *set,
    redisReply *doc, int64_t gen);
static ngx_int_t ngx_http_toll_jwks_key(ngx_http_toll_jwks_set_t *set,
    ngx_pool_t *pool, ngx_array_t *keys, json_t *jwk);
static ngx_int_t ngx_http_toll_jwks_rebuild(void);
static void ngx_http_toll_jwks_pkey_cleanup(void *data);
static ngx_int_t ngx_http_toll_jwks_zone_init(ngx_shm_zone_t *zone,
    void *data);
static ngx_http_toll_jwks_slot_t *ngx_http_toll_jwks_slot(ngx_str_t *name);
static void ngx_http_toll_jwks_failed(ngx_http_toll_jwks_set_t *set);


static ngx_str_t  ngx_http_toll_jwks_alg_names[] = {
    ngx_string("RS256"),
    ngx_string("ES256"),
    ngx_string("EdDSA")
};

#define NGX_HTTP_TOLL_JWKS_ALGS_DEFAULT                                      \
    ((1 << NGX_HTTP_TOLL_JWT_RS256) | (1 << NGX_HTTP_TOLL_JWT_ES256)          \
     | (1 << NGX_HTTP_TOLL_JWT_EDDSA))


static ngx_event_t                 ngx_http_toll_jwks_ev;
static ngx_connection_t            ngx_http_toll_jwks_dumb;
static ngx_msec_t                  ngx_http_toll_jwks_read_at;
static ngx_http_toll_main_conf_t  *ngx_http_toll_jwks_mcf;
/* the keys checked: toll_jwt_key's and the sets', rebuilt on a swap */
static ngx_pool_t                 *ngx_http_toll_jwks_all_pool;
static ngx_array_t                *ngx_http_toll_jwks_all;
static uint64_t                    ngx_http_toll_jwks_gens;


/* ------------------------------------------------------- configuration */


char *
ngx_http_toll_jwks_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_toll_main_conf_t *mcf = conf;

    u_char                    *p, *last, *comma;
    ngx_str_t                 *value, s;
    ngx_uint_t                 i, a;
    ngx_http_toll_jwks_set_t  *set;

    value = cf->args->elts;

    if (!toll_name_jwks_valid((char *) value[1].data, value[1].len)) {
        return "takes a name of 1 to 64 of A-Z a-z 0-9 _ . -, as on "
               "toll-settle's \"jwks\" line";
    }

    if (mcf->jwks == NULL) {
        mcf->jwks = ngx_array_create(cf->pool, 2,
                                     sizeof(ngx_http_toll_jwks_set_t));
        if (mcf->jwks == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_str_set(&s, "toll_jwks");
        mcf->jwks_zone = ngx_shared_memory_add(cf, &s, 8 * ngx_pagesize,
                                               &ngx_http_toll_module);
        if (mcf->jwks_zone == NULL) {
            return NGX_CONF_ERROR;
        }

        mcf->jwks_zone->init = ngx_http_toll_jwks_zone_init;
    }

    if (mcf->jwks->nelts == NGX_HTTP_TOLL_JWKS_SLOTS) {
        return "is given more than 16 times";
    }

    set = mcf->jwks->elts;

    for (i = 0; i < mcf->jwks->nelts; i++) {
        if (set[i].name.len == value[1].len
            && ngx_memcmp(set[i].name.data, value[1].data, value[1].len) == 0)
        {
            return "is duplicate";
        }
    }

    set = ngx_array_push(mcf->jwks);
    if (set == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(set, sizeof(ngx_http_toll_jwks_set_t));
    set->name = value[1];
    set->algs = NGX_HTTP_TOLL_JWKS_ALGS_DEFAULT;

    set->key.data = ngx_pnalloc(cf->pool, toll_name_len(TOLL_NAME_JWKS_PREFIX)
                                          + value[1].len + 1);
    if (set->key.data == NULL) {
        return NGX_CONF_ERROR;
    }

    set->key.len = (u_char *) toll_name_tagged((char *) set->key.data,
                                               TOLL_NAME_JWKS_PREFIX,
                                               (char *) value[1].data,
                                               value[1].len)
                   - set->key.data;

    if (cf->args->nelts == 2) {
        return NGX_CONF_OK;
    }

    if (ngx_strncmp(value[2].data, "alg=", 4) != 0 || value[2].len == 4) {
        return "takes alg=ALG[,ALG...] after the name";
    }

    /* alg= pins the set: HS256 is never one, a secret is not published */

    set->algs = 0;
    p = value[2].data + 4;
    last = value[2].data + value[2].len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        s.data = p;
        s.len = comma - p;

        for (a = 0; a < sizeof(ngx_http_toll_jwks_alg_names)
                        / sizeof(ngx_str_t); a++)
        {
            if (s.len == ngx_http_toll_jwks_alg_names[a].len
                && ngx_strncmp(s.data, ngx_http_toll_jwks_alg_names[a].data,
                               s.len) == 0)
            {
                set->algs |= 1 << a;
                break;
            }
        }

        if (a == sizeof(ngx_http_toll_jwks_alg_names) / sizeof(ngx_str_t)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid algorithm \"%V\" in \"alg=\": "
                               "RS256, ES256 or EdDSA", &s);
            return NGX_CONF_ERROR;
        }

        p = comma + 1;
    }

    return NGX_CONF_OK;
}


void
ngx_http_toll_jwks_policy(ngx_http_toll_main_conf_t *mcf, SHA256_CTX *sha)
{
    uint64_t                   n;
    ngx_uint_t                 i;
    ngx_http_toll_jwks_set_t  *set;

    set = mcf->jwks ? mcf->jwks->elts : NULL;

    for (i = 0; mcf->jwks && i < mcf->jwks->nelts; i++) {
        n = set[i].name.len;
        SHA256_Update(sha, &n, sizeof(n));
        SHA256_Update(sha, set[i].name.data, set[i].name.len);
        n = set[i].algs;
        SHA256_Update(sha, &n, sizeof(n));
    }
}


/* -------------------------------------------------------------- worker */


ngx_int_t
ngx_http_toll_jwks_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                  i;
    ngx_http_toll_jwks_set_t   *set;
    ngx_http_toll_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_toll_module);

    if (mcf == NULL || mcf->jwks == NULL) {
        return NGX_OK;
    }

    ngx_http_toll_jwks_mcf = mcf;

    if (ngx_http_toll_jwks_rebuild() != NGX_OK) {
        return NGX_ERROR;
    }

    set = mcf->jwks->elts;

    for (i = 0; i < mcf->jwks->nelts; i++) {
        set[i].slot = ngx_http_toll_jwks_slot(&set[i].name);
    }

    ngx_http_toll_jwks_dumb.fd = (ngx_socket_t) -1;

    ngx_http_toll_jwks_ev.handler = ngx_http_toll_jwks_poll;
    ngx_http_toll_jwks_ev.data = &ngx_http_toll_jwks_dumb;
    ngx_http_toll_jwks_ev.log = cycle->log;
    ngx_http_toll_jwks_ev.cancelable = 1;

    /* the first read at once: until it, only toll_jwt_key's keys exist */
    ngx_add_timer(&ngx_http_toll_jwks_ev, 1);

    return NGX_OK;
}


void
ngx_http_toll_jwks_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                 i;
    ngx_http_toll_jwks_set_t  *set;

    if (ngx_http_toll_jwks_mcf == NULL) {
        return;
    }

    set = ngx_http_toll_jwks_mcf->jwks->elts;

    for (i = 0; i < ngx_http_toll_jwks_mcf->jwks->nelts; i++) {
        if (set[i].pool) {
            ngx_destroy_pool(set[i].pool);
            set[i].pool = NULL;
            set[i].keys = NULL;
        }
    }

    if (ngx_http_toll_jwks_all_pool) {
        ngx_destroy_pool(ngx_http_toll_jwks_all_pool);
        ngx_http_toll_jwks_all_pool = NULL;
        ngx_http_toll_jwks_all = NULL;
    }

    ngx_http_toll_jwks_mcf = NULL;
}


ngx_array_t *
ngx_http_toll_jwks_keys(ngx_http_toll_main_conf_t *mcf)
{
    if (ngx_http_toll_jwks_all != NULL) {
        return ngx_http_toll_jwks_all;
    }

    return mcf->jwt_keys;
}


uint64_t
ngx_http_toll_jwks_gen(void)
{
    return ngx_http_toll_jwks_gens;
}


void
ngx_http_toll_jwks_miss(void)
{
    ngx_msec_t  now;

    if (ngx_http_toll_jwks_mcf == NULL) {
        return;
    }

    now = ngx_current_msec;

    if (now - ngx_http_toll_jwks_read_at >= NGX_HTTP_TOLL_JWKS_MISS_MS) {
        ngx_http_toll_jwks_read(now);
    }
}


static void
ngx_http_toll_jwks_poll(ngx_event_t *ev)
{
    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_http_toll_jwks_read(ngx_current_msec);

    ngx_add_timer(ev, NGX_HTTP_TOLL_JWKS_POLL_MS);
}


/* one HGET of "gen" per set: the whole cost of a poll that finds none */
static void
ngx_http_toll_jwks_read(ngx_msec_t now)
{
    size_t                     argvlen[3];
    ngx_uint_t                 i;
    const char                *argv[3];
    ngx_http_toll_jwks_set_t  *set;

    ngx_http_toll_jwks_read_at = now;

    set = ngx_http_toll_jwks_mcf->jwks->elts;

    for (i = 0; i < ngx_http_toll_jwks_mcf->jwks->nelts; i++) {
        if (set[i].reading) {
            continue;
        }

        argv[0] = "HGET";
        argvlen[0] = 4;
        argv[1] = (char *) set[i].key.data;
        argvlen[1] = set[i].key.len;
        argv[2] = TOLL_JWKS_GEN;
        argvlen[2] = toll_name_len(TOLL_JWKS_GEN);

        set[i].reading = (ngx_http_toll_redis_send(
                              ngx_http_toll_jwks_gen_reply, &set[i], 3,
                              argv, argvlen)
                          != NULL);

        if (!set[i].reading) {
            ngx_http_toll_jwks_failed(&set[i]);
        }
    }
}


static void
ngx_http_toll_jwks_gen_reply(void *data, redisReply *reply)
{
    ngx_http_toll_jwks_set_t *set = data;

    int64_t      gen;
    size_t       argvlen[4];
    const char  *argv[4];

    set->reading = 0;

    if (reply == NULL || reply->type != REDIS_REPLY_STRING) {
        /* Redis down, or no set published yet: keep what is held */
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            ngx_http_toll_jwks_failed(set);
        }

        return;
    }

    gen = ngx_atoof((u_char *) reply->str, reply->len);

    if (gen <= 0 || gen == set->gen) {
        return;
    }

    argv[0] = "HMGET";
    argvlen[0] = 5;
    argv[1] = (char *) set->key.data;
    argvlen[1] = set->key.len;
    argv[2] = TOLL_JWKS_GEN;
    argvlen[2] = toll_name_len(TOLL_JWKS_GEN);
    argv[3] = TOLL_JWKS_KEYS;
    argvlen[3] = toll_name_len(TOLL_JWKS_KEYS);

    set->reading = (ngx_http_toll_redis_send(ngx_http_toll_jwks_set_reply,
                                             set, 4, argv, argvlen)
                    != NULL);
}


static void
ngx_http_toll_jwks_set_reply(void *data, redisReply *reply)
{
    ngx_http_toll_jwks_set_t *set = data;

    int64_t  gen;

    set->reading = 0;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        ngx_http_toll_jwks_failed(set);
        return;
    }

    gen = ngx_atoof((u_char *) reply->element[0]->str,
                    reply->element[0]->len);

    if (gen <= 0 || gen == set->gen) {
        return;
    }

    if (ngx_http_toll_jwks_parse(set, reply->element[1], gen) != NGX_OK) {
        ngx_http_toll_jwks_failed(set);
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "toll: the key set \"%V\" of generation %L in Redis "
                      "is not usable; keeping generation %L", &set->name,
                      gen, set->gen);
    }
}


/*
 * The set's document into a new pool; swapped in only when whole, so a
 * broken document leaves the held set as it was.
 */
static ngx_int_t
ngx_http_toll_jwks_parse(ngx_http_toll_jwks_set_t *set, redisReply *doc,
    int64_t gen)
{
    size_t              i;
    json_t             *root, *list;
    ngx_pool_t         *pool, *old;
    ngx_atomic_uint_t   seen;
    ngx_array_t   *keys;
    json_error_t        err;

    if (doc->len > NGX_HTTP_TOLL_JWKS_DOC_MAX) {
        return NGX_ERROR;
    }

    root = json_loadb(doc->str, doc->len, JSON_REJECT_DUPLICATES, &err);
    list = json_object_get(root, "keys");

    if (!json_is_array(list)) {
        json_decref(root);
        return NGX_ERROR;
    }

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        json_decref(root);
        return NGX_ERROR;
    }

    keys = ngx_array_create(pool, json_array_size(list) + 1,
                            sizeof(ngx_http_toll_jwt_key_t));

    for (i = 0; keys && i < json_array_size(list); i++) {
        if (ngx_http_toll_jwks_key(set, pool, keys, json_array_get(list, i))
            == NGX_ERROR)
        {
            keys = NULL;
        }
    }

    json_decref(root);

    if (keys == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    old = set->pool;

    if (set->slot) {
        /* the first worker to hold a generation dates it */
        seen = set->slot->gen;

        if ((int64_t) seen < gen
            && ngx_atomic_cmp_set(&set->slot->gen, seen,
                                  (ngx_atomic_uint_t) gen))
        {
            set->slot->since = ngx_time();
        }
    }

    set->pool = pool;
    set->keys = keys;
    set->gen = gen;

    if (ngx_http_toll_jwks_rebuild() != NGX_OK) {
        return NGX_ERROR;
    }

    /* no request holds a key across events: the old ones go now */

    if (old) {
        ngx_destroy_pool(old);
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "toll: the key set \"%V\" is at generation %L, %ui "
                  "keys", &set->name, gen, keys->nelts);

    return NGX_OK;
}


/*
 * One JWK of a set: NGX_OK when taken, NGX_DECLINED when skipped (an
 * algorithm the set does not allow, a key too weak), NGX_ERROR.
 */
static ngx_int_t
ngx_http_toll_jwks_key(ngx_http_toll_jwks_set_t *set, ngx_pool_t *pool,
    ngx_array_t *keys, json_t *jwk)
{
    json_t                   *alg, *kid;
    EVP_PKEY                 *pkey;
    ngx_str_t                 secret;
    ngx_uint_t                a;
    ngx_pool_cleanup_t       *cln;
    ngx_http_toll_jwt_key_t  *key;

    alg = json_object_get(jwk, "alg");
    kid = json_object_get(jwk, "kid");

    if (!json_is_string(alg) || !json_is_string(kid)
        || json_string_length(kid) == 0)
    {
        return NGX_DECLINED;
    }

    for (a = 0; a < sizeof(ngx_http_toll_jwks_alg_names) / sizeof(ngx_str_t);
         a++)
    {
        if (ngx_strcmp(json_string_value(alg),
                       ngx_http_toll_jwks_alg_names[a].data) == 0)
        {
            break;
        }
    }

    if (a == sizeof(ngx_http_toll_jwks_alg_names) / sizeof(ngx_str_t)
        || !(set->algs & (1 << a)))
    {
        /* pinned: a key of another algorithm is never trusted */
        return NGX_DECLINED;
    }

    pkey = ngx_http_toll_jwt_jwk_pkey(pool, jwk, a, &secret);
    if (pkey == NULL) {
        return NGX_DECLINED;
    }

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        EVP_PKEY_free(pkey);
        return NGX_ERROR;
    }

    cln->handler = ngx_http_toll_jwks_pkey_cleanup;
    cln->data = pkey;

    key = ngx_array_push(keys);
    if (key == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(key, sizeof(ngx_http_toll_jwt_key_t));

    if (ngx_http_toll_jwt_jwk_usable(pkey, a, &key->sig_len) != NGX_OK) {
        keys->nelts--;
        return NGX_DECLINED;
    }

    key->file = set->name;
    key->alg = a;
    key->pkey = pkey;
    key->kid.len = json_string_length(kid);
    key->kid.data = ngx_pnalloc(pool, key->kid.len);
    if (key->kid.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(key->kid.data, json_string_value(kid), key->kid.len);

    return NGX_OK;
}


/* toll_jwt_key's keys, then each set's, into one array */
static ngx_int_t
ngx_http_toll_jwks_rebuild(void)
{
    ngx_uint_t                 i, n;
    ngx_pool_t                *pool;
    ngx_array_t               *all, *part;
    ngx_http_toll_jwks_set_t  *set;

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    set = ngx_http_toll_jwks_mcf->jwks->elts;
    n = ngx_http_toll_jwks_mcf->jwt_keys
        ? ngx_http_toll_jwks_mcf->jwt_keys->nelts : 0;

    for (i = 0; i < ngx_http_toll_jwks_mcf->jwks->nelts; i++) {
        n += set[i].keys ? set[i].keys->nelts : 0;
    }

    all = ngx_array_create(pool, n + 1, sizeof(ngx_http_toll_jwt_key_t));
    if (all == NULL) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    ngx_http_toll_jwks_gens = 0;

    for (i = 0; i <= ngx_http_toll_jwks_mcf->jwks->nelts; i++) {
        if (i == 0) {
            part = ngx_http_toll_jwks_mcf->jwt_keys;

        } else {
            part = set[i - 1].keys;
            ngx_http_toll_jwks_gens += (uint64_t) set[i - 1].gen;
        }

        if (part == NULL || part->nelts == 0) {
            continue;
        }

        /* n + 1 elements were allocated: no push here reallocates */
        ngx_memcpy((u_char *) all->elts + all->nelts * all->size,
                   part->elts, part->nelts * part->size);
        all->nelts += part->nelts;
    }

    if (ngx_http_toll_jwks_all_pool) {
        ngx_destroy_pool(ngx_http_toll_jwks_all_pool);
    }

    ngx_http_toll_jwks_all_pool = pool;
    ngx_http_toll_jwks_all = all;

    return NGX_OK;
}


static void
ngx_http_toll_jwks_pkey_cleanup(void *data)
{
    EVP_PKEY_free(data);
}


/* ------------------------------------------------------------- metrics */


static ngx_int_t
ngx_http_toll_jwks_zone_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        /* a reload: the figures go on */
        zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    zone->data = ngx_slab_calloc(shpool, NGX_HTTP_TOLL_JWKS_SLOTS
                                         * sizeof(ngx_http_toll_jwks_slot_t));

    return zone->data ? NGX_OK : NGX_ERROR;
}


/* the slot of a set's name, claimed when none has it yet */
static ngx_http_toll_jwks_slot_t *
ngx_http_toll_jwks_slot(ngx_str_t *name)
{
    ngx_uint_t                  i;
    ngx_shm_zone_t             *zone;
    ngx_slab_pool_t            *shpool;
    ngx_http_toll_jwks_slot_t  *slot, *found;

    zone = ngx_http_toll_jwks_mcf ? ngx_http_toll_jwks_mcf->jwks_zone : NULL;

    if (zone == NULL || zone->data == NULL) {
        return NULL;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    slot = zone->data;
    found = NULL;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < NGX_HTTP_TOLL_JWKS_SLOTS; i++) {
        if (slot[i].len == name->len
            && ngx_memcmp(slot[i].name, name->data, name->len) == 0)
        {
            found = &slot[i];
            break;
        }

        if (slot[i].len == 0 && found == NULL) {
            found = &slot[i];
        }
    }

    if (found && found->len == 0) {
        ngx_memcpy(found->name, name->data, name->len);
        found->len = name->len;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return found;
}


static void
ngx_http_toll_jwks_failed(ngx_http_toll_jwks_set_t *set)
{
    if (set->slot) {
        (void) ngx_atomic_fetch_add(&set->slot->failures, 1);
    }
}


void
ngx_http_toll_jwks_metrics(ngx_http_toll_metrics_out_t *o,
    ngx_http_toll_main_conf_t *mcf)
{
    time_t                      now;
    ngx_str_t                   labels[2];
    ngx_uint_t                  i, k;
    ngx_http_toll_jwks_set_t   *set;
    ngx_http_toll_jwks_slot_t  *slot;

    static char  *names[] = {
        "toll_jwks_generation", "gauge",
        "The newest generation of the fetched key set any worker holds; "
        "0: none yet.",
        "toll_jwks_age_seconds", "gauge",
        "Seconds since a worker first held that generation.",
        "toll_jwks_read_failures_total", "counter",
        "Reads of the key set from Redis that failed or brought a set "
        "that did not parse; the workers kept theirs."
    };

    /* the families are always there; a sample per configured set */

    set = mcf->jwks ? mcf->jwks->elts : NULL;
    now = ngx_time();
    ngx_str_set(&labels[0], "name");

    for (k = 0; k < 3; k++) {
        ngx_http_toll_metrics_family(o, names[3 * k], names[3 * k + 1],
                                     names[3 * k + 2]);

        for (i = 0; mcf->jwks && i < mcf->jwks->nelts; i++) {
            slot = set[i].slot;
            labels[1] = set[i].name;

            ngx_http_toll_metrics_sample(o, labels, 1,
                slot == NULL ? 0
                : k == 0 ? slot->gen
                : k == 1 ? (ngx_atomic_uint_t)
                           (slot->since ? now - (time_t) slot->since : 0)
                : slot->failures);
        }

        ngx_http_toll_metrics_family_end(o);
    }
}
