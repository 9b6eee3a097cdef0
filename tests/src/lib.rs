//! Helpers for the QEMU suites in `tests/tests/`.
