//! CPU set-up: descriptor tables and exception handling.

pub mod gdt;
pub mod idt;
