//! The in-kernel test runner: named tests chosen by the command line's `test=` switch,
//! each reporting `test NAME ... ok` or `test NAME ... FAILED: reason`, then a closing
//! `N passed, N failed` line. The host-side suites in `tests/` read exactly these lines.
#![deny(unsafe_code)]

use alloc::string::String;

/// What a test gets: everything the boot discovered.
pub struct TestContext<'a> {
    /// The platform as discovered at boot.
    pub platform: &'a mut crate::Platform,
}

/// A test's outcome: `Err` carries the reason in words.
pub type TestResult = Result<(), String>;

/// One named in-kernel test.
pub struct KernelTest {
    /// The name `test=` selects it by.
    pub name: &'static str,
    /// The test body.
    pub run: fn(&mut TestContext<'_>) -> TestResult,
}

/// Fails the enclosing test with a formatted reason unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(alloc::format!($($fmt)*));
        }
    };
}

/// Runs the selected tests; returns whether every one passed (and at least one ran).
pub fn run(selection: &boot::cmdline::Options<'_>, platform: &mut crate::Platform) -> bool {
    let all = crate::tests::ALL;
    // A name in the selection that no test has is a mistake worth stopping for.
    if let Some(list) = selection.tests.filter(|l| *l != "all") {
        for name in list.split(',') {
            if !all.iter().any(|t| t.name == name) {
                crate::println!("no test named `{name}`; known tests:");
                for t in all {
                    crate::println!("  {}", t.name);
                }
                crate::println!("0 passed, 1 failed");
                return false;
            }
        }
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for t in all.iter().filter(|t| selection.selects(t.name)) {
        crate::println!("running test {}", t.name);
        let mut ctx = TestContext { platform };
        match (t.run)(&mut ctx) {
            Ok(()) => {
                passed += 1;
                crate::println!("test {} ... ok", t.name);
            }
            Err(reason) => {
                failed += 1;
                crate::println!("test {} ... FAILED: {}", t.name, reason);
            }
        }
    }
    crate::println!("{passed} passed, {failed} failed");
    failed == 0 && passed > 0
}
