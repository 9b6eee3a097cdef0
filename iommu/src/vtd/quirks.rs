//! Chipset errata Linux applies to VT-d units (drivers/iommu/intel/iommu.c), by the PCI
//! ids of the machine's host bridge (00:00.0).

/// Host bridges whose units need write-buffer flushes although CAP.RWBF reads 0 (Linux's
/// `quirk_iommu_rwbf`): Mobile 4 Series (GM45) and the G4x family.
const RWBF_HOST_BRIDGES: &[(u16, u16)] = &[
    (0x8086, 0x2a40),
    (0x8086, 0x2e00),
    (0x8086, 0x2e10),
    (0x8086, 0x2e20),
    (0x8086, 0x2e30),
    (0x8086, 0x2e40),
    (0x8086, 0x2e90),
];

/// Whether the units of a machine with this host bridge (vendor, device) must flush the
/// write buffer whatever CAP.RWBF says.
pub fn needs_write_buffer_flush(host_bridge: (u16, u16)) -> bool {
    RWBF_HOST_BRIDGES.contains(&host_bridge)
}
