// The hv module's functions defined outside modhv.c, for its globals table.
#pragma once
#include "py/obj.h"

MP_DECLARE_CONST_FUN_OBJ_0(hv_part_count_obj);
MP_DECLARE_CONST_FUN_OBJ_1(hv_part_info_obj);
MP_DECLARE_CONST_FUN_OBJ_1(hv_part_state_obj);
MP_DECLARE_CONST_FUN_OBJ_1(hv_part_start_obj);
MP_DECLARE_CONST_FUN_OBJ_2(hv_part_stop_obj);
MP_DECLARE_CONST_FUN_OBJ_0(hv_mailbox_obj);
MP_DECLARE_CONST_FUN_OBJ_0(hv_cpus_obj);
MP_DECLARE_CONST_FUN_OBJ_VAR_BETWEEN(hv_plan_set_obj);
MP_DECLARE_CONST_FUN_OBJ_1(hv_plan_get_obj);
MP_DECLARE_CONST_FUN_OBJ_1(hv_plan_table_obj);
MP_DECLARE_CONST_FUN_OBJ_0(hv_sched_yield_obj);
MP_DECLARE_CONST_FUN_OBJ_3(hv_part_resolve_obj);
MP_DECLARE_CONST_FUN_OBJ_3(hv_part_claim_obj);
MP_DECLARE_CONST_FUN_OBJ_2(hv_console_read_obj);
MP_DECLARE_CONST_FUN_OBJ_2(hv_console_tail_obj);
MP_DECLARE_CONST_FUN_OBJ_2(hv_console_input_obj);
MP_DECLARE_CONST_FUN_OBJ_1(hv_journal_read_obj);
MP_DECLARE_CONST_FUN_OBJ_1(hv_journal_tail_obj);
MP_DECLARE_CONST_FUN_OBJ_0(hv_ptable_obj);
MP_DECLARE_CONST_FUN_OBJ_0(hv_ptable_trust_obj);
MP_DECLARE_CONST_FUN_OBJ_0(hv_backend_obj);
MP_DECLARE_CONST_FUN_OBJ_0(hv_config_text_obj);
