/* Module statistics. register_module_stats() and stat_export_t exist only in a core built with
 * STATISTICS (KMSTATS=1, upstream's and Debian's default): built without it, the module runs
 * without statistics instead of failing to load on a missing symbol. */
#include <stdlib.h>
#include "core/counters.h"
#include "shim.h"

int tsilo_shim_register_stats(const char *module, const char *const *names,
		counter_val_t (*const *read)(void), int n)
{
#ifdef STATISTICS
	/* Kept for the process's life: the core keeps pointers into it. */
	stat_export_t *table = calloc(n + 1, sizeof(*table));
	if(table == NULL)
		return -1;
	for(int i = 0; i < n; i++) {
		table[i].name = (char *)names[i];
		/* With STAT_IS_FUNC the core takes stat_pointer as the function to call. */
		table[i].flags = STAT_NO_RESET | STAT_IS_FUNC;
		table[i].stat_pointer = (stat_var **)read[i];
	}
	return register_module_stats((char *)module, table) == 0 ? 0 : -1;
#else
	(void)module;
	(void)names;
	(void)read;
	(void)n;
	return 1;
#endif
}
