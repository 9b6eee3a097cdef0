//! Which vCPU backend partitions run on, decided once from CPUID: AMD SVM with nested
//! paging (NPT) or Intel VMX with EPT. Everything else (the run loop, the intercept
//! policy, the extended-state switch, the nested tables' walker) is shared.

use super::npt::{NestedFormat, NestedTables};
use super::vcpu::VcpuBackend;
use super::{svm, vmx, PartitionError};
use alloc::boxed::Box;
use core::arch::x86_64::__cpuid;
use iommu::pgtable::nested::{EptFormat, NptFormat};

/// A hardware virtualization extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// AMD SVM with nested paging.
    Svm,
    /// Intel VMX with EPT.
    Vmx,
}

/// Address-space id for every SVM partition's vCPU (the TLB is flushed on each entry).
const ASID: u32 = 1;

impl Backend {
    /// The extension CPUID reports: SVM (CPUID 0x8000_0001 ECX bit 2), else VMX
    /// (CPUID 1 ECX bit 5); `None` when the CPU has neither.
    pub fn detect() -> Option<Backend> {
        let ext_max = __cpuid(0x8000_0000).eax;
        if ext_max >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 2) != 0 {
            Some(Backend::Svm)
        } else if __cpuid(1).ecx & (1 << 5) != 0 {
            Some(Backend::Vmx)
        } else {
            None
        }
    }

    /// For logs.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Svm => "SVM",
            Backend::Vmx => "VMX",
        }
    }
}

static CHOSEN: spin::Once<Result<Backend, PartitionError>> = spin::Once::new();

/// Detects and enables this CPU's backend once (logging which); the error says why
/// partitions cannot run here.
pub fn enable() -> Result<Backend, PartitionError> {
    CHOSEN
        .call_once(|| {
            let b = Backend::detect().ok_or(PartitionError::NoVirtualization)?;
            match b {
                Backend::Svm => svm::enable().map_err(PartitionError::Svm)?,
                Backend::Vmx => vmx::enable().map_err(PartitionError::Vmx)?,
            }
            log::info!("partition: vCPU backend {} (chosen from CPUID)", b.name());
            Ok(b)
        })
        .clone()
}

/// Empty nested tables in the backend's format.
pub fn nested_tables(b: Backend) -> Result<NestedTables, PartitionError> {
    let format = match b {
        Backend::Svm => NestedFormat::Npt(NptFormat::new(false)),
        Backend::Vmx => NestedFormat::Ept(EptFormat::new(vmx::ept_1g_pages())),
    };
    Ok(NestedTables::with_format(format)?)
}

/// A vCPU on `b` whose nested tables are `tables`.
pub fn new_vcpu(b: Backend, tables: &NestedTables) -> Result<Box<dyn VcpuBackend>, PartitionError> {
    Ok(match b {
        Backend::Svm => {
            Box::new(svm::SvmVcpu::new(tables.root(), ASID).map_err(PartitionError::Svm)?)
        }
        Backend::Vmx => Box::new(vmx::VmxVcpu::new(tables.root()).map_err(PartitionError::Vmx)?),
    })
}
