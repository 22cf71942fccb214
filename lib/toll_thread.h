/*
 * toll: a thread of toll-settle's that signals do not reach.
 *
 * The daemon's SIGTERM and SIGINT must land on the main thread, whose
 * handler sets the stop flag and whose sleep they cut short; delivered
 * to a helper thread (webhooks, metrics), they would wait there unseen
 * until that thread's next syscall.  So a helper starts with every
 * signal blocked but those a fault raises (SIGSEGV, SIGBUS, SIGFPE,
 * SIGILL, SIGABRT), which must still kill the process where it fails.
 */

#ifndef _TOLL_THREAD_H_INCLUDED_
#define _TOLL_THREAD_H_INCLUDED_


#include <pthread.h>


/* pthread_create() with the mask above; the caller's mask is kept; 0/-1 */
int toll_thread_start(pthread_t *thread, void *(*run)(void *), void *arg);


#endif /* _TOLL_THREAD_H_INCLUDED_ */
