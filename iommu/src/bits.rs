//! Bit-field extraction shared by the register and descriptor decoders of both drivers.

/// The `width` bits of `value` starting at bit `lo` (`width` 1..=64), shifted down.
pub const fn field(value: u64, lo: u32, width: u32) -> u64 {
    let mask = if width >= 64 { u64::MAX } else { (1u64 << width) - 1 };
    (value >> lo) & mask
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn extracts_fields_including_the_full_width() {
        assert_eq!(field(0xABCD_0000, 16, 8), 0xCD);
        assert_eq!(field(1 << 63, 63, 1), 1);
        assert_eq!(field(u64::MAX, 0, 64), u64::MAX);
    }
}
