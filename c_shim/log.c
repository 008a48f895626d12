#include "core/dprint.h"
#include "shim.h"

/* Lets Rust skip formatting a message Kamailio would drop (per-module debug level, and the
 * re-entrancy guard the LOG macros use against logging from a signal handler). */
int tsilo_shim_log_enabled(int level)
{
	return DPRINT_NON_CRIT && is_printable(level);
}

/* The text comes from Rust already formatted: it is always passed as "%s", never as a format. */
void tsilo_shim_log(int level, const char *location, const char *func, const char *msg)
{
	LOG_FX(DEFAULT_FACILITY, level, NULL, location, func, "%s\n", msg);
}
