/*
 * toll: the log of toll-settle and tollctl, one line on stderr per
 * event, "PROGRAM: message", as the daemon has always written it (a
 * journal or a terminal adds the time).
 *
 * A line is formatted whole and written with one call, so that lines
 * from several threads never interleave.  A message longer than
 * TOLL_LOG_MESSAGE_MAX - 1 bytes is cut, never split over two lines.
 * No trailing period; values in quotes, as the messages elsewhere do.
 */

#ifndef _TOLL_LOG_H_INCLUDED_
#define _TOLL_LOG_H_INCLUDED_


#include <stdarg.h>


/* a message's bytes, its NUL included; the name and ": " come on top */
#define TOLL_LOG_MESSAGE_MAX  1024
#define TOLL_LOG_PROGRAM_MAX  32


/*
 * The name each line starts with ("toll-settle", "tollctl"); until it
 * is set, "toll".  Call it once, from main(), before any thread starts.
 */
void toll_log_program(const char *name);

/* "PROGRAM: <message>\n" on stderr */
void toll_log(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

void toll_logv(const char *fmt, va_list args)
    __attribute__((format(printf, 1, 0)));


#endif /* _TOLL_LOG_H_INCLUDED_ */
