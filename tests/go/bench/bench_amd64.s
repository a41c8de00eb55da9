#include "textflag.h"

// func goprobeBenchAsm(x int) int
//
// A few instructions of every class a uprobe can land on, each at its own offset, so the bench
// can measure what a probe costs on each: which ones the kernel emulates (cheap) and which it
// single-steps out of line (expensive). Straight-line code: every instruction runs once a call.
TEXT ·goprobeBenchAsm(SB), NOSPLIT|NOFRAME, $0-16
	MOVQ x+0(FP), AX                // mov reg, [mem]
	BYTE $0x90                      // nop
	BYTE $0x66; BYTE $0x90          // 2-byte nop (xchg ax,ax)
	BYTE $0x0f; BYTE $0x1f; BYTE $0x00 // 3-byte nop (nopl (%rax))
	BYTE $0x0f; BYTE $0x1f; BYTE $0x40; BYTE $0x00 // 4-byte nop (nopl 0x0(%rax))
	BYTE $0x0f; BYTE $0x1f; BYTE $0x44; BYTE $0x00; BYTE $0x00 // 5-byte nop (nopl 0x0(%rax,%rax,1))
	BYTE $0x66; BYTE $0x0f; BYTE $0x1f; BYTE $0x44; BYTE $0x00; BYTE $0x00 // 6-byte nop (nopw)
	PUSHQ BP                        // push
	POPQ BP                         // pop
	MOVQ AX, CX                     // mov reg, reg
	LEAQ 3(AX)(CX*2), AX            // lea
	ADDQ $1, AX                     // add
	CMPQ AX, $0                     // cmp
	JEQ zero                        // jcc (not taken unless x == -2)
	JMP out                         // jmp
zero:
	MOVQ $1, AX
out:
	MOVQ AX, ret+8(FP)
	RET                             // ret
