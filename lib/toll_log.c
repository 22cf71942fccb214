/*
 * toll: one line on stderr per event (toll_log.h).
 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "toll_log.h"


static char  toll_log_name[TOLL_LOG_PROGRAM_MAX] = "toll";


void
toll_log_program(const char *name)
{
    snprintf(toll_log_name, sizeof(toll_log_name), "%s", name);
}


void
toll_log(const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    toll_logv(fmt, args);
    va_end(args);
}


void
toll_logv(const char *fmt, va_list args)
{
    int     n;
    char    line[TOLL_LOG_PROGRAM_MAX + 2 + TOLL_LOG_MESSAGE_MAX];
    size_t  len;

    n = snprintf(line, TOLL_LOG_PROGRAM_MAX + 2, "%s: ", toll_log_name);
    len = (size_t) n;

    n = vsnprintf(line + len, TOLL_LOG_MESSAGE_MAX, fmt, args);
    if (n < 0) {
        n = 0;
    }

    /* the message's NUL, or its last byte when cut, makes the newline */
    len += (n < TOLL_LOG_MESSAGE_MAX) ? (size_t) n : TOLL_LOG_MESSAGE_MAX - 1;
    line[len++] = '\n';

    /* stderr is unbuffered: one fwrite() is one write(2) */
    (void) fwrite(line, 1, len, stderr);
}
