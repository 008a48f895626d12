#include "modules/tm/tm_load.h"
#include "modules/registrar/api.h"
#include "shim.h"

int tsilo_shim_load_tm_api(struct tm_binds *tmb) { return load_tm_api(tmb); }
int tsilo_shim_load_registrar_api(struct registrar_api *api) { return registrar_load_api(api); }
struct cell *tsilo_shim_t_undefined(void) { return T_UNDEFINED; }
