//! DMAR device scopes: which devices (by PCI path) a remapping structure refers to.

use super::bytes::Window;
use super::error::{AcpiError, ErrorKind};

/// Fixed part of a device scope (type, length, flags, reserved, enumeration id, start bus).
pub const SCOPE_HEADER_LEN: usize = 6;

/// The device scope types of the VT-d specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    /// 1: a PCI endpoint device.
    Endpoint,
    /// 2: a PCI bridge; every device behind it is in scope too.
    Bridge,
    /// 3: an I/O APIC (enumeration id = APIC id).
    IoApic,
    /// 4: an MSI-capable HPET (enumeration id = HPET number).
    Hpet,
    /// 5: an ACPI namespace device (enumeration id = ANDD device number).
    AcpiNamespace,
    /// Any other value.
    Reserved(u8),
}

impl ScopeKind {
    /// Decodes the type byte.
    pub fn from_raw(raw: u8) -> Self {
        match raw {
            1 => ScopeKind::Endpoint,
            2 => ScopeKind::Bridge,
            3 => ScopeKind::IoApic,
            4 => ScopeKind::Hpet,
            5 => ScopeKind::AcpiNamespace,
            other => ScopeKind::Reserved(other),
        }
    }

    /// The type byte.
    pub fn raw(self) -> u8 {
        match self {
            ScopeKind::Endpoint => 1,
            ScopeKind::Bridge => 2,
            ScopeKind::IoApic => 3,
            ScopeKind::Hpet => 4,
            ScopeKind::AcpiNamespace => 5,
            ScopeKind::Reserved(other) => other,
        }
    }

    /// A short stable name used in summaries and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ScopeKind::Endpoint => "endpoint",
            ScopeKind::Bridge => "bridge",
            ScopeKind::IoApic => "ioapic",
            ScopeKind::Hpet => "hpet",
            ScopeKind::AcpiNamespace => "acpi-namespace",
            ScopeKind::Reserved(_) => "reserved",
        }
    }
}

/// A device scope's path: (device, function) hops starting at its start bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciPath<'a> {
    bytes: &'a [u8],
}

impl<'a> PciPath<'a> {
    /// The number of hops.
    pub fn len(&self) -> usize {
        self.bytes.len() / 2
    }

    /// Whether the path has no hops (a firmware bug: it names no device).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hops as (device, function) pairs, as stored (not range checked).
    pub fn hops(&self) -> impl Iterator<Item = (u8, u8)> + 'a {
        self.bytes.chunks_exact(2).map(|c| match c {
            [d, f] => (*d, *f),
            _ => (0, 0),
        })
    }
}

/// One device scope entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceScope<'a> {
    /// Table offset of the entry.
    pub offset: usize,
    /// Scope type.
    pub kind: ScopeKind,
    /// Stated length of the entry.
    pub length: u8,
    /// Flags byte (SIDP: device properties; otherwise VT-d 4.x request flags).
    pub flags: u8,
    /// Enumeration id (IOAPIC id, HPET number or ANDD device number).
    pub enumeration_id: u8,
    /// Bus number the path starts on.
    pub start_bus: u8,
    /// The path from the start bus to the device.
    pub path: PciPath<'a>,
}

/// Iterates over the device scopes filling a window; validates each one's length.
pub type DeviceScopes<'a> = crate::acpi::bytes::Records<'a, DeviceScope<'a>>;

impl<'a> DeviceScopes<'a> {
    /// Scopes packed into `window` (everything after a structure's fixed part).
    pub fn new(window: Window<'a>) -> Self {
        Self::walk(window, 0, read_scope)
    }

    /// Checks every scope; the first malformed one is the error.
    pub fn validate(mut self) -> Result<usize, AcpiError> {
        let mut count = 0;
        while let Some(r) = self.next_checked() {
            r?;
            count += 1;
        }
        Ok(count)
    }
}

fn read_scope<'a>(w: &Window<'a>, at: usize) -> Result<(DeviceScope<'a>, usize), AcpiError> {
    let length = w.u8(at + 1)?;
    let stated = usize::from(length);
    if stated < SCOPE_HEADER_LEN {
        return Err(w.error(
            at + 1,
            ErrorKind::StructureTooShort {
                what: "device scope",
                stated,
                minimum: SCOPE_HEADER_LEN,
            },
        ));
    }
    let remaining = w.len().saturating_sub(at);
    if stated > remaining {
        return Err(w.error(
            at + 1,
            ErrorKind::StructureOverrun { what: "device scope", stated, remaining },
        ));
    }
    if !(stated - SCOPE_HEADER_LEN).is_multiple_of(2) {
        return Err(w.error(at + 1, ErrorKind::OddScopePath { stated }));
    }
    let s = w.sub(at, stated)?;
    let scope = DeviceScope {
        offset: s.base(),
        kind: ScopeKind::from_raw(s.u8(0)?),
        length,
        flags: s.u8(2)?,
        enumeration_id: s.u8(4)?,
        start_bus: s.u8(5)?,
        path: PciPath { bytes: s.rest(SCOPE_HEADER_LEN).bytes() },
    };
    Ok((scope, stated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scopes_with_multi_hop_paths() {
        let bytes = [
            1, 10, 0, 0, 0, 0, 0x1c, 4, 0, 2, // endpoint 00:1c.4 -> 00.2
            3, 8, 0, 0, 2, 0xf0, 0x1f, 0, // ioapic id 2 at f0:1f.0
        ];
        let scopes: alloc::vec::Vec<_> = DeviceScopes::new(Window::new(&bytes, 0x40)).collect();
        assert_eq!(scopes.len(), 2);
        assert_eq!(scopes[0].kind, ScopeKind::Endpoint);
        assert_eq!(scopes[0].offset, 0x40);
        assert_eq!(scopes[0].path.hops().collect::<alloc::vec::Vec<_>>(), [(0x1c, 4), (0, 2)]);
        assert_eq!(scopes[1].kind, ScopeKind::IoApic);
        assert_eq!(scopes[1].offset, 0x4a);
        assert_eq!(scopes[1].enumeration_id, 2);
        assert_eq!(scopes[1].start_bus, 0xf0);
    }

    #[test]
    fn rejects_bad_scope_lengths_with_their_offset() {
        for (bytes, kind_is) in [
            (&[1u8, 0, 0, 0, 0, 0, 0, 0][..], "short"),
            (&[1u8, 9, 0, 0, 0, 0, 0, 0, 0][..], "odd"),
            (&[1u8, 12, 0, 0, 0, 0, 0, 0][..], "overrun"),
            (&[1u8][..], "truncated"),
        ] {
            let err = DeviceScopes::new(Window::new(bytes, 0x100)).validate().unwrap_err();
            assert_eq!(err.offset, 0x101, "{kind_is}");
            let ok = match err.kind {
                ErrorKind::StructureTooShort { .. } => kind_is == "short",
                ErrorKind::OddScopePath { .. } => kind_is == "odd",
                ErrorKind::StructureOverrun { .. } => kind_is == "overrun",
                ErrorKind::Truncated { .. } => kind_is == "truncated",
                _ => false,
            };
            assert!(ok, "{kind_is}: {err}");
        }
    }
}
