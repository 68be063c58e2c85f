//! Compiles the resolved policy into one classic-BPF program: a prelude
//! (wrong arch → kill; load the number), then a binary search over
//! intervals of system call numbers that share a verdict. Consecutive
//! allowed calls (most of the table) form one interval, so the search has
//! ~100 leaves and any system call takes ~7 comparisons; numbers above the
//! last named call (future calls, x32's bit 30, garbage) fall into the last
//! interval, whose verdict is the default.
//!
//! The kernel runs the program once per number at install time and caches
//! the numbers it always allows (the verdict depends on nothing but the
//! number and arch): for those the filter costs nothing per call. Only the
//! instructions its emulator understands are used on those paths (loads of
//! the number and arch, JA, JEQ/JGE/JSET with constants, RET).

use super::{Action, When};

// Classic BPF (linux/bpf_common.h, linux/filter.h).
/// BPF_LD | BPF_W | BPF_ABS.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JA: u16 = 0x05;
const BPF_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JGE_K: u16 = 0x05 | 0x30;
const BPF_JSET_K: u16 = 0x05 | 0x40;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`: the number, the arch, the arguments
/// (8 bytes each; the low half first on little-endian x86_64).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;

/// `AUDIT_ARCH_X86_64` (linux/audit.h).
pub const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// SECCOMP_RET_ERRNO with `e`.
pub fn ret_errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A conditional jump offset, or an error if it outgrew 8 bits.
fn offset(n: usize) -> Result<u8, String> {
    u8::try_from(n).map_err(|_| format!("a jump of {n} instructions does not fit classic BPF"))
}

/// What an interval of numbers answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    /// A fixed verdict (allow, or an errno).
    Ret(u32),
    /// Allow unless argument `arg` meets `when`; then `errno`.
    Check { arg: u8, when: When, errno: i32 },
}

fn leaf(action: Action) -> Leaf {
    match action {
        Action::Allow => Leaf::Ret(libc::SECCOMP_RET_ALLOW),
        Action::Deny(e) => Leaf::Ret(ret_errno(e)),
        Action::AllowUnless { arg, when, errno } => Leaf::Check { arg, when, errno },
    }
}

/// A leaf's code; always ends in a return. Arguments are judged on their
/// low 32 bits: every argument checked is an int or a flag word whose upper
/// half the kernel ignores.
fn leaf_code(leaf: Leaf) -> Result<Vec<libc::sock_filter>, String> {
    let (arg, when, errno) = match leaf {
        Leaf::Ret(v) => return Ok(vec![stmt(BPF_RET_K, v)]),
        Leaf::Check { arg, when, errno } => (arg, when, errno),
    };
    if arg > 5 {
        return Err(format!("argument {arg} does not exist (0..=5)"));
    }
    let deny = stmt(BPF_RET_K, ret_errno(errno));
    let allow = stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW);
    let mut code = vec![stmt(BPF_LD_W_ABS, DATA_ARGS + 8 * u32::from(arg))];
    match when {
        When::AnyBitOf(bits) => {
            let mask = bits.iter().fold(0, |m, b| m | b);
            code.push(jump(BPF_JSET_K, mask, 0, 1));
        }
        When::Is(v) => code.push(jump(BPF_JEQ_K, v, 0, 1)),
        When::NoneOf(values) => {
            for (i, v) in values.iter().enumerate() {
                // Past the remaining comparisons and the deny: to allow.
                code.push(jump(BPF_JEQ_K, *v, offset(values.len() - i)?, 0));
            }
        }
    }
    code.extend([deny, allow]);
    Ok(code)
}

/// The intervals: (first number, leaf), sorted; each runs up to the next
/// one's first number, the last one to u32::MAX. Numbers without a call
/// get `default`; neighbours with the same leaf are merged.
fn intervals(calls: &[(u32, Action)], default: u32) -> Vec<(u32, Leaf)> {
    let mut out: Vec<(u32, Leaf)> = Vec::new();
    let mut push = |start: u32, leaf: Leaf| {
        if out.last().map(|l| l.1) != Some(leaf) {
            out.push((start, leaf));
        }
    };
    let mut next = 0u32;
    for &(nr, action) in calls {
        if nr > next {
            push(next, Leaf::Ret(default));
        }
        push(nr, leaf(action));
        next = nr + 1;
    }
    push(next, Leaf::Ret(default));
    out
}

/// A binary search over `intervals` (the number in A): split at the middle
/// interval's first number, `JGE` to the right half.
fn search(intervals: &[(u32, Leaf)]) -> Result<Vec<libc::sock_filter>, String> {
    if let [(_, only)] = intervals {
        return leaf_code(*only);
    }
    let (low, high) = intervals.split_at(intervals.len() / 2);
    let left = search(low)?;
    let right = search(high)?;
    let pivot = high[0].0;
    let mut code = match u8::try_from(left.len()) {
        Ok(skip) => vec![jump(BPF_JGE_K, pivot, skip, 0)],
        // Too far for a conditional jump: through a JA (32-bit offset).
        Err(_) => vec![
            jump(BPF_JGE_K, pivot, 0, 1),
            stmt(
                BPF_JA,
                u32::try_from(left.len()).map_err(|_| "program too long".to_string())?,
            ),
        ],
    };
    code.extend(left);
    code.extend(right);
    Ok(code)
}

/// The program for `calls` (sorted by number, each once), answering
/// `default` for every other number.
pub fn compile(calls: &[(u32, Action)], default: u32) -> Result<Vec<libc::sock_filter>, String> {
    let mut program = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    program.extend(search(&intervals(calls, default))?);
    if program.len() > libc::BPF_MAXINSNS as usize {
        return Err(format!(
            "the seccomp program has {} instructions, more than {}",
            program.len(),
            libc::BPF_MAXINSNS
        ));
    }
    Ok(program)
}

/// How many intervals `calls` make.
#[cfg(test)]
pub fn interval_count(calls: &[(u32, Action)], default: u32) -> usize {
    intervals(calls, default).len()
}
