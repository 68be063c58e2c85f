//! The device allowlist on cgroup v2: v2 has no devices controller, so the
//! kernel asks a BPF program (BPF_PROG_TYPE_CGROUP_DEVICE) attached to the
//! cgroup instead. The program is written here as raw instructions from
//! the very table the v1 driver writes to devices.allow
//! (cgroup::DEVICE_ALLOWLIST), loaded and attached with bpf(2) directly: a
//! few dozen instructions need no BPF library.
//!
//! Its context is struct bpf_cgroup_dev_ctx { u32 access_type (low 16
//! bits: BPF_DEVCG_DEV_BLOCK 1 / CHAR 2; high 16 bits: MKNOD 1, READ 2,
//! WRITE 4), u32 major, u32 minor }; it returns 1 to allow, 0 to deny.
//!
//! Hybrid hosts are driven as v1 and get no program: the v1 devices
//! controller enforces the same list at the same kernel check, and Grove
//! makes no cgroup in their (controller-less) cgroup2 hierarchy.

use crate::cgroup::DEVICE_ALLOWLIST;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// One struct bpf_insn: opcode, dst_reg | src_reg << 4, offset, immediate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// Opcodes (linux/bpf.h, linux/bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU_AND_K: u8 = 0x54; // dst &= imm (32-bit)
const ALU_RSH_K: u8 = 0x74; // dst >>= imm (32-bit)
const ALU_MOV_X: u8 = 0xbc; // dst = src (32-bit)
const ALU64_MOV_K: u8 = 0xb7; // dst = imm
const JMP_JNE_K: u8 = 0x55; // if dst != imm goto +off
const JMP_JSET_K: u8 = 0x45; // if dst & imm goto +off
const JMP_EXIT: u8 = 0x95;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

/// One devices.allow rule ("c 1:3 rwm", "c 136:* rwm") as the program
/// tests it: device type, major and minor (None: any), allowed accesses.
fn parse_rule(rule: &str) -> Option<(i32, Option<i32>, Option<i32>, i32)> {
    let mut f = rule.split(' ');
    let kind = match f.next()? {
        "b" => 1,
        "c" => 2,
        _ => return None,
    };
    let (major, minor) = f.next()?.split_once(':')?;
    let num = |s: &str| match s {
        "*" => Some(None),
        n => n.parse().ok().map(Some),
    };
    let mut access = 0;
    for c in f.next()?.chars() {
        access |= match c {
            'm' => 1,
            'r' => 2,
            'w' => 4,
            _ => return None,
        };
    }
    Some((kind, num(major)?, num(minor)?, access))
}

/// The program: load type, access, major and minor; for each rule, skip to
/// the next rule on the first field that differs, else return 1; after the
/// last rule return 0.
pub fn program() -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),      // r2 = access_type
        insn(ALU_MOV_X, 3, 2, 0, 0),      // r3 = r2
        insn(ALU_AND_K, 3, 0, 0, 0xffff), // r3 = type
        insn(ALU_RSH_K, 2, 0, 0, 16),     // r2 = access
        insn(LDX_MEM_W, 4, 1, 4, 0),      // r4 = major
        insn(LDX_MEM_W, 5, 1, 8, 0),      // r5 = minor
    ];
    for rule in DEVICE_ALLOWLIST {
        let Some((kind, major, minor, access)) = parse_rule(rule) else {
            // A constant of this crate; the unit test parses every rule.
            continue;
        };
        let mut tests = vec![(JMP_JNE_K, 3, kind)];
        tests.extend(major.map(|m| (JMP_JNE_K, 4, m)));
        tests.extend(minor.map(|m| (JMP_JNE_K, 5, m)));
        if access != 7 {
            tests.push((JMP_JSET_K, 2, 7 & !access)); // an access not allowed
        }
        // Each test jumps past the rest of the tests and the rule's two
        // allowing instructions.
        let n = tests.len();
        for (i, (code, reg, imm)) in tests.into_iter().enumerate() {
            p.push(insn(code, reg, 0, (n - i - 1 + 2) as i16, imm));
        }
        p.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
        p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

/// bpf(2) with an attribute struct of type T.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> Result<libc::c_long, Errno> {
    // SAFETY: attr is a live, fully initialised bpf_attr prefix of the size
    // passed; the kernel reads it (and, for a load, the buffers it points
    // to, which outlive the call).
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    })
}

/// The BPF_PROG_LOAD part of union bpf_attr.
#[repr(C)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The BPF_PROG_ATTACH part of union bpf_attr.
#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// Load the program and attach it to the cgroup v2 directory `cgroup`.
/// Why safe: the program is a constant of this crate built from the same
/// allowlist as v1's, not from request data; it only narrows which device
/// nodes the cgroup's processes may open or create. It is attached with no
/// flags (neither ALLOW_OVERRIDE nor ALLOW_MULTI), so the kernel refuses
/// any program attached below it: a container that can make cgroups of
/// its own cannot widen the list. This runs in the spawner (not under the
/// main process's seccomp filter, which keeps bpf out), on a cgroup the
/// helper created, before the container's first process enters it.
pub fn attach(cgroup: BorrowedFd) -> Result<(), String> {
    let insns = program();
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"grove_device");
    let load = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: c"Apache-2.0".as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_DEVICE,
    };
    let fd = bpf(BPF_PROG_LOAD, &load)
        .map_err(|e| format!("loading the device program (bpf BPF_PROG_LOAD): {e}"))?;
    // SAFETY: BPF_PROG_LOAD just returned this fd; nothing else owns it.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attach = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &attach)
        .map_err(|e| format!("attaching the device program (bpf BPF_PROG_ATTACH): {e}"))?;
    // The cgroup holds the program now; our fd may go.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowlist_rule_becomes_a_test_and_everything_else_is_denied() {
        for rule in DEVICE_ALLOWLIST {
            assert!(parse_rule(rule).is_some(), "{rule}");
        }
        assert_eq!(parse_rule("c 136:* rwm"), Some((2, Some(136), None, 7)));
        assert_eq!(parse_rule("b 8:0 r"), Some((1, Some(8), Some(0), 2)));
        assert_eq!(parse_rule("x 1:3 rwm"), None);
        let p = program();
        // 6 loads, 7 rules of 3 tests + 2, one of 2 tests + 2, the deny.
        assert_eq!(p.len(), 6 + 7 * 5 + 4 + 2);
        assert_eq!(
            &p[p.len() - 2..],
            &[insn(ALU64_MOV_K, 0, 0, 0, 0), insn(JMP_EXIT, 0, 0, 0, 0)]
        );
        // Every jump lands inside the program.
        for (i, x) in p.iter().enumerate() {
            if x.code == JMP_JNE_K || x.code == JMP_JSET_K {
                assert!(i + 1 + (x.off as usize) < p.len(), "insn {i}");
            }
        }
    }
}
