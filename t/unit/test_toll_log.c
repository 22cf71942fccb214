/*
 * Unit tests of lib/toll_log.c and lib/toll_thread.c, the daemon's and
 * the CLI's log line and helper threads.
 *
 * stderr is pointed at a temporary file for each log test, then read
 * back: what an operator's journal would hold.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "toll_log.h"
#include "toll_thread.h"


#define TEST_OUT_LEN  8192


/* runs toll_log(fmt, arg) with stderr in a file; returns what it wrote */
static size_t
test_logged(char *out, size_t size, const char *fmt, const char *arg)
{
    int     saved;
    FILE   *f;
    size_t  n;

    f = tmpfile();
    assert_non_null(f);

    fflush(stderr);
    saved = dup(STDERR_FILENO);
    assert_true(saved != -1);
    assert_true(dup2(fileno(f), STDERR_FILENO) != -1);

    toll_log(fmt, arg);

    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) != -1);
    close(saved);

    rewind(f);
    n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    fclose(f);

    return n;
}


static void
test_log_line(void **state)
{
    char  out[TEST_OUT_LEN];

    (void) state;

    toll_log_program("toll-settle");

    test_logged(out, sizeof(out), "redis at %s is back", "127.0.0.1:6379");
    assert_string_equal(out, "toll-settle: redis at 127.0.0.1:6379 is back\n");

    test_logged(out, sizeof(out), "%s", "");
    assert_string_equal(out, "toll-settle: \n");

    toll_log_program("tollctl");
    test_logged(out, sizeof(out), "no key \"%s\"", "k1");
    assert_string_equal(out, "tollctl: no key \"k1\"\n");
}


static void
test_log_long_message_cut(void **state)
{
    char    out[TEST_OUT_LEN], *big;
    size_t  n, prefix;

    (void) state;

    toll_log_program("toll-settle");
    prefix = strlen("toll-settle: ");

    big = malloc(3 * TOLL_LOG_MESSAGE_MAX);
    assert_non_null(big);

    /* the longest message that fits is whole */
    memset(big, 'x', TOLL_LOG_MESSAGE_MAX - 1);
    big[TOLL_LOG_MESSAGE_MAX - 1] = '\0';
    n = test_logged(out, sizeof(out), "%s", big);
    assert_int_equal(n, prefix + TOLL_LOG_MESSAGE_MAX - 1 + 1);
    assert_memory_equal(out + prefix, big, TOLL_LOG_MESSAGE_MAX - 1);
    assert_int_equal(out[n - 1], '\n');

    /* a longer one is cut to the same length, on one line */
    memset(big, 'y', 3 * TOLL_LOG_MESSAGE_MAX - 1);
    big[3 * TOLL_LOG_MESSAGE_MAX - 1] = '\0';
    n = test_logged(out, sizeof(out), "%s", big);
    assert_int_equal(n, prefix + TOLL_LOG_MESSAGE_MAX - 1 + 1);
    assert_int_equal(out[n - 1], '\n');
    assert_null(memchr(out, '\n', n - 1));

    free(big);
}


static void
test_log_program_name_bounded(void **state)
{
    char  out[TEST_OUT_LEN], name[3 * TOLL_LOG_PROGRAM_MAX];

    (void) state;

    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';

    toll_log_program(name);
    test_logged(out, sizeof(out), "%s", "m");

    assert_int_equal(strlen(out), TOLL_LOG_PROGRAM_MAX - 1 + strlen(": m\n"));
    assert_string_equal(out + TOLL_LOG_PROGRAM_MAX - 1, ": m\n");

    toll_log_program("toll-settle");
}


static void *
test_thread_mask(void *arg)
{
    sigset_t  *mask;

    mask = arg;
    pthread_sigmask(SIG_SETMASK, NULL, mask);

    return NULL;
}


static void
test_thread_blocks_signals(void **state)
{
    sigset_t   before, after, in_thread;
    pthread_t  t;

    (void) state;

    sigemptyset(&in_thread);
    pthread_sigmask(SIG_SETMASK, NULL, &before);

    assert_int_equal(toll_thread_start(&t, test_thread_mask, &in_thread), 0);
    assert_int_equal(pthread_join(t, NULL), 0);

    /* the daemon's stop signals go to the main thread only */
    assert_true(sigismember(&in_thread, SIGTERM));
    assert_true(sigismember(&in_thread, SIGINT));
    assert_true(sigismember(&in_thread, SIGHUP));
    assert_true(sigismember(&in_thread, SIGPIPE));

    /* a fault still kills the process where it happens */
    assert_false(sigismember(&in_thread, SIGSEGV));
    assert_false(sigismember(&in_thread, SIGBUS));
    assert_false(sigismember(&in_thread, SIGFPE));
    assert_false(sigismember(&in_thread, SIGILL));
    assert_false(sigismember(&in_thread, SIGABRT));

    /* and the caller's own mask is as it was */
    pthread_sigmask(SIG_SETMASK, NULL, &after);
    assert_int_equal(sigismember(&after, SIGTERM),
                     sigismember(&before, SIGTERM));
    assert_int_equal(sigismember(&after, SIGINT),
                     sigismember(&before, SIGINT));
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_log_line),
        cmocka_unit_test(test_log_long_message_cut),
        cmocka_unit_test(test_log_program_name_bounded),
        cmocka_unit_test(test_thread_blocks_signals),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
