/*
 * toll: the table of live worker processes in the shared zone, so that
 * what a worker holds in flight stops counting when it dies, and a
 * worker that exits knows whether another takes over; each slot also
 * says whether its worker's Redis connection is up.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_toll_shm.h"
#include "ngx_http_toll_shm_int.h"


/* how often the table of worker processes is checked for dead ones */
#define NGX_HTTP_TOLL_SHM_REAP_MS          1000


/* this process's slot in the table of live workers; -1: none */
static ngx_int_t  ngx_http_toll_shm_self = -1;


static ngx_int_t ngx_http_toll_shm_proc_grow(ngx_http_toll_shctx_t *ctx,
    ngx_uint_t n);


ngx_int_t
ngx_http_toll_shm_proc_claim(ngx_shm_zone_t *shm_zone, ngx_uint_t workers,
    uint32_t *gen)
{
    ngx_int_t                  slot;
    ngx_uint_t                 i, want;
    ngx_http_toll_shctx_t     *ctx;
    ngx_http_toll_shm_proc_t  *p;

    ctx = shm_zone->data;
    slot = -1;

    /* a reload's old workers finish while the new ones run: room for both */
    want = ngx_max(2 * workers, NGX_HTTP_TOLL_PROCS_MIN);

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (ctx->sh->nprocs < want) {
        (void) ngx_http_toll_shm_proc_grow(ctx, want);
    }

    /*
     * Every slot whose process is gone without releasing it (killed) is
     * freed, not only the one taken: a dead process's places must stop
     * counting even when a lower slot is free for this one.  Workers of
     * an old cycle finishing their requests keep their slots.
     */

    for (i = 0; i < ctx->sh->nprocs; i++) {
        p = &ctx->sh->procs[i];

        if (p->pid != 0 && ngx_http_toll_shm_pid_dead(p->pid)) {
            p->pid = 0;
            p->gen++;
        }

        if (p->pid == 0 && slot == -1) {
            slot = i;
        }
    }

    if (slot == -1) {
        i = ctx->sh->nprocs;

        if (ngx_http_toll_shm_proc_grow(ctx, 2 * i) == NGX_OK) {
            slot = i;
        }
    }

    if (slot != -1) {
        p = &ctx->sh->procs[slot];
        p->pid = ngx_pid;
        p->gen++;
        p->exiting = 0;
        p->redis_up = 0;
        *gen = p->gen;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    ngx_http_toll_shm_self = slot;

    return slot;
}


/*
 * Signal 0 tells whether a process exists; EPERM still means alive.  A
 * killed worker is a zombie until the master reaps it, a moment later.
 * A pid reused by an unrelated process keeps its slot until that one
 * ends too.
 */

ngx_uint_t
ngx_http_toll_shm_pid_dead(ngx_pid_t pid)
{
    return kill(pid, 0) == -1 && ngx_errno == NGX_ESRCH;
}


/*
 * A bigger table (the zone locked): slots keep their numbers, and the
 * old table is freed; every reader finds the table through sh->procs
 * under the mutex.
 */

static ngx_int_t
ngx_http_toll_shm_proc_grow(ngx_http_toll_shctx_t *ctx, ngx_uint_t n)
{
    ngx_http_toll_shm_proc_t  *procs;

    if (n <= ctx->sh->nprocs) {
        return NGX_OK;
    }

    procs = ngx_slab_calloc_locked(ctx->shpool,
                                   n * sizeof(ngx_http_toll_shm_proc_t));
    if (procs == NULL) {
        return NGX_ERROR;
    }

    if (ctx->sh->procs) {
        ngx_memcpy(procs, ctx->sh->procs,
                   ctx->sh->nprocs * sizeof(ngx_http_toll_shm_proc_t));
        ngx_slab_free_locked(ctx->shpool, ctx->sh->procs);
    }

    ctx->sh->procs = procs;
    ctx->sh->nprocs = n;

    return NGX_OK;
}


void
ngx_http_toll_shm_proc_release(ngx_shm_zone_t *shm_zone, ngx_int_t slot)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    if (slot < 0) {
        return;
    }

    ngx_shmtx_lock(&ctx->shpool->mutex);

    if (ctx->sh->procs[slot].pid == ngx_pid) {
        ctx->sh->procs[slot].pid = 0;
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


ngx_uint_t
ngx_http_toll_shm_proc_slots(ngx_shm_zone_t *shm_zone)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    return ctx->sh->nprocs;
}


uint32_t
ngx_http_toll_shm_proc_gen(ngx_shm_zone_t *shm_zone, ngx_uint_t slot)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    return ctx->sh->procs[slot].gen;
}


void
ngx_http_toll_shm_proc_reap(ngx_shm_zone_t *shm_zone)
{
    ngx_uint_t                 i;
    ngx_http_toll_shctx_t     *ctx;
    ngx_http_toll_shm_proc_t  *p;

    ctx = shm_zone->data;

    /* a few dozen signals 0 a second for the zone, not for each worker */

    if (ngx_current_msec - ctx->sh->procs_reaped < NGX_HTTP_TOLL_SHM_REAP_MS)
    {
        return;
    }

    ctx->sh->procs_reaped = ngx_current_msec;

    for (i = 0; i < ctx->sh->nprocs; i++) {
        p = &ctx->sh->procs[i];

        if (p->pid != 0 && ngx_http_toll_shm_pid_dead(p->pid)) {
            p->pid = 0;
            p->gen++;
        }
    }
}


ngx_uint_t
ngx_http_toll_shm_proc_hand_over(ngx_shm_zone_t *shm_zone)
{
    ngx_uint_t                 i, others;
    ngx_http_toll_shctx_t     *ctx;
    ngx_http_toll_shm_proc_t  *p;

    ctx = shm_zone->data;
    others = 0;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (i = 0; i < ctx->sh->nprocs; i++) {
        p = &ctx->sh->procs[i];

        if (p->pid == ngx_pid) {
            p->exiting = 1;
            continue;
        }

        if (p->pid != 0 && !p->exiting && !ngx_http_toll_shm_pid_dead(p->pid))
        {
            others++;
        }
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);

    return others;
}


void
ngx_http_toll_shm_proc_redis(ngx_shm_zone_t *shm_zone, ngx_uint_t up)
{
    ngx_http_toll_shctx_t  *ctx = shm_zone->data;

    if (ngx_http_toll_shm_self < 0) {
        return;
    }

    /* under the mutex: another worker may move the table to grow it */
    ngx_shmtx_lock(&ctx->shpool->mutex);
    ctx->sh->procs[ngx_http_toll_shm_self].redis_up = up;
    ngx_shmtx_unlock(&ctx->shpool->mutex);
}
