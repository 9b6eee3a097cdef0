#!/bin/sh
# record-qemu.sh NAME IOMMU_ARGS...: boots Debian's Linux (linux-image-6.1.0-57-amd64, unpacked
# in ./k) with an initramfs (initrd.gz: busybox-static plus record-init.sh as /init) on the
# q35 machine of tests/tests/report.rs, and unpacks the tree /init prints into trees/NAME.
# Used for qemu72-vtd-bridge (-device intel-iommu,intremap=on) and qemu72-amdvi-bridge
# (-device amd-iommu) with QEMU 7.2.
name=$1; shift
out=./$name.log
timeout 300 ${QEMU:-qemu-system-x86_64} -machine q35,kernel-irqchip=split -cpu max -m 1024 -nodefaults -display none -serial stdio -no-reboot \
  "$@" \
  -device edu,addr=0x4,dma_mask=0xffffffffffff -device edu,addr=0x5,dma_mask=0xffffffffffff \
  -device pcie-root-port,id=rp,slot=1,addr=0x6 -device pcie-pci-bridge,id=br,bus=rp \
  -device edu,bus=br,addr=1,dma_mask=0xffffffffffff -device edu,bus=br,addr=2,dma_mask=0xffffffffffff \
  -kernel k/boot/vmlinuz-6.1.0-57-amd64 -initrd initrd.gz \
  -append "console=ttyS0 quiet panic=-1 intel_iommu=off amd_iommu=off" > $out 2>&1
echo "rc=$?"
mkdir -p ./trees/$name
sed -n '/---BEGIN TREE---/,/---END TREE---/p' $out | grep -v -- '---' | tr -d '\r' | base64 -d | tar xz -C ./trees/$name
find ./trees/$name -type f | wc -l
