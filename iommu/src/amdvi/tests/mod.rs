//! Host tests: a register-level model of an AMD-Vi unit and tests of every encoding the
//! driver produces, checked against the specification's rules.

mod model;

mod attach;
mod bringup;
mod commands;
mod device_table;
mod events;
mod interrupts;
mod platform_security;
mod unit;
