//! A classic-BPF interpreter for seccomp programs, so that tests can check
//! what a compiled filter answers for a system call (the filters of wshd,
//! groved and grove-helper are each tested against their own tables this
//! way). Pure computation: it runs the program on a `struct seccomp_data`
//! built from its arguments.

/// One instruction (struct sock_filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

pub const ALLOW: u32 = 0x7fff_0000;
pub const KILL_PROCESS: u32 = 0x8000_0000;
pub const KILL_THREAD: u32 = 0;
pub const TRAP: u32 = 0x0003_0000;
pub const LOG: u32 = 0x7ffc_0000;

/// The return value of SECCOMP_RET_ERRNO with `errno`.
pub const fn errno(errno: u32) -> u32 {
    0x0005_0000 | (errno & 0xffff)
}

/// AUDIT_ARCH_X86_64.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// Run `program` for system call `nr` with `args` on x86_64 and return its
/// verdict. An instruction outside the subset seccomp allows, a jump out of
/// the program or a program that ends without returning gives
/// KILL_PROCESS (what the kernel would refuse to load is treated as
/// failing closed).
pub fn seccomp_verdict(program: &[Insn], nr: i64, args: [u64; 6]) -> u32 {
    run(program, AUDIT_ARCH_X86_64, nr as u32, args)
}

/// As `seccomp_verdict`, for any architecture number.
pub fn run(program: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    run_counted(program, arch, nr, args).0
}

/// As `run`, with the number of instructions executed (what a filter costs
/// the kernel for this call).
pub fn run_counted(program: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> (u32, usize) {
    // struct seccomp_data: nr, arch, instruction_pointer, args[6].
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + i * 8..24 + i * 8].copy_from_slice(&a.to_ne_bytes());
    }
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    let mut steps = 0usize;
    while let Some(i) = program.get(pc) {
        pc += 1;
        steps += 1;
        let jump = |pc: usize, cond: bool| pc + if cond { i.jt } else { i.jf } as usize;
        match i.code {
            // BPF_LD | BPF_W | BPF_ABS
            0x20 => {
                let at = i.k as usize;
                match data.get(at..at + 4) {
                    Some(b) if at.is_multiple_of(4) => {
                        a = u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
                    }
                    _ => return (KILL_PROCESS, steps),
                }
            }
            0x00 => a = i.k,                             // BPF_LD | BPF_IMM
            0x01 => x = i.k,                             // BPF_LDX | BPF_IMM
            0x02 => mem[(i.k & 15) as usize] = a,        // BPF_ST
            0x03 => mem[(i.k & 15) as usize] = x,        // BPF_STX
            0x60 => a = mem[(i.k & 15) as usize],        // BPF_LD | BPF_MEM
            0x61 => x = mem[(i.k & 15) as usize],        // BPF_LDX | BPF_MEM
            0x07 => x = a,                               // BPF_MISC | BPF_TAX
            0x87 => a = x,                               // BPF_MISC | BPF_TXA
            0x54 => a &= i.k,                            // BPF_ALU | BPF_AND | BPF_K
            0x44 => a |= i.k,                            // BPF_ALU | BPF_OR | BPF_K
            0x74 => a = a.checked_shr(i.k).unwrap_or(0), // BPF_ALU | BPF_RSH | BPF_K
            0x64 => a = a.checked_shl(i.k).unwrap_or(0), // BPF_ALU | BPF_LSH | BPF_K
            0x04 => a = a.wrapping_add(i.k),             // BPF_ALU | BPF_ADD | BPF_K
            0x14 => a = a.wrapping_sub(i.k),             // BPF_ALU | BPF_SUB | BPF_K
            0x05 => pc += i.k as usize,                  // BPF_JMP | BPF_JA
            0x15 => pc = jump(pc, a == i.k),             // BPF_JMP | BPF_JEQ | BPF_K
            0x25 => pc = jump(pc, a > i.k),              // BPF_JMP | BPF_JGT | BPF_K
            0x35 => pc = jump(pc, a >= i.k),             // BPF_JMP | BPF_JGE | BPF_K
            0x45 => pc = jump(pc, a & i.k != 0),         // BPF_JMP | BPF_JSET | BPF_K
            0x1d => pc = jump(pc, a == x),               // BPF_JMP | BPF_JEQ | BPF_X
            0x2d => pc = jump(pc, a > x),                // BPF_JMP | BPF_JGT | BPF_X
            0x3d => pc = jump(pc, a >= x),               // BPF_JMP | BPF_JGE | BPF_X
            0x4d => pc = jump(pc, a & x != 0),           // BPF_JMP | BPF_JSET | BPF_X
            0x06 => return (i.k, steps),                 // BPF_RET | BPF_K
            0x16 => return (a, steps),                   // BPF_RET | BPF_A
            _ => return (KILL_PROCESS, steps),
        }
    }
    (KILL_PROCESS, steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
    }

    #[test]
    fn a_hand_written_filter_gives_the_expected_verdicts() {
        // if arch != x86_64: kill; if nr == 165 (mount): EPERM; else allow.
        let p = [
            insn(0x20, 0, 0, 4),
            insn(0x15, 1, 0, AUDIT_ARCH_X86_64),
            insn(0x06, 0, 0, KILL_PROCESS),
            insn(0x20, 0, 0, 0),
            insn(0x15, 0, 1, 165),
            insn(0x06, 0, 0, errno(1)),
            insn(0x06, 0, 0, ALLOW),
        ];
        assert_eq!(seccomp_verdict(&p, 165, [0; 6]), errno(1));
        assert_eq!(seccomp_verdict(&p, 0, [0; 6]), ALLOW);
        // Paths: load, compare, (skipped kill), load, compare, return.
        assert_eq!(
            run_counted(&p, AUDIT_ARCH_X86_64, 165, [0; 6]),
            (errno(1), 5)
        );
        assert_eq!(run_counted(&p, AUDIT_ARCH_X86_64, 0, [0; 6]), (ALLOW, 5));
        assert_eq!(run_counted(&p, 0x4000_0003, 0, [0; 6]), (KILL_PROCESS, 3));
        assert_eq!(run(&p, 0x4000_0003, 165, [0; 6]), KILL_PROCESS);
        // Falling off the end, or an unknown opcode, fails closed.
        assert_eq!(seccomp_verdict(&p[..1], 0, [0; 6]), KILL_PROCESS);
        assert_eq!(
            seccomp_verdict(&[insn(0xff, 0, 0, 0)], 0, [0; 6]),
            KILL_PROCESS
        );
    }

    #[test]
    fn arguments_are_loaded_from_seccomp_data() {
        // Return the low word of args[1].
        let p = [insn(0x20, 0, 0, 16 + 8), insn(0x16, 0, 0, 0)];
        assert_eq!(
            seccomp_verdict(&p, 0, [0, 0xdead_beef, 0, 0, 0, 0]),
            0xdead_beef
        );
    }
}
