/* C macros and static inline functions of Kamailio, turned into real functions for Rust.
 * Every function here is a one-liner over the macro of the same concern. */
#ifndef TSILO_SHIM_H
#define TSILO_SHIM_H

#include <stddef.h>
#include "core/counters.h" /* counter_val_t */

struct tm_binds;
struct registrar_api;
struct cell;

/* log.c: Kamailio's logger with the module's debug level and prefix */
int tsilo_shim_log_enabled(int level);
void tsilo_shim_log(int level, const char *location, const char *func, const char *msg);

/* mem.c: shared and private (pkg) memory */
void *tsilo_shim_shm_malloc(size_t size);
void tsilo_shim_shm_free(void *p);
void *tsilo_shim_pkg_malloc(size_t size);
void tsilo_shim_pkg_free(void *p);
unsigned long tsilo_shim_shm_total(void);
unsigned long tsilo_shim_shm_available(void);

/* api.c: binding the TM and registrar APIs (static inline in their headers) */
int tsilo_shim_load_tm_api(struct tm_binds *tmb);
int tsilo_shim_load_registrar_api(struct registrar_api *api);
struct cell *tsilo_shim_t_undefined(void);

/* stats.c: the module's statistics, each read by a function; 0 registered, 1 this core has no
 * statistics (built without STATISTICS), -1 error */
int tsilo_shim_register_stats(const char *module, const char *const *names,
		counter_val_t (*const *read)(void), int n);

/* proc.c: a process of the module's own */
void tsilo_shim_cfg_update(void);

#endif
