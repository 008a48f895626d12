#include "core/mem/shm.h"
#include "core/mem/pkg.h"
#include "core/mem/meminfo.h"
#include "shim.h"

void *tsilo_shim_shm_malloc(size_t size) { return shm_malloc(size); }
void tsilo_shim_shm_free(void *p) { shm_free(p); }
void *tsilo_shim_pkg_malloc(size_t size) { return pkg_malloc(size); }
void tsilo_shim_pkg_free(void *p) { pkg_free(p); }

/* Sizes of the shared memory pool: all of it (what -m gives) and what is free now. */
unsigned long tsilo_shim_shm_total(void)
{
	struct mem_info mi;
	shm_info(&mi);
	return mi.total_size;
}
unsigned long tsilo_shim_shm_available(void) { return shm_available(); }
