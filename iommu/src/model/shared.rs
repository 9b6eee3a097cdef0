//! A [`ModelIommu`] shared behind a `RefCell`, as an invalidator: a tracker or a domain can
//! hold it while the test (a release callback, its checks) looks at the same model.

use std::cell::{Cell, RefCell};

use super::ModelIommu;
use crate::error::HwError;
use crate::invalidate::{DomainId, IotlbInvalidator, IovaBlock};

/// The shared model; `sync` fails once, with a timeout, when `fail_sync_in` has counted
/// down to zero (an injected failure at a chosen step).
pub struct SharedModel<'a> {
    /// The model every call goes to.
    pub model: &'a RefCell<ModelIommu>,
    /// Successful syncs left before the injected failure (`None` in the cell: never).
    pub fail_sync_in: Option<&'a Cell<Option<u32>>>,
}

impl<'a> SharedModel<'a> {
    /// The model, never failing on its own.
    pub fn new(model: &'a RefCell<ModelIommu>) -> Self {
        Self { model, fail_sync_in: None }
    }
}

impl IotlbInvalidator for SharedModel<'_> {
    fn max_block_order(&self) -> u32 {
        self.model.borrow().max_order
    }
    fn invalidate_block(&mut self, d: DomainId, b: IovaBlock) -> Result<(), HwError> {
        self.model.borrow_mut().invalidate_block(d, b)
    }
    fn invalidate_domain(&mut self, d: DomainId) -> Result<(), HwError> {
        self.model.borrow_mut().invalidate_domain(d)
    }
    fn sync(&mut self) -> Result<(), HwError> {
        if let Some(fail_in) = self.fail_sync_in {
            match fail_in.get() {
                Some(0) => {
                    fail_in.set(None);
                    return Err(HwError::Timeout { what: "injected" });
                }
                Some(n) => fail_in.set(Some(n - 1)),
                None => {}
            }
        }
        self.model.borrow_mut().sync()
    }
}
