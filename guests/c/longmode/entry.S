/* The longmode guest's multiboot header, its 32-bit entry into IA-32e mode, the trip out of it and back, and the IDT stubs (exceptions and interrupts). */
    .intel_syntax noprefix

    .set MB1_MAGIC, 0x1BADB002
    .set MB1_FLAGS, 0x2                  /* memory information */
    .set EFER, 0xC0000080
    .set EFER_LME, 0x100
    .set CR0_PG, 0x80000000
    .set CR4_PAE, 0x20
    .set SEL_CODE64, 0x08
    .set SEL_DATA, 0x10
    .set SEL_CODE32, 0x18

    .section .multiboot, "a"
    .align 4
    .long MB1_MAGIC, MB1_FLAGS, -(MB1_MAGIC + MB1_FLAGS)

    .section .text.entry, "ax"
    .code32
    .global _start
_start:
    /* Multiboot: protected mode, paging off, EAX = magic, EBX = information. */
    mov esp, offset stack_top
    mov edi, eax
    mov esi, ebx
    /* Identity-map the first 1 GiB with 2 MiB pages: PML4[0] -> PDPT[0] -> PD. */
    mov eax, offset pdpt
    or eax, 0x3
    mov [pml4], eax
    mov eax, offset pd
    or eax, 0x3
    mov [pdpt], eax
    xor ecx, ecx
1:  mov eax, ecx
    shl eax, 21
    or eax, 0x83                         /* present, writable, 2 MiB page */
    mov [pd + ecx * 8], eax
    inc ecx
    cmp ecx, 512
    jne 1b
    /* The sequence the manuals give: PAE, CR3, EFER.LME, then CR0.PG activates IA-32e mode. */
    mov eax, cr4
    or eax, CR4_PAE
    mov cr4, eax
    mov eax, offset pml4
    mov cr3, eax
    mov ecx, EFER
    rdmsr
    or eax, EFER_LME
    wrmsr
    mov eax, cr0
    or eax, CR0_PG
    mov cr0, eax
    lgdt [gdt_pointer]
    /* ljmp SEL_CODE64:long_entry (spelled out: assemblers disagree on the syntax) */
    .byte 0xEA
    .long long_entry
    .word SEL_CODE64

    .code64
long_entry:
    mov ax, SEL_DATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov rsp, offset stack_top
    /* kmain(magic, info) */
    call kmain
2:  hlt
    jmp 2b

/*
 * uint64_t longmode_roundtrip(uint64_t *efer_lme_clear): leave IA-32e mode the
 * way the manuals allow (compatibility mode, then CR0.PG = 0), clear and set
 * EFER.LME again, turn paging back on and return to 64-bit code. Returns
 * EFER as read with paging off (LME still set, LMA must be clear); stores
 * EFER as read after LME was cleared.
 */
    .global longmode_roundtrip
longmode_roundtrip:
    push rbx
    push rsi
    mov rbx, rdi
    lea rax, [rip + 3f]
    push SEL_CODE32
    push rax
    .byte 0x48, 0xCB                     /* retfq: to SEL_CODE32, compatibility mode */
    .code32
3:  mov eax, cr0
    and eax, ~CR0_PG
    mov cr0, eax                         /* IA-32e mode off: protected mode, no paging */
    mov ecx, EFER
    rdmsr
    mov esi, eax
    and eax, ~EFER_LME
    wrmsr
    rdmsr
    mov [ebx], eax
    mov dword ptr [ebx + 4], edx
    or eax, EFER_LME
    wrmsr
    mov eax, cr0
    or eax, CR0_PG
    mov cr0, eax                         /* and on again */
    .byte 0xEA
    .long 4f
    .word SEL_CODE64
    .code64
4:  mov eax, esi
    pop rsi
    pop rbx
    ret

/* Exception stubs: each pushes an error code (0 where the CPU pushes none) and its vector. */
    .macro isr vector, has_error
isr_\vector:
    .if \has_error == 0
    push 0
    .endif
    push \vector
    jmp isr_common
    .endm

    .irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    isr \v, 0
    .endr
    .irp v, 8,10,11,12,13,14,17,21,29,30
    isr \v, 1
    .endr

/*
 * A fault the C code expected (recover_rip set): record vector and error
 * code, resume at recover_rip. Any other: report it and end (idt.c).
 */
isr_common:
    push rax
    mov rax, [rsp + 8]
    mov [rip + fault_vector], eax
    mov rax, [rsp + 16]
    mov [rip + fault_error], eax
    mov rax, [rip + recover_rip]
    test rax, rax
    jz 5f
    mov [rsp + 24], rax
    mov qword ptr [rip + recover_rip], 0
    pop rax
    add rsp, 16
    iretq
5:  mov rdi, [rsp + 8]
    mov rsi, [rsp + 24]
    and rsp, ~0xf
    call unexpected_fault
6:  hlt
    jmp 6b

/*
 * Interrupt stubs for the virq mode (virq.c): each saves the registers a C
 * call may clobber, calls irq_handler(vector) and returns with IRETQ. The
 * CPU aligned RSP to 16 before the 5-word frame; nine pushes realign it.
 */
    .macro irq vector
irq_\vector:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    mov edi, \vector
    call irq_handler
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    iretq
    .endm

    .irp v, 2,0x40,0x41,0x44,0x45,0xff
    irq \v
    .endr

    .section .rodata
    .align 8
    .global irq_table
irq_table:
    .irp v, 2,0x40,0x41,0x44,0x45,0xff
    .quad \v, irq_\v
    .endr
    .quad 0, 0

    .align 8
    .global isr_table
isr_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad isr_\v
    .endr

    .align 8
gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF                 /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF                 /* 0x10: data */
    .quad 0x00CF9A000000FFFF                 /* 0x18: 32-bit code, for the trip out of IA-32e mode */
gdt_end:
gdt_pointer:
    .word gdt_end - gdt - 1
    .quad gdt

    .section .bss
    .align 4096
    .global pdpt
pml4: .skip 4096
pdpt: .skip 4096
pd:   .skip 4096
    .skip 16384
stack_top:
