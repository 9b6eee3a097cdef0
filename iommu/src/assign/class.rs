//! PCI class codes in words (PCI Code and ID Assignment specification), for reports.

/// The name of class `base`/`sub` ("Ethernet controller", "PCI bridge"); the base class's
/// name when the subclass is not listed, "unknown class" when neither is.
pub fn class_name(base: u8, sub: u8) -> &'static str {
    match (base, sub) {
        (0x00, 0x00) => "non-VGA unclassified device",
        (0x00, 0x01) => "VGA-compatible unclassified device",
        (0x00, _) => "unclassified device",
        (0x01, 0x00) => "SCSI storage controller",
        (0x01, 0x01) => "IDE interface",
        (0x01, 0x04) => "RAID bus controller",
        (0x01, 0x05) => "ATA controller",
        (0x01, 0x06) => "SATA controller",
        (0x01, 0x07) => "Serial Attached SCSI controller",
        (0x01, 0x08) => "non-volatile memory controller",
        (0x01, _) => "mass storage controller",
        (0x02, 0x00) => "Ethernet controller",
        (0x02, 0x80) => "network controller",
        (0x02, _) => "network controller",
        (0x03, 0x00) => "VGA compatible controller",
        (0x03, 0x02) => "3D controller",
        (0x03, _) => "display controller",
        (0x04, 0x01) => "multimedia audio controller",
        (0x04, 0x03) => "audio device",
        (0x04, _) => "multimedia controller",
        (0x05, 0x00) => "RAM memory",
        (0x05, _) => "memory controller",
        (0x06, 0x00) => "host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x04) => "PCI bridge",
        (0x06, 0x07) => "CardBus bridge",
        (0x06, 0x09) => "semi-transparent PCI-to-PCI bridge",
        (0x06, _) => "bridge",
        (0x07, 0x00) => "serial controller",
        (0x07, 0x01) => "parallel controller",
        (0x07, 0x03) => "modem",
        (0x07, _) => "communication controller",
        (0x08, 0x00) => "PIC",
        (0x08, 0x01) => "DMA controller",
        (0x08, 0x02) => "timer",
        (0x08, 0x05) => "SD host controller",
        (0x08, 0x06) => "IOMMU",
        (0x08, _) => "system peripheral",
        (0x09, _) => "input device controller",
        (0x0a, _) => "docking station",
        (0x0b, _) => "processor",
        (0x0c, 0x03) => "USB controller",
        (0x0c, 0x05) => "SMBus",
        (0x0c, 0x07) => "IPMI interface",
        (0x0c, 0x00) => "FireWire (IEEE 1394)",
        (0x0c, 0x04) => "Fibre Channel",
        (0x0c, _) => "serial bus controller",
        (0x0d, _) => "wireless controller",
        (0x0e, _) => "intelligent controller",
        (0x0f, _) => "satellite communications controller",
        (0x10, _) => "encryption controller",
        (0x11, _) => "signal processing controller",
        (0x12, _) => "processing accelerator",
        (0x13, _) => "non-essential instrumentation",
        (0xff, _) => "unassigned class",
        _ => "unknown class",
    }
}

#[cfg(test)]
mod tests {
    use super::class_name;

    #[test]
    fn names_common_classes_and_falls_back_to_the_base_class() {
        assert_eq!(class_name(0x02, 0x00), "Ethernet controller");
        assert_eq!(class_name(0x06, 0x04), "PCI bridge");
        assert_eq!(class_name(0x01, 0x08), "non-volatile memory controller");
        assert_eq!(class_name(0x01, 0x42), "mass storage controller");
        assert_eq!(class_name(0x77, 0x00), "unknown class");
    }
}
