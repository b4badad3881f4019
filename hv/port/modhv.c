// The native `hv` module: what the C core knows, offered to Taipan's MicroPython code.
#include <stdint.h>
#include <string.h>
#include "py/obj.h"
#include "py/runtime.h"
#include "py/objstr.h"
#include "py/mphal.h"
#include "shared/readline/readline.h"
#include "shared/runtime/interrupt_char.h"
#include "acpi.h"
#include "cpu.h"
#include "framebuffer.h"
#include "identity_map.h"
#include "layout.h"
#include "multiboot.h"
#include "page_alloc.h"
#include "modhv.h"
#include "port_api.h"
#include "reboot.h"
#include "tsc.h"
#include "wallclock.h"

static void dict_store(mp_obj_t dict, qstr key, mp_obj_t value)
{
    mp_obj_dict_store(dict, MP_OBJ_NEW_QSTR(key), value);
}

static mp_obj_t str_obj(const char *s)
{
    return mp_obj_new_str(s, strlen(s));
}

// hv.cpu() -> dict: identity, virtualization support and why.
static mp_obj_t hv_cpu(void)
{
    const struct cpu_info *c = cpu_info_get();
    mp_obj_t d = mp_obj_new_dict(0);
    dict_store(d, MP_QSTR_vendor, str_obj(c->vendor));
    dict_store(d, MP_QSTR_brand, str_obj(c->brand));
    dict_store(d, MP_QSTR_family, mp_obj_new_int(c->family));
    dict_store(d, MP_QSTR_model, mp_obj_new_int(c->model));
    dict_store(d, MP_QSTR_stepping, mp_obj_new_int(c->stepping));
    dict_store(d, MP_QSTR_virt, str_obj(c->virt));
    dict_store(d, MP_QSTR_virt_note, str_obj(c->virt_note));
    dict_store(d, MP_QSTR_vmx, mp_obj_new_bool(c->vmx));
    dict_store(d, MP_QSTR_vmx_usable, mp_obj_new_bool(c->vmx_usable));
    dict_store(d, MP_QSTR_feature_control, mp_obj_new_int_from_ull(c->feature_control));
    dict_store(d, MP_QSTR_ept, mp_obj_new_bool(c->ept));
    dict_store(d, MP_QSTR_unrestricted, mp_obj_new_bool(c->unrestricted_guest));
    dict_store(d, MP_QSTR_svm, mp_obj_new_bool(c->svm));
    dict_store(d, MP_QSTR_svm_usable, mp_obj_new_bool(c->svm_usable));
    dict_store(d, MP_QSTR_npt, mp_obj_new_bool(c->npt));
    dict_store(d, MP_QSTR_nrips, mp_obj_new_bool(c->nrips));
    dict_store(d, MP_QSTR_hypervisor, mp_obj_new_bool(c->hypervisor_present));
    dict_store(d, MP_QSTR_hv_vendor, str_obj(c->hv_vendor_name));
    dict_store(d, MP_QSTR_hv_signature, str_obj(c->hv_signature));
    dict_store(d, MP_QSTR_nested_note, str_obj(c->nested_note));
    dict_store(d, MP_QSTR_page_1g, mp_obj_new_bool(c->page_1g));
    // The limits this CPU's GDTR and IDTR hold now (after VM exits, on CPU 0, where this runs).
    struct __attribute__((packed)) { uint16_t limit; uint64_t base; } gdtr, idtr;
    __asm__ volatile("sgdt %0; sidt %1" : "=m"(gdtr), "=m"(idtr));
    dict_store(d, MP_QSTR_gdtr_limit, mp_obj_new_int(gdtr.limit));
    dict_store(d, MP_QSTR_idtr_limit, mp_obj_new_int(idtr.limit));
    dict_store(d, MP_QSTR_nested_1g, mp_obj_new_bool(c->nested_1g));
    dict_store(d, MP_QSTR_preemption_timer, mp_obj_new_bool(c->preemption_timer));
    dict_store(d, MP_QSTR_tsc_khz, mp_obj_new_int_from_ull(tsc_khz()));
    return d;
}
static MP_DEFINE_CONST_FUN_OBJ_0(hv_cpu_obj, hv_cpu);

// hv.memmap() -> [(base, length, type)], as the boot loader reported it.
static mp_obj_t hv_memmap(void)
{
    const struct boot_info *bi = boot_info_get();
    mp_obj_t list = mp_obj_new_list(0, NULL);
    for (uint32_t i = 0; i < bi->region_count; i++) {
        const struct boot_region *r = &bi->regions[i];
        mp_obj_t t[3] = {
            mp_obj_new_int_from_ull(r->base), mp_obj_new_int_from_ull(r->length), mp_obj_new_int(r->type),
        };
        mp_obj_list_append(list, mp_obj_new_tuple(3, t));
    }
    return list;
}
static MP_DEFINE_CONST_FUN_OBJ_0(hv_memmap_obj, hv_memmap);

// hv.acpi() -> dict: where the RSDP came from and what the MADT lists (the CPUs' APIC IDs, the IOAPICs).
static mp_obj_t hv_acpi(void)
{
    const struct acpi_info *a = acpi_get();
    mp_obj_t d = mp_obj_new_dict(0);
    dict_store(d, MP_QSTR_rsdp_source, str_obj(a->rsdp_source));
    dict_store(d, MP_QSTR_rsdp_address, mp_obj_new_int_from_ull(a->rsdp_address));
    dict_store(d, MP_QSTR_revision, mp_obj_new_int(a->revision));
    dict_store(d, MP_QSTR_oem, str_obj(a->oem_id));
    dict_store(d, MP_QSTR_madt_address, mp_obj_new_int_from_ull(a->madt_address));
    dict_store(d, MP_QSTR_lapic_address, mp_obj_new_int_from_ull(a->lapic_address));
    mp_obj_t cpus = mp_obj_new_list(0, NULL);
    for (uint32_t i = 0; i < a->cpu_count && i < ACPI_CPUS_MAX; i++) {
        mp_obj_t t[3] = { mp_obj_new_int(a->cpus[i].apic_id), mp_obj_new_int(a->cpus[i].acpi_id),
                          mp_obj_new_bool(a->cpus[i].enabled) };
        mp_obj_list_append(cpus, mp_obj_new_tuple(3, t));
    }
    dict_store(d, MP_QSTR_cpus, cpus);
    mp_obj_t ioapics = mp_obj_new_list(0, NULL);
    for (uint32_t i = 0; i < a->ioapic_count; i++) {
        mp_obj_t t[3] = { mp_obj_new_int(a->ioapics[i].id), mp_obj_new_int_from_ull(a->ioapics[i].address),
                          mp_obj_new_int(a->ioapics[i].gsi_base) };
        mp_obj_list_append(ioapics, mp_obj_new_tuple(3, t));
    }
    dict_store(d, MP_QSTR_ioapics, ioapics);
    dict_store(d, MP_QSTR_problem, str_obj(a->problem));
    return d;
}
static MP_DEFINE_CONST_FUN_OBJ_0(hv_acpi_obj, hv_acpi);

// hv.boot() -> dict: which loader and protocol, the command line, the modules.
static mp_obj_t hv_boot(void)
{
    const struct boot_info *bi = boot_info_get();
    mp_obj_t d = mp_obj_new_dict(0);
    dict_store(d, MP_QSTR_protocol, str_obj(bi->protocol == 2 ? "multiboot2" : "multiboot1"));
    dict_store(d, MP_QSTR_loader, str_obj(bi->loader));
    dict_store(d, MP_QSTR_cmdline, str_obj(bi->cmdline));
    mp_obj_t mods = mp_obj_new_list(0, NULL);
    for (uint32_t i = 0; i < bi->module_count; i++) {
        const struct boot_module *m = &bi->modules[i];
        mp_obj_t t[3] = {
            mp_obj_new_int_from_ull(m->start), mp_obj_new_int_from_ull(m->end), str_obj(m->cmdline),
        };
        mp_obj_list_append(mods, mp_obj_new_tuple(3, t));
    }
    dict_store(d, MP_QSTR_modules, mods);
    dict_store(d, MP_QSTR_map_source, str_obj(boot_map_source_name(bi->map_source)));
    dict_store(d, MP_QSTR_map_entries, mp_obj_new_int(bi->map_entries));
    dict_store(d, MP_QSTR_efi, mp_obj_new_bool(bi->efi_bits != 0));
    dict_store(d, MP_QSTR_efi_bits, mp_obj_new_int(bi->efi_bits));
    dict_store(d, MP_QSTR_efi_system_table, mp_obj_new_int_from_ull(bi->efi_system_table));
    dict_store(d, MP_QSTR_efi_boot_services, mp_obj_new_bool(bi->efi_boot_services));
    mp_obj_t fb = mp_const_none;
    if (bi->have_framebuffer) {
        fb = mp_obj_new_dict(0);
        dict_store(fb, MP_QSTR_addr, mp_obj_new_int_from_ull(bi->fb.addr));
        dict_store(fb, MP_QSTR_width, mp_obj_new_int(bi->fb.width));
        dict_store(fb, MP_QSTR_height, mp_obj_new_int(bi->fb.height));
        dict_store(fb, MP_QSTR_bpp, mp_obj_new_int(bi->fb.bpp));
        dict_store(fb, MP_QSTR_type, str_obj(bi->fb.type == 1 ? "rgb" : bi->fb.type == 2 ? "ega-text" : "indexed"));
        dict_store(fb, MP_QSTR_banner, mp_obj_new_bool(framebuffer_drawn()));
    }
    dict_store(d, MP_QSTR_framebuffer, fb);
    return d;
}
static MP_DEFINE_CONST_FUN_OBJ_0(hv_boot_obj, hv_boot);

// hv.mem() -> dict: the page allocator's counts and owners, and the heap's size.
static mp_obj_t hv_mem(void)
{
    struct page_stats st;
    page_alloc_stats(&st);
    mp_obj_t d = mp_obj_new_dict(0);
    dict_store(d, MP_QSTR_page_size, mp_obj_new_int(PAGE_SIZE));
    dict_store(d, MP_QSTR_total_pages, mp_obj_new_int_from_ull(st.total_pages));
    dict_store(d, MP_QSTR_free_pages, mp_obj_new_int_from_ull(st.free_pages));
    dict_store(d, MP_QSTR_reserved_pages, mp_obj_new_int_from_ull(st.reserved_pages));
    dict_store(d, MP_QSTR_heap_total, mp_obj_new_int_from_ull(port_heap_bytes()));
    dict_store(d, MP_QSTR_high_pages, mp_obj_new_int_from_ull(st.high_pages));
    dict_store(d, MP_QSTR_high_free_pages, mp_obj_new_int_from_ull(st.high_free_pages));
    dict_store(d, MP_QSTR_ram_top, mp_obj_new_int_from_ull(st.top));
    const struct identity_map_stats *im = identity_map_get();
    dict_store(d, MP_QSTR_mapped_top, mp_obj_new_int_from_ull(im->top));
    dict_store(d, MP_QSTR_map_1g, mp_obj_new_int(im->pages_1g));
    dict_store(d, MP_QSTR_map_2m, mp_obj_new_int(im->pages_2m));
    mp_obj_t owners = mp_obj_new_list(0, NULL);
    const struct page_owner *o;
    for (size_t i = 0; (o = page_owner_at(i)) != NULL; i++) {
        mp_obj_t t[3] = { str_obj(o->name), mp_obj_new_int_from_ull(o->addr), mp_obj_new_int_from_ull(o->npages) };
        mp_obj_list_append(owners, mp_obj_new_tuple(3, t));
    }
    dict_store(d, MP_QSTR_owners, owners);
    return d;
}
static MP_DEFINE_CONST_FUN_OBJ_0(hv_mem_obj, hv_mem);

// hv.peek(addr[, size]) reads physical memory as the hypervisor sees it; an
// address the hypervisor doesn't map faults like any other bad access.
static mp_obj_t hv_peek(size_t n_args, const mp_obj_t *args)
{
    uintptr_t addr = (uintptr_t)mp_obj_get_int_truncated(args[0]);
    mp_int_t size = n_args > 1 ? mp_obj_get_int(args[1]) : 8;
    switch (size) {
        case 1: return mp_obj_new_int(*(volatile uint8_t *)addr);
        case 2: return mp_obj_new_int(*(volatile uint16_t *)addr);
        case 4: return mp_obj_new_int_from_uint(*(volatile uint32_t *)addr);
        case 8: return mp_obj_new_int_from_ull(*(volatile uint64_t *)addr);
    }
    mp_raise_ValueError(MP_ERROR_TEXT("size must be 1, 2, 4 or 8"));
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(hv_peek_obj, 1, 2, hv_peek);

// hv.ticks() -> the TSC now (its rate: hv.clock()["tsc_khz"]).
static mp_obj_t hv_ticks(void)
{
    return mp_obj_new_int_from_ull(tsc_read());
}
static MP_DEFINE_CONST_FUN_OBJ_0(hv_ticks_obj, hv_ticks);

// hv.repl(): MicroPython's REPL on the console until Ctrl-D (the shell's `py`).
static mp_obj_t hv_repl(void)
{
    port_repl();
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_0(hv_repl_obj, hv_repl);

// hv.reboot(): reset the machine.
static mp_obj_t hv_reboot(void)
{
    machine_reboot();
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_0(hv_reboot_obj, hv_reboot);

// hv.set_idle(fn): fn() runs whenever the console waits for a key (the scheduler's tick).
static mp_obj_t hv_set_idle(mp_obj_t fn)
{
    port_set_idle(fn);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(hv_set_idle_obj, hv_set_idle);


// hv.poll_char() -> the next byte typed at the console, or -1 (never waits).
static mp_obj_t hv_poll_char(void)
{
    return mp_obj_new_int(mp_hal_stdin_poll_chr());
}
static MP_DEFINE_CONST_FUN_OBJ_0(hv_poll_char_obj, hv_poll_char);

// hv.typing() -> whether someone typed at the console within the last second.
static mp_obj_t hv_typing(void)
{
    return mp_obj_new_bool(port_typing());
}
static MP_DEFINE_CONST_FUN_OBJ_0(hv_typing_obj, hv_typing);

// hv.write(data): bytes straight to the console, line ends made CR LF for the terminal.
static mp_obj_t hv_write(mp_obj_t data)
{
    mp_buffer_info_t buf;
    mp_get_buffer_raise(data, &buf, MP_BUFFER_READ);
    mp_hal_stdout_tx_strn_cooked(buf.buf, buf.len);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(hv_write_obj, hv_write);

// A dict whose keys are the given words as qstrs: what readline's completion searches.
static mp_obj_t words_dict(mp_obj_t words)
{
    mp_obj_t dict = mp_obj_new_dict(0);
    mp_obj_iter_buf_t iter_buf;
    mp_obj_t iter = mp_getiter(words, &iter_buf);
    mp_obj_t word;
    while ((word = mp_iternext(iter)) != MP_OBJ_STOP_ITERATION) {
        size_t len;
        const char *s = mp_obj_str_get_data(word, &len);
        mp_obj_dict_store(dict, MP_OBJ_NEW_QSTR(qstr_from_strn(s, len)), mp_const_true);
    }
    return dict;
}

// hv.input(prompt, first_words, later_words) -> bytes: one line typed at the
// console, with editing, history and TAB completion (the first word from
// first_words, the others from later_words). KeyboardInterrupt for Ctrl-C,
// EOFError for Ctrl-D on an empty line, like input(); bytes, because a line
// is whatever arrived on the wire. A line longer than 4096 bytes raises
// OverflowError once it ends: none of it is for running.
static mp_obj_t hv_input(mp_obj_t prompt, mp_obj_t first_words, mp_obj_t later_words)
{
    mp_obj_t first = words_dict(first_words);
    mp_obj_t later = words_dict(later_words);
    vstr_t line;
    vstr_init(&line, 32);
    bool overlong;
    int ret = port_input(&line, mp_obj_str_get_str(prompt), first, later, &overlong);
    if (overlong) {
        mp_raise_msg_varg(&mp_type_OverflowError, MP_ERROR_TEXT("a line holds at most %d bytes; "
                          "this one was longer and nothing of it ran"), PORT_LINE_MAX);
    }
    if (ret == CHAR_CTRL_C) {
        mp_raise_type(&mp_type_KeyboardInterrupt);
    }
    if (ret == CHAR_CTRL_D && line.len == 0) {
        mp_raise_type(&mp_type_EOFError);
    }
    return mp_obj_new_bytes_from_vstr(&line);
}
static MP_DEFINE_CONST_FUN_OBJ_3(hv_input_obj, hv_input);

// hv.interruptible(fn, arg) -> None, or the exception fn(arg) raised. Ctrl-C
// interrupts fn and nothing else: before and after it the shell's own code
// runs with Ctrl-C an ordinary key (readline's "cancel the line"), so no
// KeyboardInterrupt can land between the shell's lines, not even one typed
// as fn returned.
static mp_obj_t hv_interruptible(mp_obj_t fn, mp_obj_t arg)
{
    mp_obj_t raised = mp_const_none;
    nlr_buf_t nlr;
    mp_hal_set_interrupt_char(CHAR_CTRL_C);
    if (nlr_push(&nlr) == 0) {
        mp_call_function_1(fn, arg);
        nlr_pop();
    } else {
        raised = MP_OBJ_FROM_PTR(nlr.ret_val);
    }
    mp_hal_set_interrupt_char(-1);
    mp_handle_pending(false);
    return raised;
}
static MP_DEFINE_CONST_FUN_OBJ_2(hv_interruptible_obj, hv_interruptible);

// hv.VERSION: Taipan's version, as the banner shows it.
static MP_DEFINE_STR_OBJ(hv_version_obj, TAIPAN_VERSION);

static const mp_rom_map_elem_t hv_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_hv) },
    { MP_ROM_QSTR(MP_QSTR_VERSION), MP_ROM_PTR(&hv_version_obj) },
    { MP_ROM_QSTR(MP_QSTR_cpu), MP_ROM_PTR(&hv_cpu_obj) },
    { MP_ROM_QSTR(MP_QSTR_clock), MP_ROM_PTR(&hv_clock_obj) },
    { MP_ROM_QSTR(MP_QSTR_memmap), MP_ROM_PTR(&hv_memmap_obj) },
    { MP_ROM_QSTR(MP_QSTR_acpi), MP_ROM_PTR(&hv_acpi_obj) },
    { MP_ROM_QSTR(MP_QSTR_boot), MP_ROM_PTR(&hv_boot_obj) },
    { MP_ROM_QSTR(MP_QSTR_mem), MP_ROM_PTR(&hv_mem_obj) },
    { MP_ROM_QSTR(MP_QSTR_peek), MP_ROM_PTR(&hv_peek_obj) },
    { MP_ROM_QSTR(MP_QSTR_ticks), MP_ROM_PTR(&hv_ticks_obj) },
    { MP_ROM_QSTR(MP_QSTR_repl), MP_ROM_PTR(&hv_repl_obj) },
    { MP_ROM_QSTR(MP_QSTR_reboot), MP_ROM_PTR(&hv_reboot_obj) },
    { MP_ROM_QSTR(MP_QSTR_set_idle), MP_ROM_PTR(&hv_set_idle_obj) },
    { MP_ROM_QSTR(MP_QSTR_write), MP_ROM_PTR(&hv_write_obj) },
    { MP_ROM_QSTR(MP_QSTR_poll_char), MP_ROM_PTR(&hv_poll_char_obj) },
    { MP_ROM_QSTR(MP_QSTR_typing), MP_ROM_PTR(&hv_typing_obj) },
    { MP_ROM_QSTR(MP_QSTR_input), MP_ROM_PTR(&hv_input_obj) },
    { MP_ROM_QSTR(MP_QSTR_interruptible), MP_ROM_PTR(&hv_interruptible_obj) },
    { MP_ROM_QSTR(MP_QSTR_part_count), MP_ROM_PTR(&hv_part_count_obj) },
    { MP_ROM_QSTR(MP_QSTR_part_info), MP_ROM_PTR(&hv_part_info_obj) },
    { MP_ROM_QSTR(MP_QSTR_part_state), MP_ROM_PTR(&hv_part_state_obj) },
    { MP_ROM_QSTR(MP_QSTR_part_start), MP_ROM_PTR(&hv_part_start_obj) },
    { MP_ROM_QSTR(MP_QSTR_part_stop), MP_ROM_PTR(&hv_part_stop_obj) },
    { MP_ROM_QSTR(MP_QSTR_mailbox), MP_ROM_PTR(&hv_mailbox_obj) },
    { MP_ROM_QSTR(MP_QSTR_heap_denials), MP_ROM_PTR(&hv_heap_denials_obj) },
    { MP_ROM_QSTR(MP_QSTR_cpus), MP_ROM_PTR(&hv_cpus_obj) },
    { MP_ROM_QSTR(MP_QSTR_plan_set), MP_ROM_PTR(&hv_plan_set_obj) },
    { MP_ROM_QSTR(MP_QSTR_plan_get), MP_ROM_PTR(&hv_plan_get_obj) },
    { MP_ROM_QSTR(MP_QSTR_plan_table), MP_ROM_PTR(&hv_plan_table_obj) },
    { MP_ROM_QSTR(MP_QSTR_sched_yield), MP_ROM_PTR(&hv_sched_yield_obj) },
    { MP_ROM_QSTR(MP_QSTR_part_resolve), MP_ROM_PTR(&hv_part_resolve_obj) },
    { MP_ROM_QSTR(MP_QSTR_part_claim), MP_ROM_PTR(&hv_part_claim_obj) },
    { MP_ROM_QSTR(MP_QSTR_part_claim_mmio), MP_ROM_PTR(&hv_part_claim_mmio_obj) },
    { MP_ROM_QSTR(MP_QSTR_part_irq), MP_ROM_PTR(&hv_part_irq_obj) },
    { MP_ROM_QSTR(MP_QSTR_console_read), MP_ROM_PTR(&hv_console_read_obj) },
    { MP_ROM_QSTR(MP_QSTR_console_tail), MP_ROM_PTR(&hv_console_tail_obj) },
    { MP_ROM_QSTR(MP_QSTR_console_input), MP_ROM_PTR(&hv_console_input_obj) },
    { MP_ROM_QSTR(MP_QSTR_journal_read), MP_ROM_PTR(&hv_journal_read_obj) },
    { MP_ROM_QSTR(MP_QSTR_journal_tail), MP_ROM_PTR(&hv_journal_tail_obj) },
    { MP_ROM_QSTR(MP_QSTR_ptable), MP_ROM_PTR(&hv_ptable_obj) },
    { MP_ROM_QSTR(MP_QSTR_ptable_trust), MP_ROM_PTR(&hv_ptable_trust_obj) },
    { MP_ROM_QSTR(MP_QSTR_backend), MP_ROM_PTR(&hv_backend_obj) },
    { MP_ROM_QSTR(MP_QSTR_config_text), MP_ROM_PTR(&hv_config_text_obj) },
    { MP_ROM_QSTR(MP_QSTR_load_module), MP_ROM_PTR(&hv_load_module_obj) },
    { MP_ROM_QSTR(MP_QSTR_run_guarded), MP_ROM_PTR(&hv_run_guarded_obj) },
    { MP_ROM_QSTR(MP_QSTR_wake_at), MP_ROM_PTR(&hv_wake_at_obj) },
};
static MP_DEFINE_CONST_DICT(hv_module_globals, hv_module_globals_table);

const mp_obj_module_t hv_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&hv_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR_hv, hv_module);
