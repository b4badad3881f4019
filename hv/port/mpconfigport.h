// Feature switches for MicroPython on Taipan: a 64-bit interpreter with no OS beneath it.
#include <stdint.h>

#define MICROPY_CONFIG_ROM_LEVEL            (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)

// The hypervisor has megabytes to spare: favour speed and full error text.
#define MICROPY_ENABLE_GC                   (1)
#define MICROPY_ENABLE_FINALISER            (1)
#define MICROPY_ENABLE_EMERGENCY_EXCEPTION_BUF (1)
#define MICROPY_EMERGENCY_EXCEPTION_BUF_SIZE (256)
#define MICROPY_STACK_CHECK                 (1)
#define MICROPY_MEM_STATS                   (1)
#define MICROPY_MALLOC_USES_ALLOCATED_SIZE  (1)
#define MICROPY_LONGINT_IMPL                (MICROPY_LONGINT_IMPL_MPZ)
#define MICROPY_FLOAT_IMPL                  (MICROPY_FLOAT_IMPL_DOUBLE)
#define MICROPY_ERROR_REPORTING             (MICROPY_ERROR_REPORTING_DETAILED)
#define MICROPY_WARNINGS                    (1)
#define MICROPY_USE_INTERNAL_ERRNO          (1)
#define MICROPY_USE_INTERNAL_PRINTF         (1)

// x86-64 native code: the identity map is executable, so @native and @viper work.
#define MICROPY_EMIT_X64                    (1)
#define MICROPY_PERSISTENT_CODE_LOAD        (1)

// The console: line editing and history for the shell's input(), the
// friendly and raw REPLs (the raw one is how run-tests.py drives the board).
#define MICROPY_HELPER_REPL                 (1)
#define MICROPY_REPL_AUTO_INDENT            (1)
#define MICROPY_READLINE_HISTORY_SIZE       (16)
#define MICROPY_KBD_EXCEPTION               (1)
#define MICROPY_PY_BUILTINS_INPUT           (1)
#define MICROPY_PY_SYS_STDFILES             (1)
#define MICROPY_PY_SYS_STDIO_BUFFER         (0)
#define MICROPY_PY_SYS_PLATFORM             "taipan"
#define MICROPY_HW_BOARD_NAME               "Taipan hypervisor"
#define MICROPY_HW_MCU_NAME                 "x86_64"

// `time`: ticks and sleeps from the TSC (sleeping runs the partitions, see
// port_wait_until), the time of day from the CMOS RTC read at boot. Seconds
// count from 1970 as in CPython; the RTC is taken to hold UTC.
#define MICROPY_PY_TIME                     (1)
#define MICROPY_PY_TIME_GMTIME_LOCALTIME_MKTIME (1)
#define MICROPY_PY_TIME_TIME_TIME_NS        (1)
#define MICROPY_PY_TIME_INCLUDEFILE         "modtime_port.c"
#define MICROPY_EPOCH_IS_1970               (1)

// Nothing beneath us offers files, sockets or threads.
#define MICROPY_VFS                         (0)
#define MICROPY_READER_VFS                  (0)
#define MICROPY_PY_OS                       (0)
#define MICROPY_PY_SELECT                   (0)
#define MICROPY_PY_ASYNCIO                  (0)
#define MICROPY_PY_MACHINE                  (0)
#define MICROPY_PY_NETWORK                  (0)
#define MICROPY_PY_SOCKET                   (0)
#define MICROPY_PY_SSL                      (0)
#define MICROPY_PY_BTREE                    (0)
#define MICROPY_PY_THREAD                   (0)
#define MICROPY_PY_OPENAMP                  (0)

// random.seed() with no argument draws from the TSC.
#define MICROPY_PY_RANDOM_SEED_INIT_FUNC    (mp_hal_random_seed())

// Let a running Python loop notice Ctrl-C on the serial line.
#define MICROPY_VM_HOOK_COUNT               (256)
#define MICROPY_VM_HOOK_INIT                static unsigned int vm_hook_divisor = MICROPY_VM_HOOK_COUNT;
#define MICROPY_VM_HOOK_POLL                if (--vm_hook_divisor == 0) { \
        vm_hook_divisor = MICROPY_VM_HOOK_COUNT; \
        mp_hal_poll_input(); \
}
// Loops also check the time budget of user Python (hv.run_guarded).
#define MICROPY_VM_HOOK_LOOP                if (--vm_hook_divisor == 0) { \
        vm_hook_divisor = MICROPY_VM_HOOK_COUNT; \
        port_vm_loop_hook(); \
}
#define MICROPY_VM_HOOK_RETURN              MICROPY_VM_HOOK_POLL

typedef int64_t mp_int_t;
typedef uint64_t mp_uint_t;
typedef int64_t mp_off_t;

#define MP_SSIZE_MAX                        INT64_MAX
#define UINT_FMT                            "%lu"
#define INT_FMT                             "%ld"

#define MICROPY_ALLOC_PATH_MAX              (256)
#define MICROPY_PORT_ROOT_POINTERS
#define MP_STATE_PORT                       MP_STATE_VM

#include <alloca.h>
#define MP_NEED_LOG2                        (1)

#define MP_PLAT_PRINT_STRN(str, len)        mp_hal_stdout_tx_strn_cooked(str, len)

// input() reads through the port so Ctrl-A can open the raw REPL (main.c).
#define mp_hal_readline                     port_readline
struct _vstr_t;
int port_readline(struct _vstr_t *line, const char *prompt);

uint32_t mp_hal_random_seed(void);
void mp_hal_poll_input(void);
void port_vm_loop_hook(void);
