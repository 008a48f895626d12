/* Layout probe, compiled and run by build.rs with the module's defines: prints, as Rust
 * constants, what gcc computes for every struct field the module reads. The unit test
 * `sys::tests::layout_matches_c` compares them with bindgen's view. */
#include <stdio.h>
#include <stddef.h>
#include "core/parser/msg_parser.h"
#include "core/sr_module.h"
#include "modules/tm/tm_load.h"
#include "modules/registrar/api.h"
#include "modules/usrloc/usrloc.h"
#include "core/cfg/cfg_struct.h"

#define OFF(name, type, field) \
	printf("pub const " #name ": usize = %zu;\n", offsetof(type, field))
#define SIZE(name, type) printf("pub const " #name ": usize = %zu;\n", sizeof(type))

int main(void)
{
	SIZE(SIZEOF_CELL, struct cell);
	OFF(CELL_HASH_INDEX, struct cell, hash_index);
	OFF(CELL_LABEL, struct cell, label);
	OFF(CELL_FLAGS, struct cell, flags);
	OFF(CELL_UAS, struct cell, uas);
	OFF(UAS_STATUS, struct ua_server, status);
	OFF(UAS_REQUEST, struct ua_server, request);
	SIZE(SIZEOF_SIP_MSG, struct sip_msg);
	OFF(SIP_MSG_FIRST_LINE, struct sip_msg, first_line);
	OFF(SIP_MSG_NEW_URI, struct sip_msg, new_uri);
	OFF(SIP_MSG_CONTACT, struct sip_msg, contact);
	OFF(FIRST_LINE_U, struct msg_start, u);
	OFF(FIRST_LINE_REQUEST_URI, struct msg_start, u.request.uri);
	SIZE(SIZEOF_TM_BINDS, struct tm_binds);
	OFF(TM_BINDS_T_APPEND_BRANCHES, struct tm_binds, t_append_branches);
	OFF(TM_BINDS_UNREF_CELL, struct tm_binds, unref_cell);
	SIZE(SIZEOF_REGISTRAR_API, registrar_api_t);
	OFF(REGISTRAR_LOOKUP_TO_DSET, registrar_api_t, lookup_to_dset);
	SIZE(SIZEOF_MODULE_EXPORTS, struct module_exports);
	SIZE(SIZEOF_SIP_URI, struct sip_uri);
	OFF(SIP_URI_USER, struct sip_uri, user);
	OFF(USRLOC_API_USE_DOMAIN, usrloc_api_t, use_domain);
	OFF(CFG_GROUP_HANDLE, cfg_group_t, handle);
	OFF(CFG_MAPPING_OFFSET, cfg_mapping_t, offset);
	return 0;
}
