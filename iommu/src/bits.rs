//! Bit fields of registers, descriptors and table entries, declared once.
//!
//! A layout is written as named [`Field`] constants (`const DID: Field = Field::new(16, 16);`)
//! and every encoder and decoder goes through them, so a bit position is typed in exactly one
//! place and never again as a shift literal at a call site. Multi-qword descriptors declare
//! their fields per qword ([`Field`] works on one `u64`).

/// `width` bits starting at bit `lo` of a 64-bit word (`width` 1..=64, `lo + width <= 64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The lowest bit of the field.
    pub lo: u32,
    /// The number of bits.
    pub width: u32,
}

impl Field {
    /// The field of `width` bits from bit `lo`; an impossible layout fails to compile when
    /// used in a `const`.
    pub const fn new(lo: u32, width: u32) -> Self {
        assert!(width >= 1 && width <= 64 && lo + width <= 64, "bit field outside a u64");
        Self { lo, width }
    }

    /// The one-bit field at bit `n`.
    pub const fn bit(n: u32) -> Self {
        Self::new(n, 1)
    }

    /// The field's largest value (all its bits set), unshifted.
    pub const fn max(self) -> u64 {
        if self.width >= 64 {
            u64::MAX
        } else {
            (1u64 << self.width) - 1
        }
    }

    /// The field's bits in place within the word.
    pub const fn mask(self) -> u64 {
        self.max() << self.lo
    }

    /// Whether `value` fits the field without losing bits.
    pub const fn fits(self, value: u64) -> bool {
        value <= self.max()
    }

    /// The field read from `word`, shifted down.
    pub const fn get(self, word: u64) -> u64 {
        (word >> self.lo) & self.max()
    }

    /// Whether any bit of the field is set in `word` (for one-bit flags).
    pub const fn is_set(self, word: u64) -> bool {
        self.get(word) != 0
    }

    /// `value` placed in the field, truncated to its width (check [`Field::fits`] first
    /// where a too-wide value is an error rather than impossible).
    pub const fn encode(self, value: u64) -> u64 {
        (value & self.max()) << self.lo
    }

    /// `word` with the field replaced by `value` (truncated to its width).
    pub const fn set(self, word: u64, value: u64) -> u64 {
        (word & !self.mask()) | self.encode(value)
    }

    /// `word` with the field's bits set (`true`) or cleared (`false`).
    pub const fn with(self, word: u64, on: bool) -> u64 {
        if on {
            word | self.mask()
        } else {
            word & !self.mask()
        }
    }
}

/// The `width` bits of `value` starting at bit `lo` (`width` 1..=64), shifted down: the
/// decoders' shorthand for `Field::new(lo, width).get(value)`.
pub const fn field(value: u64, lo: u32, width: u32) -> u64 {
    Field::new(lo, width).get(value)
}

#[cfg(test)]
mod tests {
    use super::{field, Field};

    #[test]
    fn extracts_fields_including_the_full_width() {
        assert_eq!(field(0xABCD_0000, 16, 8), 0xCD);
        assert_eq!(field(1 << 63, 63, 1), 1);
        assert_eq!(field(u64::MAX, 0, 64), u64::MAX);
    }

    #[test]
    fn encode_and_get_round_trip_and_leave_other_bits_alone() {
        const DID: Field = Field::new(16, 16);
        let word = DID.set(0xFFFF_0000_0000_FFFF, 0x1234);
        assert_eq!(word, 0xFFFF_0000_1234_FFFF);
        assert_eq!(DID.get(word), 0x1234);
        assert_eq!(DID.encode(0x1_0001), 0x1_0000, "truncated to 16 bits");
        assert!(DID.fits(0xFFFF) && !DID.fits(0x1_0000));
        assert_eq!(DID.mask(), 0xFFFF_0000);
        let full = Field::new(0, 64);
        assert_eq!(full.encode(u64::MAX), u64::MAX);
        assert_eq!(full.mask(), u64::MAX);
    }

    #[test]
    fn one_bit_flags() {
        const P: Field = Field::bit(0);
        const TOP: Field = Field::bit(63);
        assert_eq!(P.with(0, true), 1);
        assert_eq!(TOP.with(u64::MAX, false), u64::MAX >> 1);
        assert!(TOP.is_set(1 << 63) && !P.is_set(2));
    }
}
