//! The hypervisor's side of the hypercall ABI, kept beside the guest's so the two cannot
//! drift apart: decoding the registers a guest left ([`decode`]), and how a guest's log
//! text is shown ([`Escaped`]). Both take arbitrary, guest-chosen values and are fuzzed
//! (`boot/fuzz`, target `hypercall`).

use core::fmt;

/// The longest text one [`super::op::LOG`] may pass; longer requests are cut to it.
pub const MAX_LOG: u64 = 256;

/// A hypercall, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hypercall {
    /// [`super::op::DONE`].
    Done {
        /// 0: every check passed.
        status: u64,
    },
    /// [`super::op::REPORT`].
    Report {
        /// A [`super::check`] id.
        check: u64,
        /// Its value.
        value: u64,
    },
    /// [`super::op::LOG`].
    Log {
        /// Guest-physical address of the text.
        gpa: u64,
        /// Its length, at most [`MAX_LOG`].
        len: u64,
    },
    /// An operation code nobody defined.
    Unknown(u32),
}

/// Decodes EAX (the operation; the upper half of RAX is ignored), RCX and RSI.
pub fn decode(rax: u64, rcx: u64, rsi: u64) -> Hypercall {
    match rax as u32 {
        super::op::DONE => Hypercall::Done { status: rcx },
        super::op::REPORT => Hypercall::Report { check: rcx, value: rsi },
        super::op::LOG => Hypercall::Log { gpa: rcx, len: rsi.min(MAX_LOG) },
        op => Hypercall::Unknown(op),
    }
}

/// Guest bytes shown as text: UTF-8 (invalid sequences as U+FFFD), with every control
/// character, quote, backslash and other non-printable character escaped as Rust's
/// `escape_debug` does, so it can never end a console line or emit an escape sequence.
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                write!(f, "{}", c.escape_debug())?;
            }
            if !chunk.invalid().is_empty() {
                f.write_str("\\u{fffd}")?;
            }
        }
        Ok(())
    }
}
