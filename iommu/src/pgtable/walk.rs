//! The leaf walker: runs of physically contiguous leaves, one read per entry.

use super::{level_index, level_shift, PageTable, Prot, Pte, PteFormat, TableMemory};
use crate::platform::PhysAddr;

/// A run of consecutive leaves that map physically contiguous memory with one access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafRun {
    /// First IOVA of the run.
    pub iova: u64,
    /// Physical address `iova` maps to.
    pub paddr: PhysAddr,
    /// Bytes in the run.
    pub size: u64,
    /// Access granted.
    pub prot: Prot,
}

impl<F: PteFormat> PageTable<F> {
    /// Calls `f` with each run of physically contiguous leaves in `[iova, iova + size)`,
    /// in IOVA order, reading each table entry once. Runs are clipped to the range.
    pub fn for_each_run<M: TableMemory>(
        &self,
        mem: &M,
        iova: u64,
        size: u64,
        mut f: impl FnMut(LeafRun),
    ) {
        let Ok(end) = self.check_range(iova, size) else {
            return;
        };
        let mut run: Option<LeafRun> = None;
        self.runs_in(mem, self.root(), self.levels(), iova, end, &mut run, &mut f);
        if let Some(r) = run {
            f(r);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn runs_in<M: TableMemory>(
        &self,
        mem: &M,
        table: PhysAddr,
        level: u32,
        start: u64,
        end: u64,
        run: &mut Option<LeafRun>,
        f: &mut impl FnMut(LeafRun),
    ) {
        let shift = level_shift(level);
        let mut va = start;
        while va < end {
            let idx = level_index(va, level);
            let entry_end = (va | ((1u64 << shift) - 1)) + 1;
            match self.format().decode(self.read(mem, table, idx), level) {
                Pte::Empty => va = entry_end,
                Pte::Table(child) => {
                    if level > 1 {
                        self.runs_in(mem, child, level - 1, va, end.min(entry_end), run, f);
                    }
                    va = entry_end;
                }
                Pte::Leaf { paddr, order, prot } => {
                    let page_end = (va | ((1u64 << order) - 1)) + 1;
                    let stop = page_end.min(end);
                    let here = paddr + (va & ((1u64 << order) - 1));
                    let piece = LeafRun { iova: va, paddr: here, size: stop - va, prot };
                    match run {
                        Some(r)
                            if r.iova + r.size == va
                                && r.paddr + r.size == here
                                && r.prot == prot =>
                        {
                            r.size += piece.size
                        }
                        _ => {
                            if let Some(done) = run.replace(piece) {
                                f(done);
                            }
                        }
                    }
                    va = stop;
                }
            }
        }
    }
}
