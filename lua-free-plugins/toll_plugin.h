/*
 * toll_plugin.h: the C interface of toll's plugins (lua-free-plugins/).
 *
 * A plugin is a shared object with one exported function,
 * toll_plugin_entry(), that returns a toll_plugin_t: the plugin's hooks.
 * nginx loads it with "toll_plugin_load NAME PATH;" and runs it in a
 * location with "toll_plugin NAME key=value ...;".  README.md in this
 * folder is the guide.
 *
 * The rules of the interface:
 *
 *   - Both structs begin with abi_version and size.  abi_version changes
 *     only when a change breaks plugins already built; members are only
 *     ever added at the end, and size tells the other side which of them
 *     it has.  A host reads the members past a plugin's size as NULL; a
 *     plugin checks host->size before it calls a host function added
 *     after version 1 (TOLL_HOST_HAS()).
 *   - A plugin never touches money, keys or Redis: it may report the
 *     call's units (report_units) and refuse a call in its access hook,
 *     and nothing else decides what a call costs.
 *   - Hooks run in nginx's event loop, one worker process at a time: a
 *     hook that blocks (a socket, a sleep, a lock that waits, a file on
 *     a slow disk) stalls every connection of the worker, thousands of
 *     them, not only its own request.  Hooks compute and return.
 *   - Memory comes from the host: conf_alloc() lives as long as the
 *     configuration, alloc() as long as the request.  Nothing needs to
 *     be freed; a plugin that mallocs owns what it mallocs.
 *   - Strings the host gives are toll_str_t (not NUL-terminated) and
 *     live as long as the request (or, for configuration arguments,
 *     the configuration; those are also NUL-terminated).
 */

#ifndef _TOLL_PLUGIN_H_INCLUDED_
#define _TOLL_PLUGIN_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#ifdef __cplusplus
extern "C" {
#endif


#define TOLL_PLUGIN_ABI_VERSION  1

/* the exported function a host looks up */
#define TOLL_PLUGIN_ENTRY        "toll_plugin_entry"


/* what hooks and host functions return */
#define TOLL_OK          0
#define TOLL_REFUSE      1       /* access hook only: refuse the call */
#define TOLL_DECLINED    2       /* a host function: nothing to give, or
                                    nothing done (see each) */
#define TOLL_ERROR      -1


/* log levels, as nginx numbers them */
#define TOLL_LOG_ERR     4
#define TOLL_LOG_WARN    5
#define TOLL_LOG_NOTICE  6
#define TOLL_LOG_INFO    7
#define TOLL_LOG_DEBUG   8


typedef struct {
    const char                *data;
    size_t                     len;
} toll_str_t;


/* one argument of "toll_plugin NAME key=value": both NUL-terminated */
typedef struct {
    toll_str_t                 key;
    toll_str_t                 value;
} toll_arg_t;


/* who pays for the call, when toll gates it: empty strings otherwise */
typedef struct {
    toll_str_t                 buyer;
    toll_str_t                 key_id;
    toll_str_t                 service;
} toll_identity_t;


/* opaque: the host's handles of a configuration and of a request */
typedef struct toll_conf_s     toll_conf_t;
typedef struct toll_request_s  toll_request_t;


typedef struct toll_host_s {
    uint32_t                   abi_version;
    uint32_t                   size;

    /* configuration time (the conf hook) */
    void                    *(*conf_alloc)(toll_conf_t *cf, size_t size);

    /* request time; a printf format, logged with the plugin's name */
    void                     (*log)(toll_request_t *r, int level,
                                    const char *fmt, ...)
#if defined(__GNUC__)
                                    __attribute__((format(printf, 3, 4)))
#endif
                                    ;

    /* zeroed memory that lives as long as the request; NULL: none */
    void                    *(*alloc)(toll_request_t *r, size_t size);

    /* a request header's value (the first of its name, any case) */
    int                      (*request_header)(toll_request_t *r,
                                    const char *name, toll_str_t *value);

    /* a query argument's value, as sent (not unescaped) */
    int                      (*request_arg)(toll_request_t *r,
                                    const char *name, toll_str_t *value);

    int                      (*request_method)(toll_request_t *r,
                                    toll_str_t *method);

    /*
     * the request body's declared length; 0: no body; -1: a body of
     * unknown length (chunked, or HTTP/2 and 3 without content-length)
     */
    int64_t                  (*request_length)(toll_request_t *r);

    /* the response's header (headers, body and log hooks) */
    int                      (*response_header)(toll_request_t *r,
                                    const char *name, toll_str_t *value);

    /*
     * Adds a header to the response: the headers hook only (TOLL_ERROR
     * elsewhere).  The strings are copied.  A name that is not a token
     * (A-Z a-z 0-9 - _) or a value with CR or LF is refused: TOLL_ERROR.
     */
    int                      (*set_response_header)(toll_request_t *r,
                                    const char *name, const char *value);

    /* TOLL_DECLINED: the location has no "toll on" or no key passed */
    int                      (*identity)(toll_request_t *r,
                                    toll_identity_t *id);

    /*
     * The call's units: a later report replaces an earlier one, until
     * the log phase prices the call (after every plugin's log hook).
     * TOLL_DECLINED: the call is not one toll prices here; ignored.
     * TOLL_REFUSE: more than the service's max_units, which is all the
     * call will be charged for: an access hook should refuse the call
     * rather than let the upstream do work nobody pays for.
     */
    int                      (*report_units)(toll_request_t *r,
                                    uint64_t units);

    /*
     * The access hook's refusal, answered as toll answers its own:
     * application/problem+json with this status (400 to 599), code
     * ([a-z0-9_], at most 64) and detail (text, at most 256 bytes, JSON
     * escaped by the host).  The hook then returns TOLL_REFUSE.
     */
    int                      (*refuse)(toll_request_t *r, unsigned status,
                                    const char *code, const char *detail);

    /* members added after ABI version 1 go here, and only here */
} toll_host_t;


#define TOLL_HOST_HAS(host, member)                                         \
    ((host)->size >= offsetof(toll_host_t, member)                          \
                     + sizeof(((toll_host_t *) 0)->member))


typedef struct toll_plugin_s {
    uint32_t                   abi_version;   /* TOLL_PLUGIN_ABI_VERSION */
    uint32_t                   size;          /* sizeof(toll_plugin_t) */

    /*
     * Each "toll_plugin" directive, at configuration time ("nginx -t"
     * too): checks the arguments and makes the plugin's configuration
     * for that location, *conf (NULL is fine).  Returns NULL, or an
     * error message (static, or from conf_alloc) that nginx prints as
     * an [emerg] with the file and line.  Any hook may be NULL.
     */
    const char              *(*conf)(const toll_host_t *host,
                                    toll_conf_t *cf, const toll_arg_t *args,
                                    size_t nargs, void **conf);

    /*
     * Once per request, after toll's gate passed it (so identity() knows
     * the buyer) and before the request goes upstream.  *state is the
     * plugin's own per-request pointer, NULL at first, kept for the
     * hooks that follow.  TOLL_OK: pass; TOLL_REFUSE (after refuse()):
     * refused; TOLL_ERROR: answered 500.
     */
    int                      (*access)(const toll_host_t *host,
                                    toll_request_t *r, void *conf,
                                    void **state);

    /*
     * The response's status and headers, before they are sent.
     * TOLL_ERROR: the plugin sees nothing more of this request (logged);
     * the response goes on.
     */
    int                      (*headers)(const toll_host_t *host,
                                    toll_request_t *r, void *conf,
                                    void **state, unsigned status);

    /*
     * The response body, read-only, as it streams: a chunk at a time,
     * in order; last is 1 on the final call (whose len may be 0).  A
     * number or a token may be split across two calls at any byte.
     * TOLL_ERROR: as for headers.
     */
    int                      (*body)(const toll_host_t *host,
                                    toll_request_t *r, void *conf,
                                    void **state, const char *data,
                                    size_t len, int last);

    /*
     * The request is over (also when the client went away, or a plugin
     * refused): the last moment to report units.
     */
    void                     (*log)(const toll_host_t *host,
                                    toll_request_t *r, void *conf,
                                    void **state, unsigned status);

    /* members added after ABI version 1 go here, and only here */
} toll_plugin_t;


/* the smallest toll_plugin_t a version 1 host accepts */
#define TOLL_PLUGIN_SIZE_V1                                                 \
    (offsetof(toll_plugin_t, log) + sizeof(((toll_plugin_t *) 0)->log))


/*
 * What a plugin exports: TOLL_PLUGIN_ENTRY.  Visible even when the rest
 * of a plugin is built with -fvisibility=hidden, as the Makefile does.
 */
typedef const toll_plugin_t *(*toll_plugin_entry_pt)(void);

#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
const toll_plugin_t *toll_plugin_entry(void);


#ifdef __cplusplus
}
#endif

#endif /* _TOLL_PLUGIN_H_INCLUDED_ */
