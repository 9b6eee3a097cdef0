//! Boot protocols and the protocol-independent [`BootInfo`].
#![cfg_attr(not(test), no_std)]
