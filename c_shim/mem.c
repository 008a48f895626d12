#include "core/mem/shm.h"
#include "core/mem/pkg.h"
#include "shim.h"

void *tsilo_shim_shm_malloc(size_t size) { return shm_malloc(size); }
void tsilo_shim_shm_free(void *p) { shm_free(p); }
void *tsilo_shim_pkg_malloc(size_t size) { return pkg_malloc(size); }
void tsilo_shim_pkg_free(void *p) { pkg_free(p); }
