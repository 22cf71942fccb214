/*
 * toll: rate-limit arithmetic, shared by the module and its unit tests.
 *
 * Two algorithms, both on integers and wall-clock time:
 *
 *   bucket  a token bucket in its GCRA form: one theoretical arrival time
 *           (tat) per subject.  Capacity "burst" requests, refilled at the
 *           rate; smooth, so there is no window edge to burst across.
 *
 *   window  a sliding window of TOLL_WINDOW_SLOTS slots.  The window is
 *           rounded up to whole slots, never down: it never admits more
 *           than its limit in any interval of its length, and costs a
 *           client that paces itself exactly at the limit at most one slot
 *           (1 / TOLL_WINDOW_SLOTS of its rate).
 *
 * Nothing here locks or allocates; the caller holds the zone's mutex.
 */

#ifndef _TOLL_LIMIT_H_INCLUDED_
#define _TOLL_LIMIT_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define TOLL_WINDOW_SLOTS        40
/* slots counted: the current one and the TOLL_WINDOW_SLOTS before it */
#define TOLL_WINDOW_RING         (TOLL_WINDOW_SLOTS + 1)

/* the most requests a limit may name, so that sums fit in 32 bits */
#define TOLL_LIMIT_COUNT_MAX     1000000000


typedef enum {
    TOLL_UNIT_SECOND = 0,
    TOLL_UNIT_MINUTE,
    TOLL_UNIT_HOUR,
    TOLL_UNIT_DAY,
    TOLL_UNIT_N
} toll_unit_e;


/* the length of each unit in ms, and its name in headers and logs */
extern const int64_t      toll_unit_ms[TOLL_UNIT_N];
extern const char *const  toll_unit_names[TOLL_UNIT_N];


typedef struct {
    int64_t              interval_ns;   /* one request's worth of time */
    int64_t              burst;         /* capacity, requests */
    int64_t              tolerance_ns;  /* burst * interval_ns */
} toll_bucket_conf_t;


typedef struct {
    int64_t              count;         /* requests per window */
    int64_t              slot_ms;       /* window / TOLL_WINDOW_SLOTS */
} toll_window_conf_t;


/* a bucket's state: the theoretical arrival time, unix ns; 0 is empty */
typedef struct {
    int64_t              tat_ns;
} toll_bucket_t;


/*
 * A window's state: counts per slot in a ring indexed by the absolute slot
 * number (unix ms / slot_ms) modulo TOLL_WINDOW_RING.  "global" is what
 * Redis last said for all nodes, "pending" what this node admitted since
 * and has not sent, "sent" what is on its way to Redis.
 */
typedef struct {
    int64_t              head;          /* newest slot in the ring */
    uint32_t             global[TOLL_WINDOW_RING];
    uint32_t             pending[TOLL_WINDOW_RING];
    uint32_t             sent[TOLL_WINDOW_RING];
} toll_window_t;


typedef struct {
    unsigned             admitted:1;
    int64_t              remaining;     /* requests, after this one */
    int64_t              reset_ms;      /* until full again / oldest
                                           counted request leaves */
    int64_t              retry_ms;      /* rejected: the earliest moment
                                           a retry can be admitted */
} toll_limit_result_t;


/*
 * A node's estimate of the offset from its clock to another's (Redis's),
 * from measures that are never early: each is the true offset plus the
 * delay of a message on its way.  It follows the smallest measures, the
 * least delayed: down at once, up by 1/TOLL_CLOCK_RISE of the difference
 * a measure (a slower clock, a delay that lasts), and at once for a
 * measure more than TOLL_CLOCK_STEP_US above it (the other clock was
 * stepped).  Steady: jitter in the delays hardly moves it.
 */
#define TOLL_CLOCK_STEP_US       1000000
#define TOLL_CLOCK_RISE          64

typedef struct {
    int64_t              offset_us;
    int                  known;
} toll_clock_t;


/* 0, or -1 when the values are out of range or overflow */
int toll_bucket_conf(toll_bucket_conf_t *bc, int64_t count,
    int64_t period_ms, int64_t burst);
int toll_window_conf(toll_window_conf_t *wc, int64_t count,
    int64_t period_ms);

/*
 * Decides one request at now_ms.  Nothing changes unless "commit" is set
 * and the request is admitted: a refused request consumes nothing.
 */
void toll_bucket_check(const toll_bucket_conf_t *bc, toll_bucket_t *b,
    int64_t now_ms, int commit, toll_limit_result_t *res);
void toll_window_check(const toll_window_conf_t *wc, toll_window_t *w,
    int64_t now_ms, int commit, toll_limit_result_t *res);

/*
 * Counts one request that a check without commit admitted, with the same
 * now_ms: what the check reported stays true.
 */
void toll_bucket_commit(const toll_bucket_conf_t *bc, toll_bucket_t *b,
    int64_t now_ms);
void toll_window_commit(toll_window_t *w);

/* moves the ring forward to the slot of now_ms, dropping older slots */
void toll_window_advance(const toll_window_conf_t *wc, toll_window_t *w,
    int64_t now_ms);

/* requests counted in the window (all three rings) */
int64_t toll_window_used(const toll_window_t *w);

/* takes one measure of the offset, in ms */
void toll_clock_sample(toll_clock_t *c, int64_t offset_ms);


#endif /* _TOLL_LIMIT_H_INCLUDED_ */
