#include "core/cfg/cfg_struct.h"
#include "shim.h"

/* A process with an endless loop must pick up config changes at the top of each round. */
void tsilo_shim_cfg_update(void) { cfg_update(); }
