/*
 * srv_log.h - the daemon's log: one line per event on stderr,
 * "2026-01-02T03:04:05.678Z LEVEL message" (journald keeps the lines,
 * the level word lets an operator grep). The level is checked before the
 * arguments are formatted (Redis serverLog).
 */
#ifndef MTPD_SRV_LOG_H
#define MTPD_SRV_LOG_H

enum srv_log_level {
    SLOG_DEBUG = 0, /* per request and per state change */
    SLOG_INFO,      /* startup, shutdown, sessions coming and going */
    SLOG_WARN,      /* a client misbehaved, a state file was skipped */
    SLOG_ERROR,     /* the daemon itself failed at something */
};

extern int srv_log_level; /* lines below this level are dropped */

/* "debug" | "info" | "warn" | "error" -> level, or -1. */
int srv_log_parse_level(const char *s);
void srv_logf(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define SRV_LOG(lvl, ...)                                                   \
    do {                                                                    \
        if ((lvl) >= srv_log_level)                                         \
            srv_logf((lvl), __VA_ARGS__);                                   \
    } while (0)

#endif
