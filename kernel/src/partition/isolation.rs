//! Isolation groups against a configuration: the IOMMU cannot keep the functions of one
//! group apart (they share a requester id, or a port without ACS or a multi-function
//! device without ACS lets them reach each other unseen), so a group belongs to one owner.
//! A configuration that splits a group across partitions, or between a partition and a
//! firmware identity (RMRR/IVMD) domain, is refused with the group named.
#![deny(unsafe_code)]

use super::{Budget, Partition, PartitionError, RunReport};
use crate::iommu::IommuSystem;
use crate::pci::Bdf;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use boot::partition_config::PartitionConfig;

/// Every problem the configuration's device assignment has with the isolation groups,
/// one sentence each (empty: every group is whole in one partition).
pub fn check(cfg: &PartitionConfig<'_>, iommu: &IommuSystem) -> Vec<String> {
    let owners: Vec<(Bdf, &str)> = cfg
        .partitions()
        .flat_map(|p| {
            p.devices().iter().map(move |d| {
                let b =
                    Bdf { segment: d.segment, bus: d.bus, device: d.device, function: d.function };
                (b, p.name)
            })
        })
        .collect();
    let mut problems = Vec::new();
    let mut reported: Vec<String> = Vec::new();
    for &(dev, owner) in &owners {
        let Some((members, group)) = iommu.isolation_group(dev) else { continue };
        if reported.contains(&group) {
            continue;
        }
        let others: Vec<(Bdf, &str)> =
            owners.iter().filter(|(b, p)| members.contains(b) && *p != owner).copied().collect();
        if let Some(&(other, other_owner)) = others.first() {
            problems.push(format!(
                "partition `{owner}`: device {dev} and partition `{other_owner}`: device {other} \
                 are in one {group}: the IOMMU cannot keep their DMA apart, so the whole group \
                 must go to one partition"
            ));
            reported.push(group);
            continue;
        }
        let identity = members.iter().find(|m| !iommu.reserved_for(**m).is_empty());
        if let Some(&m) = identity.filter(|m| **m != dev) {
            problems.push(format!(
                "partition `{owner}`: device {dev} is in {group} with {m}, which firmware keeps \
                 identity-mapped for its reserved memory (RMRR/IVMD): the group cannot be split \
                 between a partition and that domain"
            ));
            reported.push(group);
        }
    }
    problems
}

/// Runs `p` as the hypervisor runs every partition: the IOMMU fault service
/// ([`crate::iommu::service_signalled`]) runs in thread context on each exit a host
/// interrupt caused and after each hypercall, so a fault a device takes while its guest
/// runs is read, cleared and logged (rate-limited) then, whoever looks later.
pub fn run_serviced(
    p: &mut Partition,
    budget: Budget,
    iommu: &mut IommuSystem,
) -> Result<RunReport, PartitionError> {
    p.run_with(budget, &mut || {
        crate::iommu::service_signalled(iommu);
    })
}
