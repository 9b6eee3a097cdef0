//! The hypervisor's command line: space-separated `key=value` switches.
//!
//! Known switches:
//! - `log=error|warn|info|debug|trace`: console log level (default `info`);
//! - `test=NAME[,NAME...]` or `test=all`: run the in-kernel tests instead of the demo;
//! - `fault=pagefault`: touch an unmapped address on purpose (checks exception reports);
//! - `vtd-invalidation=queued|register`: force one VT-d invalidation mechanism (default:
//!   queued when the unit has it; register-based invalidation leaves interrupt remapping
//!   off, since the interrupt entry cache can only be invalidated through the queue);
//! - `allow-unsafe-interrupts`: assign devices even where their IOMMU unit cannot remap
//!   interrupts (UNSAFE: such a device can raise any interrupt on the host; every boot
//!   with it says so).
//! - `console=UART[,BAUD]`: the console UART (see [`crate::console`]; default: the one the
//!   ACPI SPCR table names, else COM1, at 115200 baud);
//! - `mode=run|report`: run the partition configuration, or only report what the machine
//!   has and what could be assigned, programming nothing (default: `run` under QEMU or
//!   with a configuration module, `report` otherwise);
//! - `report=text|json`: the report's form (`json` implies `mode=report`);
//! - `exit=bochs`: end the run through Bochs' shutdown port (0x8900) after the closing
//!   `run ended` line (Bochs has no isa-debug-exit; `cargo xtask bochs` passes it).

use crate::console::{parse_console, ConsoleUart, CONSOLE_SYNTAX};
use core::fmt;

/// What the boot does after bring-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create and run the configured partitions.
    Run,
    /// Report the machine and the assignability of its devices; program nothing.
    Report,
}

impl Mode {
    /// The mode when the command line names none: run on an emulated test machine
    /// (QEMU, Bochs) or when a configuration module says what to run; report otherwise,
    /// so a real machine is never handed the QEMU default partitions.
    pub fn default_for(emulated: bool, has_config_module: bool) -> Mode {
        if emulated || has_config_module {
            Mode::Run
        } else {
            Mode::Report
        }
    }
}

/// Log levels the command line can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    Info,
    /// Verbose.
    Debug,
    /// Very verbose.
    Trace,
}

/// A deliberate fault the run should trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliberateFault {
    /// Read an unmapped address.
    PageFault,
}

/// The parsed command line, borrowing from the original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options<'a> {
    /// Console log level.
    pub log: LogLevel,
    /// The test selection (`all` or a comma-separated list), if any.
    pub tests: Option<&'a str>,
    /// A deliberate fault to trigger after bring-up.
    pub fault: Option<DeliberateFault>,
    /// Use register-based VT-d invalidation even where queued invalidation exists.
    pub vtd_register_invalidation: bool,
    /// Assign devices even through units without interrupt remapping (unsafe).
    pub allow_unsafe_interrupts: bool,
    /// The console UART `console=` chose (None: SPCR, else COM1).
    pub console: Option<ConsoleUart>,
    /// `mode=` (None: decided by the machine, see the module docs).
    pub mode: Option<Mode>,
    /// `report=json`: the report as JSON lines.
    pub report_json: bool,
    /// `exit=bochs`: end the run through Bochs' shutdown port.
    pub exit_bochs: bool,
}

/// What is wrong with a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    /// A switch we do not know.
    UnknownSwitch(&'a str),
    /// A known switch with a value it does not take.
    BadValue {
        /// The switch.
        key: &'a str,
        /// The value given.
        value: &'a str,
        /// The values it takes, in words.
        expected: &'static str,
    },
}

impl fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdlineError::UnknownSwitch(s) => write!(
                f,
                "unknown command-line switch `{s}` (known: log=LEVEL, test=NAME[,NAME]|all, fault=pagefault, vtd-invalidation=queued|register, allow-unsafe-interrupts, console=UART[,BAUD], mode=run|report, report=text|json, exit=bochs)"
            ),
            CmdlineError::BadValue { key, value, expected } => {
                write!(f, "command-line switch `{key}` does not take `{value}`: expected {expected}")
            }
        }
    }
}

impl<'a> Options<'a> {
    /// Parses `text`; the first bad switch is reported.
    pub fn parse(text: &'a str) -> Result<Options<'a>, CmdlineError<'a>> {
        let mut opts = Options {
            log: LogLevel::Info,
            tests: None,
            fault: None,
            vtd_register_invalidation: false,
            allow_unsafe_interrupts: false,
            console: None,
            mode: None,
            report_json: false,
            exit_bochs: false,
        };
        for word in text.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            match key {
                "log" => {
                    opts.log = match value {
                        "error" => LogLevel::Error,
                        "warn" => LogLevel::Warn,
                        "info" => LogLevel::Info,
                        "debug" => LogLevel::Debug,
                        "trace" => LogLevel::Trace,
                        _ => {
                            return Err(CmdlineError::BadValue {
                                key,
                                value,
                                expected: "error, warn, info, debug or trace",
                            })
                        }
                    }
                }
                "test" if !value.is_empty() => opts.tests = Some(value),
                "test" => {
                    return Err(CmdlineError::BadValue {
                        key,
                        value,
                        expected: "`all` or test names separated by commas",
                    })
                }
                "fault" if value == "pagefault" => opts.fault = Some(DeliberateFault::PageFault),
                "fault" => {
                    return Err(CmdlineError::BadValue { key, value, expected: "pagefault" })
                }
                "vtd-invalidation" => {
                    opts.vtd_register_invalidation = match value {
                        "queued" => false,
                        "register" => true,
                        _ => {
                            return Err(CmdlineError::BadValue {
                                key,
                                value,
                                expected: "queued or register",
                            })
                        }
                    }
                }
                "allow-unsafe-interrupts" if value.is_empty() => {
                    opts.allow_unsafe_interrupts = true
                }
                "allow-unsafe-interrupts" => {
                    return Err(CmdlineError::BadValue {
                        key,
                        value,
                        expected: "no value (the switch alone)",
                    })
                }
                "console" => match parse_console(value) {
                    Ok(c) => opts.console = Some(c),
                    Err(_) => {
                        return Err(CmdlineError::BadValue { key, value, expected: CONSOLE_SYNTAX })
                    }
                },
                "mode" => {
                    opts.mode = Some(match value {
                        "run" => Mode::Run,
                        "report" => Mode::Report,
                        _ => {
                            return Err(CmdlineError::BadValue {
                                key,
                                value,
                                expected: "run or report",
                            })
                        }
                    })
                }
                "report" => match value {
                    "text" => opts.report_json = false,
                    "json" => {
                        opts.report_json = true;
                        opts.mode = Some(Mode::Report);
                    }
                    _ => {
                        return Err(CmdlineError::BadValue { key, value, expected: "text or json" })
                    }
                },
                "exit" if value == "bochs" => opts.exit_bochs = true,
                "exit" => return Err(CmdlineError::BadValue { key, value, expected: "bochs" }),
                _ => return Err(CmdlineError::UnknownSwitch(word)),
            }
        }
        Ok(opts)
    }

    /// Whether the test selection names `test` (or is `all`).
    pub fn selects(&self, test: &str) -> bool {
        match self.tests {
            Some("all") => true,
            Some(list) => list.split(',').any(|t| t == test),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_switches() {
        let o = Options::parse("  log=debug test=vtd_translate,boot fault=pagefault ").unwrap();
        assert_eq!(o.log, LogLevel::Debug);
        assert!(o.selects("boot") && o.selects("vtd_translate") && !o.selects("vtd"));
        assert_eq!(o.fault, Some(DeliberateFault::PageFault));
        assert!(Options::parse("test=all").unwrap().selects("anything"));
        assert_eq!(Options::parse("").unwrap().tests, None);
        assert!(Options::parse("vtd-invalidation=register").unwrap().vtd_register_invalidation);
        assert!(Options::parse("vtd-invalidation=maybe").is_err());
        assert!(!Options::parse("").unwrap().allow_unsafe_interrupts);
        assert!(Options::parse("allow-unsafe-interrupts").unwrap().allow_unsafe_interrupts);
        assert!(Options::parse("allow-unsafe-interrupts=1").is_err());
    }

    #[test]
    fn a_real_machine_without_configuration_defaults_to_report() {
        assert_eq!(Mode::default_for(true, false), Mode::Run);
        assert_eq!(Mode::default_for(false, true), Mode::Run);
        assert_eq!(Mode::default_for(true, true), Mode::Run);
        assert_eq!(Mode::default_for(false, false), Mode::Report);
    }

    #[test]
    fn console_mode_and_report() {
        let o = Options::parse("console=com2,57600 mode=report").unwrap();
        assert_eq!(o.console.map(|c| c.baud), Some(57600));
        assert_eq!(o.mode, Some(Mode::Report));
        assert!(!o.report_json);
        assert_eq!(Options::parse("").unwrap().mode, None);
        assert_eq!(Options::parse("").unwrap().console, None);
        assert_eq!(Options::parse("mode=run").unwrap().mode, Some(Mode::Run));
        let j = Options::parse("report=json").unwrap();
        assert!(j.report_json && j.mode == Some(Mode::Report));
        for bad in ["console=com9", "console=", "mode=", "mode=check", "report=xml"] {
            let e = Options::parse(bad).unwrap_err();
            assert!(matches!(e, CmdlineError::BadValue { .. }), "{bad}");
        }
        let e = format!("{}", Options::parse("console=ttyS0").unwrap_err());
        assert!(e.contains("com1, com2"), "{e}");
    }

    #[test]
    fn rejects_unknown_and_bad_values_with_a_message() {
        let e = Options::parse("log=info frobnicate=1").unwrap_err();
        assert_eq!(e, CmdlineError::UnknownSwitch("frobnicate=1"));
        assert!(format!("{e}").contains("unknown command-line switch `frobnicate=1`"));
        assert!(matches!(Options::parse("log=loud"), Err(CmdlineError::BadValue { .. })));
        assert!(matches!(Options::parse("test="), Err(CmdlineError::BadValue { .. })));
    }
}
