//! Checked little-endian reads over a part of a table that remembers where it sits.
//!
//! Every read returns `Result`, and a failed read names the absolute table offset, so the
//! parsers never index a slice directly and never panic.

use super::error::{AcpiError, ErrorKind};

/// A byte range of a table together with its absolute offset in that table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window<'a> {
    bytes: &'a [u8],
    base: usize,
}

impl<'a> Window<'a> {
    /// A window over `bytes`, whose first byte is at table offset `base`.
    pub fn new(bytes: &'a [u8], base: usize) -> Self {
        Window { bytes, base }
    }

    /// The bytes of the window.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The table offset of the window's first byte.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The window's length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the window holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// An error at window offset `at`.
    pub fn error(&self, at: usize, kind: ErrorKind) -> AcpiError {
        AcpiError { offset: self.base.saturating_add(at), kind }
    }

    /// The `len` bytes at window offset `at`, as a window.
    pub fn sub(&self, at: usize, len: usize) -> Result<Window<'a>, AcpiError> {
        let available = self.bytes.len().saturating_sub(at);
        let end = at.checked_add(len);
        match end.and_then(|end| self.bytes.get(at..end)) {
            Some(bytes) => Ok(Window { bytes, base: self.base.saturating_add(at) }),
            None => Err(self.error(at, ErrorKind::Truncated { needed: len, available })),
        }
    }

    /// Everything from window offset `at` to the end (empty if `at` is past the end).
    pub fn rest(&self, at: usize) -> Window<'a> {
        Window { bytes: self.bytes.get(at..).unwrap_or(&[]), base: self.base.saturating_add(at) }
    }

    /// `N` bytes at window offset `at`.
    pub fn array<const N: usize>(&self, at: usize) -> Result<[u8; N], AcpiError> {
        let w = self.sub(at, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(w.bytes);
        Ok(out)
    }

    /// The byte at window offset `at`.
    pub fn u8(&self, at: usize) -> Result<u8, AcpiError> {
        Ok(self.array::<1>(at)?[0])
    }

    /// The little-endian u16 at window offset `at`.
    pub fn u16(&self, at: usize) -> Result<u16, AcpiError> {
        Ok(u16::from_le_bytes(self.array(at)?))
    }

    /// The little-endian u32 at window offset `at`.
    pub fn u32(&self, at: usize) -> Result<u32, AcpiError> {
        Ok(u32::from_le_bytes(self.array(at)?))
    }

    /// The little-endian u64 at window offset `at`.
    pub fn u64(&self, at: usize) -> Result<u64, AcpiError> {
        Ok(u64::from_le_bytes(self.array(at)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_names_absolute_offsets() {
        let data = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let w = Window::new(&data, 0x30);
        assert_eq!(w.u16(1).unwrap(), 0x0302);
        assert_eq!(w.u32(0).unwrap(), 0x0403_0201);
        assert_eq!(w.u64(1).unwrap(), 0x0908_0706_0504_0302);
        let err = w.u64(2).unwrap_err();
        assert_eq!(err.offset, 0x32);
        assert_eq!(err.kind, ErrorKind::Truncated { needed: 8, available: 7 });
        assert!(w.sub(usize::MAX, 2).is_err());
        assert!(w.rest(100).is_empty());
        assert_eq!(w.sub(4, 2).unwrap().base(), 0x34);
    }
}

/// Reads one record at a window position: the record and its length in bytes.
pub type RecordReader<'a, T> = fn(&Window<'a>, usize) -> Result<(T, usize), crate::acpi::AcpiError>;

/// Walks consecutive length-prefixed records (DMAR structures, IVRS blocks) from `pos` to
/// the end of a window, stopping for good at the first malformed one.
#[derive(Debug, Clone)]
pub struct Records<'a, T> {
    window: Window<'a>,
    pos: usize,
    failed: bool,
    read: RecordReader<'a, T>,
}

impl<'a, T> Records<'a, T> {
    /// Records of `window` from `pos` on, each read by `read`.
    pub fn walk(window: Window<'a>, pos: usize, read: RecordReader<'a, T>) -> Self {
        Records { window, pos, failed: false, read }
    }

    /// The next record, an error for a malformed one, or `None` at the end.
    pub fn next_checked(&mut self) -> Option<Result<T, crate::acpi::AcpiError>> {
        if self.failed || self.pos >= self.window.len() {
            return None;
        }
        let r = (self.read)(&self.window, self.pos);
        match &r {
            Ok((_, len)) => self.pos += len,
            Err(_) => self.failed = true,
        }
        Some(r.map(|(record, _)| record))
    }
}

impl<T> Iterator for Records<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.next_checked().and_then(Result::ok)
    }
}
