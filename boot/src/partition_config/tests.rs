use super::*;

fn refused(text: &str) -> ConfigError<'_> {
    match parse(text) {
        Ok(cfg) => panic!("accepted: {cfg:?}"),
        Err(e) => e,
    }
}

#[test]
fn parses_the_default_configuration() {
    let cfg = parse(DEFAULT_CONFIG).unwrap();
    let all: Vec<_> = cfg.partitions().collect();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].name, "alpha");
    assert_eq!(all[0].memory, 64 << 20);
    assert_eq!(all[0].backing, Backing::Pages2M);
    assert_eq!(all[0].devices(), &[DeviceAddr { segment: 0, bus: 0, device: 4, function: 0 }]);
    assert_eq!(all[1].name, "beta");
    assert_eq!(all[1].backing, Backing::Pages4K);
    assert_eq!(all[1].image, GuestImage::Builtin);
    assert_eq!(all[1].devices()[0].device, 5);
}

#[test]
fn defaults_comments_modules_and_long_bdfs() {
    let cfg = parse(
        "# a comment\n\npartition p-1  # trailing\n memory 0x400000\n image module:guest.elf\n device 0001:0a:1f.7\n device 00:03.0\n",
    )
    .unwrap();
    let p = cfg.partitions().next().unwrap();
    assert_eq!((p.memory, p.backing, p.cpus), (4 << 20, Backing::Pages4K, 1));
    assert_eq!(p.image, GuestImage::Module("guest.elf"));
    assert_eq!(p.devices()[0], DeviceAddr { segment: 1, bus: 0xa, device: 0x1f, function: 7 });
    assert_eq!(p.devices().len(), 2);
    assert_eq!(p.line, 3);
}

#[test]
fn sizes_and_devices_parse_strictly() {
    assert_eq!(parse_size("2M"), Some(2 << 20));
    assert_eq!(parse_size("3GiB"), Some(3 << 30));
    assert_eq!(parse_size("512K"), Some(512 << 10));
    assert_eq!(parse_size("12345"), Some(12345));
    for bad in ["", "M", "-1M", "1.5M", "64MB", "0x", "99999999999999999999G", "1T"] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
    for bad in ["00:20.0", "00:04.8", "100:04.0", "04.0", "0:0:0:0.0", "00:04", "zz:04.0", ":04.0"]
    {
        assert_eq!(parse_device(bad), None, "{bad}");
    }
}

#[test]
fn refuses_an_empty_configuration() {
    assert_eq!(refused("").kind, ConfigErrorKind::Empty);
    assert_eq!(refused("# only a comment\n").kind, ConfigErrorKind::Empty);
}

#[test]
fn refuses_unknown_keys_with_their_line() {
    let e = refused("partition a\n memory 4M\n colour blue\n");
    assert_eq!(e, ConfigError { line: 3, kind: ConfigErrorKind::UnknownKey("colour") });
    assert!(e.to_string().contains("line 3: unknown key `colour`"), "{e}");
}

#[test]
fn refuses_settings_outside_a_partition() {
    assert_eq!(refused("memory 4M\n").kind, ConfigErrorKind::OutsidePartition("memory"));
}

#[test]
fn refuses_missing_and_extra_values() {
    assert_eq!(refused("partition a\n memory\n").kind, ConfigErrorKind::MissingValue("memory"));
    assert_eq!(refused("partition a b\n").kind, ConfigErrorKind::ExtraWords("partition"));
}

#[test]
fn refuses_repeated_settings() {
    let e = refused("partition a\n memory 4M\n memory 8M\n");
    assert_eq!(e, ConfigError { line: 3, kind: ConfigErrorKind::Repeated("memory") });
}

#[test]
fn refuses_bad_and_duplicate_names() {
    assert_eq!(refused("partition Alpha\n").kind, ConfigErrorKind::BadName("Alpha"));
    let long = "partition abcdefghijklmnopq\n";
    assert!(matches!(refused(long).kind, ConfigErrorKind::BadName(_)));
    let e = refused("partition a\n memory 4M\npartition a\n memory 4M\n");
    assert_eq!(e, ConfigError { line: 3, kind: ConfigErrorKind::DuplicateName("a") });
}

#[test]
fn refuses_too_many_partitions() {
    let mut text = String::new();
    for i in 0..=MAX_PARTITIONS {
        text.push_str(&format!("partition p{i}\n memory 2M\n"));
    }
    assert_eq!(refused(&text).kind, ConfigErrorKind::TooManyPartitions);
}

#[test]
fn refuses_a_partition_without_memory() {
    // Reported at the partition's own line, whether it is last or followed by another.
    let e = refused("partition a\n cpus 1\n");
    assert_eq!(e, ConfigError { line: 1, kind: ConfigErrorKind::MissingMemory("a") });
    let e = refused("partition a\npartition b\n memory 2M\n");
    assert_eq!(e, ConfigError { line: 1, kind: ConfigErrorKind::MissingMemory("a") });
}

#[test]
fn refuses_bad_sizes() {
    assert_eq!(refused("partition a\n memory lots\n").kind, ConfigErrorKind::BadSize("lots"));
    assert_eq!(
        refused("partition a\n memory 1M\n").kind,
        ConfigErrorKind::TooLittleMemory(1 << 20)
    );
    let e = refused("partition a\n memory 4G\n");
    assert_eq!(e.kind, ConfigErrorKind::TooMuchMemory(4 << 30));
    assert!(e.to_string().contains("exceeds"), "{e}");
}

#[test]
fn refuses_memory_that_is_not_whole_backing_pages() {
    let e = refused("partition a\n memory 3M\n backing 2m\n");
    assert_eq!(
        e.kind,
        ConfigErrorKind::NotMultipleOfBacking { memory: 3 << 20, backing: Backing::Pages2M }
    );
    let e = refused("partition a\n memory 2049K\n");
    assert!(matches!(e.kind, ConfigErrorKind::NotMultipleOfBacking { .. }));
    assert!(parse("partition a\n memory 3M\n").is_ok(), "3 MiB is whole 4K pages");
}

#[test]
fn refuses_bad_backing() {
    assert_eq!(refused("partition a\n backing 1g\n").kind, ConfigErrorKind::BadBacking("1g"));
}

#[test]
fn refuses_more_than_one_cpu_clearly() {
    let e = refused("partition a\n memory 4M\n cpus 2\n");
    assert_eq!(e.kind, ConfigErrorKind::TooManyCpus(2));
    assert!(e.to_string().contains("only 1 virtual CPU"), "{e}");
    assert_eq!(refused("partition a\n cpus 0\n").kind, ConfigErrorKind::BadCpus("0"));
    assert_eq!(refused("partition a\n cpus x\n").kind, ConfigErrorKind::BadCpus("x"));
}

#[test]
fn unreset_devices_is_refuse_by_default_and_parsed_once() {
    let cfg = parse("partition a\n memory 4M\npartition b\n memory 4M\n unreset-devices allow\n")
        .expect("parses");
    let p: Vec<_> = cfg.partitions().collect();
    assert!(!p[0].accept_unreset && p[1].accept_unreset);
    assert_eq!(
        refused("partition a\n memory 4M\n unreset-devices maybe\n").kind,
        ConfigErrorKind::BadUnreset("maybe")
    );
    assert_eq!(
        refused("partition a\n unreset-devices allow\n unreset-devices refuse\n").kind,
        ConfigErrorKind::Repeated("unreset-devices")
    );
}

#[test]
fn refuses_bad_images() {
    assert_eq!(refused("partition a\n image module:\n").kind, ConfigErrorKind::BadImage("module:"));
    assert_eq!(refused("partition a\n image guest\n").kind, ConfigErrorKind::BadImage("guest"));
}

#[test]
fn refuses_bad_devices() {
    let e = refused("partition a\n memory 4M\n device 00:40.0\n");
    assert_eq!(e, ConfigError { line: 3, kind: ConfigErrorKind::BadDevice("00:40.0") });
}

#[test]
fn refuses_too_many_devices() {
    let mut text = String::from("partition a\n memory 4M\n");
    for d in 0..=MAX_DEVICES {
        text.push_str(&format!(" device 00:{d:02x}.0\n"));
    }
    assert_eq!(refused(&text).kind, ConfigErrorKind::TooManyDevices("a"));
}

#[test]
fn refuses_a_device_in_two_partitions() {
    let e = refused(
        "partition a\n memory 4M\n device 00:04.0\npartition b\n memory 4M\n device 0000:00:04.0\n",
    );
    let dev = DeviceAddr { segment: 0, bus: 0, device: 4, function: 0 };
    assert_eq!(e.line, 6);
    assert_eq!(e.kind, ConfigErrorKind::DeviceTwice { device: dev, first: "a", second: "b" });
    assert!(e.to_string().contains("assigned to both `a` and `b`"), "{e}");
}

#[test]
fn refuses_a_device_twice_in_one_partition() {
    let e = refused("partition a\n memory 4M\n device 00:04.0\n device 00:04.0\n");
    assert!(e.to_string().contains("listed twice for partition `a`"), "{e}");
}

#[test]
fn platform_is_none_by_default_pc_on_request_and_parsed_once() {
    let cfg = parse("partition a\n memory 4M\npartition b\n memory 4M\n platform pc\npartition c\n memory 4M\n platform none\n")
        .expect("parses");
    let p: Vec<_> = cfg.partitions().map(|p| p.platform).collect();
    assert_eq!(p, [GuestPlatformKind::None, GuestPlatformKind::Pc, GuestPlatformKind::None]);
    assert_eq!(
        refused("partition a\n memory 4M\n platform isa\n").kind,
        ConfigErrorKind::BadPlatform("isa")
    );
    assert_eq!(
        refused("partition a\n platform pc\n platform pc\n").kind,
        ConfigErrorKind::Repeated("platform")
    );
    assert_eq!(refused("platform pc\n").kind, ConfigErrorKind::OutsidePartition("platform"));
}

#[test]
fn linux_partitions_take_an_initrd_and_a_quoted_command_line() {
    let cfg = parse(
        "partition linux\n memory 128M\n image linux:vmlinuz\n initrd initrd.cpio\n cmdline \"console=ttyS0 acpi=off  quiet # not a comment\"  # a comment\n device 00:06.0\n",
    )
    .unwrap();
    let p = cfg.partitions().next().unwrap();
    assert_eq!(p.image, GuestImage::Linux("vmlinuz"));
    assert_eq!(p.initrd, Some("initrd.cpio"));
    assert_eq!(p.cmdline, Some("console=ttyS0 acpi=off  quiet # not a comment"));
    assert_eq!(p.devices().len(), 1);
    // An empty command line is a command line.
    let cfg = parse("partition l\n memory 128M\n image linux:k\n cmdline \"\"\n").unwrap();
    assert_eq!(cfg.partitions().next().unwrap().cmdline, Some(""));
    // Without the optional keys.
    let cfg = parse("partition l\n memory 128M\n image linux:k\n").unwrap();
    let p = cfg.partitions().next().unwrap();
    assert_eq!((p.initrd, p.cmdline), (None, None));
}

#[test]
fn refuses_bad_linux_settings() {
    use ConfigErrorKind as K;
    let linux = "partition l\n memory 128M\n image linux:k\n";
    let with = |line: &str| format!("{linux}{line}\n");
    assert_eq!(refused("partition a\n memory 8M\n image linux:\n").kind, K::BadImage("linux:"));
    assert_eq!(
        refused("partition a\n memory 8M\n initrd x\n").kind,
        K::LinuxOnly { key: "initrd", partition: "a" }
    );
    let e = refused("partition a\n memory 8M\n image module:g.elf\n cmdline \"x\"\n");
    assert_eq!(e.kind, K::LinuxOnly { key: "cmdline", partition: "a" });
    assert_eq!(e.line, 1);
    assert!(e.to_string().contains("`cmdline` is for Linux guests only"), "{e}");
    assert_eq!(refused(&with(" cmdline console=ttyS0")).kind, K::UnquotedCmdline("console=ttyS0"));
    assert_eq!(refused(&with(" cmdline \"console=ttyS0")).kind, K::UnterminatedCmdline);
    assert_eq!(refused(&with(" cmdline")).kind, K::MissingValue("cmdline"));
    assert_eq!(refused(&with(" cmdline   # nothing")).kind, K::MissingValue("cmdline"));
    assert_eq!(refused(&with(" cmdline \"a\" b")).kind, K::ExtraWords("cmdline"));
    assert_eq!(refused(&with(" cmdline \"a\tb\"")).kind, K::BadCmdlineByte(b'\t'));
    assert_eq!(refused(&with(" cmdline \"caf\u{e9}\"")).kind, K::BadCmdlineByte(0xc3));
    let long = format!(" cmdline \"{}\"", "x".repeat(MAX_CMDLINE + 1));
    assert_eq!(refused(&with(&long)).kind, K::CmdlineTooLong(MAX_CMDLINE + 1));
    let max = format!(" cmdline \"{}\"", "x".repeat(MAX_CMDLINE));
    assert!(parse(&with(&max)).is_ok());
    assert_eq!(refused(&with(" cmdline \"a\"\n cmdline \"b\"")).kind, K::Repeated("cmdline"));
    assert_eq!(refused(&with(" initrd a\n initrd b")).kind, K::Repeated("initrd"));
    assert_eq!(refused(&with(" initrd a b")).kind, K::ExtraWords("initrd"));
    assert_eq!(refused("cmdline \"x\"\n").kind, K::OutsidePartition("cmdline"));
    // `cmdlinex` is an unknown key, not a command line.
    assert_eq!(refused(&with(" cmdlinex \"a\"")).kind, K::UnknownKey("cmdlinex"));
}
