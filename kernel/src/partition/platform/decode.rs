//! The instruction decoder for trapped MMIO (the local APIC's page): the forms a kernel
//! uses to reach a device register, `mov` to and from memory (0x88/0x89/0x8A/0x8B, with
//! an immediate 0xC6/0xC7, and the absolute `moffs` forms 0xA0-0xA3) and `xchg` with
//! memory (0x86/0x87), with legacy prefixes (operand size, segment, LOCK), REX, ModRM,
//! SIB and displacements, in 64-bit mode. The address is not computed: the nested page
//! fault gives it. Everything else (string and REP forms, read-modify-write arithmetic,
//! SSE, a register operand, more than 15 bytes) is refused with a [`DecodeError`].
//! Pure and bounds-checked: the bytes are the guest's.

use core::fmt;

/// The longest x86 instruction.
pub const MAX_LEN: usize = 15;

/// Why an access could not be emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes ended inside the instruction (`have` were readable).
    Truncated {
        /// Bytes available.
        have: u8,
    },
    /// An opcode (two-byte ones as 0x0Fxx) this decoder does not emulate.
    Unsupported {
        /// The opcode.
        opcode: u16,
    },
    /// A REP/REPNE prefix (string forms are not emulated).
    RepPrefix,
    /// A ModRM that names a register, not memory (cannot have faulted on MMIO).
    RegisterOperand,
    /// More than 15 bytes.
    TooLong,
    /// The guest is not in 64-bit mode.
    NotLongMode,
    /// The instruction's bytes are not mapped by the guest's page tables (at `gva`).
    FetchFault {
        /// The guest-virtual address that did not translate.
        gva: u64,
    },
    /// The guest fetched an instruction from the MMIO page itself.
    Execute,
    /// The fault says write and the instruction reads, or the reverse (the access was
    /// not the instruction's: an event delivery pushing onto the page, or code changed
    /// under the fault).
    DirectionMismatch,
    /// The access was made while delivering an interrupt or exception (its stack or
    /// gate on the MMIO page), not by an instruction.
    EventDelivery,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { have } => {
                write!(f, "the instruction is cut off after {have} readable bytes")
            }
            DecodeError::Unsupported { opcode } => {
                write!(f, "opcode {opcode:#x} is not an emulated MMIO access (mov or xchg)")
            }
            DecodeError::RepPrefix => f.write_str("string (REP) accesses are not emulated"),
            DecodeError::RegisterOperand => f.write_str("the ModRM names a register, not memory"),
            DecodeError::TooLong => f.write_str("longer than 15 bytes"),
            DecodeError::NotLongMode => f.write_str("the guest is not in 64-bit mode"),
            DecodeError::FetchFault { gva } => {
                write!(f, "the instruction at {gva:#x} is not mapped by the guest's page tables")
            }
            DecodeError::Execute => f.write_str("instruction fetch from an MMIO page"),
            DecodeError::EventDelivery => {
                f.write_str("the access belongs to an interrupt or exception delivery")
            }
            DecodeError::DirectionMismatch => {
                f.write_str("the faulting access does not match the instruction's direction")
            }
        }
    }
}

/// A general-purpose register operand: x86 number 0-15 (RAX..R15), or AH/CH/DH/BH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegOperand {
    /// Register number (for a high byte: 0-3, the register holding it).
    pub index: u8,
    /// Bits 15:8 of `index` (AH, CH, DH, BH: byte operands without REX).
    pub high_byte: bool,
}

impl RegOperand {
    /// The operand's value, `size` bytes of the register's `full` value.
    pub fn extract(&self, full: u64, size: u8) -> u64 {
        if self.high_byte {
            (full >> 8) & 0xFF
        } else {
            full & mask(size)
        }
    }

    /// The register's new value after `value` is written to the operand: 32-bit writes
    /// zero the upper half, 8- and 16-bit ones keep the rest.
    pub fn merge(&self, old: u64, value: u64, size: u8) -> u64 {
        match (size, self.high_byte) {
            (_, true) => (old & !0xFF00) | (value & 0xFF) << 8,
            (1, false) => (old & !0xFF) | (value & 0xFF),
            (2, false) => (old & !0xFFFF) | (value & 0xFFFF),
            (4, false) => value & 0xFFFF_FFFF,
            _ => value,
        }
    }
}

/// The low `size` bytes.
pub fn mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}

/// What the instruction does with the memory operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Memory -> register.
    Load(RegOperand),
    /// Register -> memory.
    Store(RegOperand),
    /// Immediate -> memory.
    StoreImm(u64),
    /// Memory <-> register (the register gets the old value).
    Exchange(RegOperand),
    /// Memory -> a wider register, zero-extended (`movzx`) or sign-extended (`movsx`)
    /// to `dest` bytes.
    LoadExtend {
        /// The register.
        reg: RegOperand,
        /// Its operand size (2, 4, 8).
        dest: u8,
        /// `movsx` rather than `movzx`.
        signed: bool,
    },
}

/// A decoded MMIO access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    /// Bytes, prefixes included (RIP moves by this much).
    pub len: u8,
    /// Bytes accessed (1, 2, 4, 8).
    pub size: u8,
    /// What happens.
    pub op: Operation,
}

struct Bytes<'a> {
    b: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn next(&mut self) -> Result<u8, DecodeError> {
        if self.at >= MAX_LEN {
            return Err(DecodeError::TooLong);
        }
        let v = *self.b.get(self.at).ok_or(DecodeError::Truncated { have: self.b.len() as u8 })?;
        self.at += 1;
        Ok(v)
    }

    fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        for _ in 0..n {
            self.next()?;
        }
        Ok(())
    }

    fn le(&mut self, n: usize) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..n {
            v |= u64::from(self.next()?) << (8 * i);
        }
        Ok(v)
    }
}

/// Decodes one 64-bit-mode instruction from `bytes` (at most [`MAX_LEN`] are looked at).
pub fn decode(bytes: &[u8]) -> Result<Instruction, DecodeError> {
    let mut s = Bytes { b: bytes, at: 0 };
    let mut operand16 = false;
    let mut address32 = false;
    let mut b = s.next()?;
    loop {
        match b {
            0x66 => operand16 = true,
            0x67 => address32 = true,
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0xF0 => {}
            0xF2 | 0xF3 => return Err(DecodeError::RepPrefix),
            _ => break,
        }
        b = s.next()?;
    }
    let mut rex = 0u8;
    if b & 0xF0 == 0x40 {
        rex = b;
        b = s.next()?;
    }
    let wide = rex & 8 != 0;
    let full = if wide {
        8
    } else if operand16 {
        2
    } else {
        4
    };
    let byte_op = b & 1 == 0;
    let size = if byte_op { 1 } else { full };
    let reg_of = |n: u8| {
        if byte_op && rex == 0 && (4..8).contains(&n) {
            RegOperand { index: n - 4, high_byte: true }
        } else {
            RegOperand { index: n, high_byte: false }
        }
    };
    let op = match b {
        0xA0..=0xA3 => {
            // moffs: an absolute address of 8 bytes (4 with 0x67), accumulator operand.
            s.skip(if address32 { 4 } else { 8 })?;
            let acc = RegOperand { index: 0, high_byte: false };
            if b < 0xA2 {
                Operation::Load(acc)
            } else {
                Operation::Store(acc)
            }
        }
        0x86..=0x8B | 0xC6 | 0xC7 => {
            let reg = modrm_reg(&mut s, rex)?;
            match b {
                0x86 | 0x87 => Operation::Exchange(reg_of(reg)),
                0x88 | 0x89 => Operation::Store(reg_of(reg)),
                0x8A | 0x8B => Operation::Load(reg_of(reg)),
                _ if reg & 7 != 0 => return Err(DecodeError::Unsupported { opcode: b.into() }),
                _ => {
                    let imm_len = usize::from(size.min(4));
                    let imm = s.le(imm_len)?;
                    // imm32 is sign-extended to a 64-bit operand.
                    let imm = if size == 8 { imm as u32 as i32 as i64 as u64 } else { imm };
                    Operation::StoreImm(imm)
                }
            }
        }
        0x0F => {
            let second = s.next()?;
            if !matches!(second, 0xB6 | 0xB7 | 0xBE | 0xBF) {
                return Err(DecodeError::Unsupported { opcode: 0x0F00 | u16::from(second) });
            }
            let reg = modrm_reg(&mut s, rex)?;
            let op = Operation::LoadExtend {
                reg: RegOperand { index: reg, high_byte: false },
                dest: full,
                signed: second >= 0xBE,
            };
            let size = if second & 1 == 0 { 1 } else { 2 };
            return Ok(Instruction { len: s.at as u8, size, op });
        }
        _ => return Err(DecodeError::Unsupported { opcode: b.into() }),
    };
    Ok(Instruction { len: s.at as u8, size, op })
}

/// Reads a ModRM byte naming memory (with its SIB and displacement); returns its reg
/// field extended by REX.R.
fn modrm_reg(s: &mut Bytes<'_>, rex: u8) -> Result<u8, DecodeError> {
    let modrm = s.next()?;
    let md = modrm >> 6;
    if md == 3 {
        return Err(DecodeError::RegisterOperand);
    }
    let rm = modrm & 7;
    let mut disp = match md {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    if rm == 4 {
        let sib = s.next()?;
        if md == 0 && sib & 7 == 5 {
            disp = 4;
        }
    } else if md == 0 && rm == 5 {
        disp = 4; // RIP-relative
    }
    s.skip(disp)?;
    Ok((modrm >> 3) & 7 | (rex & 4) << 1)
}
