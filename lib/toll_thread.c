/*
 * toll: a helper thread that signals do not reach (toll_thread.h).
 */

#include <pthread.h>
#include <signal.h>

#include "toll_thread.h"


int
toll_thread_start(pthread_t *thread, void *(*run)(void *), void *arg)
{
    int       rc;
    sigset_t  all, old;

    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGABRT);

    /* the new thread inherits the mask in force when it is created */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(thread, NULL, run, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    return (rc == 0) ? 0 : -1;
}
