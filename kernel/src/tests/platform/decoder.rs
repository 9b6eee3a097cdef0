//! The MMIO instruction decoder: the forms Linux and the guest program use, with their
//! lengths and operands, and refusals (typed errors) for everything else; random bytes
//! never panic it.

use crate::ensure;
use crate::partition::platform::decode::{decode, DecodeError, Instruction, Operation, RegOperand};
use crate::testing::{TestContext, TestResult};

const fn gpr(index: u8) -> RegOperand {
    RegOperand { index, high_byte: false }
}

/// Decoded forms and refusals.
pub fn decoder(_: &mut TestContext<'_>) -> TestResult {
    use Operation::*;
    let ok: &[(&[u8], u8, u8, Operation)] = &[
        // mov dword [rax+0xb0], ecx (89 /r, disp32)
        (&[0x89, 0x88, 0xB0, 0, 0, 0], 6, 4, Store(gpr(1))),
        // mov eax, [rcx+0x390] (8B /r, disp32)
        (&[0x8B, 0x81, 0x90, 3, 0, 0], 6, 4, Load(gpr(0))),
        // mov dword [rax], 0 (C7 /0 imm32)
        (&[0xC7, 0x00, 0, 0, 0, 0], 6, 4, StoreImm(0)),
        // mov r9d, [r8+0x30] (REX.RB, disp8)
        (&[0x45, 0x8B, 0x48, 0x30], 4, 4, Load(gpr(9))),
        // mov [0xffffffffff5fc0b0], eax: Linux's fixmap store (ModRM 04, SIB 25, disp32)
        (&[0x89, 0x04, 0x25, 0xB0, 0xC0, 0x5F, 0xFF], 7, 4, Store(gpr(0))),
        // xchg [rdx], esi (87 /r): the X86_BUG_11AP write
        (&[0x87, 0x32], 2, 4, Exchange(gpr(6))),
        // mov ax, [rip+0x10] (66 prefix, RIP-relative)
        (&[0x66, 0x8B, 0x05, 0x10, 0, 0, 0], 7, 2, Load(gpr(0))),
        // mov bh, [rbx] (byte, no REX: BH is RBX's high byte)
        (&[0x8A, 0x3B], 2, 1, Load(RegOperand { index: 3, high_byte: true })),
        // mov dil, [rbx] (REX: DIL)
        (&[0x40, 0x8A, 0x3B], 3, 1, Load(gpr(7))),
        // mov byte [rax+1], 0x7f (C6 /0 imm8)
        (&[0xC6, 0x40, 0x01, 0x7F], 4, 1, StoreImm(0x7F)),
        // mov qword [rax], -1 (REX.W C7: imm32 sign-extended)
        (&[0x48, 0xC7, 0x00, 0xFF, 0xFF, 0xFF, 0xFF], 7, 8, StoreImm(u64::MAX)),
        // mov eax, [moffs64] (A1)
        (&[0xA1, 0xB0, 0, 0xE0, 0xFE, 0, 0, 0, 0], 9, 4, Load(gpr(0))),
        // gs: lock xchg [rax], ecx
        (&[0x65, 0xF0, 0x87, 0x08], 4, 4, Exchange(gpr(1))),
        // movzx eax, word [rcx+0x12] (0F B7: what compilers emit for a u16 read)
        (&[0x0F, 0xB7, 0x41, 0x12], 4, 2, LoadExtend { reg: gpr(0), dest: 4, signed: false }),
        // movzx r10, byte [rax] (REX.WR 0F B6)
        (&[0x4C, 0x0F, 0xB6, 0x10], 4, 1, LoadExtend { reg: gpr(10), dest: 8, signed: false }),
        // movsx ecx, byte [rdx] (0F BE)
        (&[0x0F, 0xBE, 0x0A], 3, 1, LoadExtend { reg: gpr(1), dest: 4, signed: true }),
    ];
    for (bytes, len, size, op) in ok {
        let want = Instruction { len: *len, size: *size, op: *op };
        let got = decode(bytes).map_err(|e| alloc::format!("{bytes:x?}: {e}"))?;
        ensure!(got == want, "{bytes:x?}: {got:?}, want {want:?}");
        // Trailing bytes are the next instruction's.
        let mut longer = alloc::vec::Vec::from(*bytes);
        longer.extend_from_slice(&[0x90; 8]);
        ensure!(decode(&longer) == Ok(want), "{bytes:x?} with trailing bytes");
    }
    let bad: &[(&[u8], DecodeError)] = &[
        (&[], DecodeError::Truncated { have: 0 }),
        (&[0x89, 0x88, 0xB0], DecodeError::Truncated { have: 3 }),
        (&[0xF3, 0xA5], DecodeError::RepPrefix),
        (&[0x89, 0xC8], DecodeError::RegisterOperand),
        (&[0xFF, 0x00], DecodeError::Unsupported { opcode: 0xFF }),
        (&[0x83, 0x08, 0x01], DecodeError::Unsupported { opcode: 0x83 }),
        (&[0x0F, 0xAF, 0x00], DecodeError::Unsupported { opcode: 0x0FAF }),
        (&[0x0F, 0xB6, 0xC0], DecodeError::RegisterOperand),
        (&[0xC7, 0x08, 0, 0, 0, 0], DecodeError::Unsupported { opcode: 0xC7 }),
        (&[0x66; 16], DecodeError::TooLong),
    ];
    for (bytes, want) in bad {
        ensure!(decode(bytes) == Err(*want), "{bytes:x?}: {:?}, want {want:?}", decode(bytes));
    }
    // Random bytes: never a panic, never a length beyond 15 or the bytes given.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = [0u8; 15];
    let mut decoded = 0;
    for _ in 0..100_000 {
        for b in buf.iter_mut() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *b = (x >> 33) as u8;
        }
        let n = (x >> 60) as usize;
        if let Ok(i) = decode(&buf[..n.min(15)]) {
            ensure!(
                usize::from(i.len) <= n && matches!(i.size, 1 | 2 | 4 | 8),
                "{:x?}: {i:?}",
                &buf[..n]
            );
            decoded += 1;
        }
    }
    log::info!("platform decoder: {decoded} of 100000 random byte strings decoded as mov/xchg");
    Ok(())
}
