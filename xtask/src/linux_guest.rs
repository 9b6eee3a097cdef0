//! The Linux guest's files: Debian 12's kernel and busybox-static, fetched with apt's
//! ordinary client (`apt-get download`, never installed), unpacked with `dpkg-deb -x`
//! into `~/.cache/hypervisor-xtask/linux`, plus what is built from them there: an
//! initramfs (a newc cpio archive written here, uncompressed: the kernel unpacks it as it
//! is) holding busybox, the `nvme` module chain and an `/init` that prints markers, and an
//! NVMe disk image with a known pattern. Nothing of it is committed; a finished cache
//! (its `ready` file names the kernel release) is reused.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The metapackage that names the current kernel package.
const KERNEL_META: &str = "linux-image-amd64";
/// Static busybox: the initramfs's shell and tools.
const BUSYBOX: &str = "busybox-static";

/// The nvme driver and its dependencies, in load order (the package has no modules.dep:
/// read from each module's `.modinfo` depends/softdep).
pub const NVME_MODULES: &[&str] = &[
    "crc64",
    "crc64_rocksoft_generic",
    "crc64-rocksoft",
    "crct10dif_common",
    "crct10dif_generic",
    "crc-t10dif",
    "t10-pi",
    "nvme-core",
    "nvme",
];

/// The disk image's size (8 MiB) and the 32-byte patterns of its sectors 0 and 1.
pub const DISK_BYTES: usize = 8 << 20;
/// Sector 0's first 32 bytes.
pub const SECTOR0_PATTERN: &[u8; 32] = b"NVME-TEST-PATTERN-SECTOR0-v1....";
/// Sector 1's first 32 bytes.
pub const SECTOR1_PATTERN: &[u8; 32] = b"NVME-TEST-PATTERN-SECTOR1-v1....";
/// What `/init` writes at the start of sector 2.
pub const GUEST_WRITE: &str = "GUEST-WROTE-SECTOR2";

/// The markers `/init` prints on the console (each on a line of its own).
pub mod marker {
    /// `/init` started (followed by the kernel release).
    pub const INIT: &str = "LINUX-INIT-START";
    /// The nvme modules were loaded.
    pub const MODULES: &str = "LINUX-NVME-MODULES-LOADED";
    /// The pattern was read back and the write verified.
    pub const NVME_OK: &str = "LINUX-NVME-OK";
    /// Something in the NVMe check failed (the reason follows).
    pub const NVME_FAIL: &str = "LINUX-NVME-FAIL";
    /// One result of the DMA probe: `LINUX-DMA-PROBE ADDR status S reads V` (the
    /// completion's status field and the first 16 bits at ADDR, `-` when `/dev/mem` may not
    /// read there), or `LINUX-DMA-PROBE ADDR no completion`.
    pub const DMA_PROBE: &str = "LINUX-DMA-PROBE";
}

/// The kernel parameter that asks `/init` for the DMA probe, once per value:
/// `hvtest.dma=ADDR`. `/init` takes the controller from Linux's driver, sets up an admin
/// queue pair of its own in [`DMA_PROBE_QUEUES`] (which the command line must reserve
/// with `memmap=`, so that `/dev/mem` may reach it) and has the controller write its
/// Identify data to ADDR: what a hostile guest can make its device do.
pub const DMA_PROBE_PARAM: &str = "hvtest.dma=";

/// Where `/init`'s probe queues sit (guest-physical): submission queue, then completion
/// queue 4 KiB above, then a 4 KiB page a probe may aim at. The command line reserves
/// these 64 KiB with `memmap=64K$0x6000000`.
pub const DMA_PROBE_QUEUES: u64 = 0x600_0000;

/// The `memmap=` parameter that reserves [`DMA_PROBE_QUEUES`] from Linux.
pub fn dma_probe_reserve() -> String {
    format!("memmap=64K${DMA_PROBE_QUEUES:#x}")
}

/// The Linux guest's files, ready to be passed as boot modules.
#[derive(Debug, Clone)]
pub struct LinuxGuest {
    /// Debian's bzImage (`boot/vmlinuz-RELEASE`), unmodified.
    pub kernel: PathBuf,
    /// The initramfs (newc cpio).
    pub initrd: PathBuf,
    /// The pristine disk image (copy it per run: the guest writes sector 2).
    pub disk: PathBuf,
    /// The kernel release, e.g. `6.1.0-57-amd64`.
    pub release: String,
}

/// Where the Linux guest is cached: `$XDG_CACHE_HOME` or `~/.cache`, else the target folder.
fn cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| crate::build::workspace_root().join("target"));
    base.join("hypervisor-xtask").join("linux")
}

fn run(cmd: &mut Command, what: &str) -> Result<Vec<u8>, String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn paths(root: &Path, release: &str) -> LinuxGuest {
    LinuxGuest {
        kernel: root.join("root/boot").join(format!("vmlinuz-{release}")),
        initrd: root.join("initrd.cpio"),
        disk: root.join("disk.img"),
        release: release.to_string(),
    }
}

/// Makes sure the Linux guest is in the cache (downloading and building it on first use)
/// and returns its files. Idempotent: a cache whose `ready` file names a release whose
/// files exist is used as it is. Once per process: the suite's tests call it in parallel.
pub fn ensure() -> Result<LinuxGuest, String> {
    static ONCE: std::sync::OnceLock<Result<LinuxGuest, String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(fetch_and_build).clone()
}

fn fetch_and_build() -> Result<LinuxGuest, String> {
    let root = cache_root();
    let ready = root.join("ready");
    if let Ok(release) = std::fs::read_to_string(&ready) {
        let g = paths(&root, release.trim());
        if [&g.kernel, &g.initrd, &g.disk].iter().all(|p| p.is_file()) {
            // The packages are cached; the initramfs is rebuilt from them (a few
            // milliseconds), so a changed `/init` never meets a stale archive.
            refresh_initramfs(&root.join("root"), &g, release.trim())?;
            return Ok(g);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    let debs = root.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| format!("{}: {e}", debs.display()))?;
    eprintln!("xtask: fetching Debian's kernel and busybox into {}", root.display());
    let download = |pkg: &str| {
        run(
            Command::new("apt-get").current_dir(&debs).args(["-qq", "download", pkg]),
            &format!("apt-get download {pkg}"),
        )
    };
    download(KERNEL_META)?;
    let meta = find_deb(&debs, KERNEL_META)?;
    let depends = run(Command::new("dpkg-deb").arg("-f").arg(&meta).arg("Depends"), "dpkg-deb -f")?;
    let depends = String::from_utf8_lossy(&depends).into_owned();
    let package = kernel_package(&depends)
        .ok_or_else(|| format!("{KERNEL_META} depends on no linux-image-*-amd64: {depends:?}"))?;
    let release = package.trim_start_matches("linux-image-").to_string();
    download(&package)?;
    download(BUSYBOX)?;
    let unpacked = root.join("root");
    for pkg in [package.as_str(), BUSYBOX] {
        let deb = find_deb(&debs, pkg)?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked), "dpkg-deb -x")?;
    }
    let g = paths(&root, &release);
    if !g.kernel.is_file() {
        return Err(format!("{} is not in {package}", g.kernel.display()));
    }
    let archive = initramfs(&unpacked, &release)?;
    std::fs::write(&g.initrd, archive).map_err(|e| format!("{}: {e}", g.initrd.display()))?;
    std::fs::write(&g.disk, disk_image()).map_err(|e| format!("{}: {e}", g.disk.display()))?;
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::write(&ready, &release).map_err(|e| format!("{}: {e}", ready.display()))?;
    Ok(g)
}

/// Rewrites the cached initramfs when what [`initramfs`] builds now differs from it
/// (through a temporary file and a rename: test processes may ask at the same time).
fn refresh_initramfs(unpacked: &Path, g: &LinuxGuest, release: &str) -> Result<(), String> {
    let archive = initramfs(unpacked, release)?;
    if std::fs::read(&g.initrd).is_ok_and(|old| old == archive) {
        return Ok(());
    }
    let tmp = g.initrd.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, archive).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &g.initrd).map_err(|e| format!("{}: {e}", g.initrd.display()))
}

/// The `.deb` in `dir` whose file name starts with `package_`.
fn find_deb(dir: &Path, package: &str) -> Result<PathBuf, String> {
    let prefix = format!("{package}_");
    std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .ok_or_else(|| format!("apt-get download left no {package} package in {}", dir.display()))
}

/// The `linux-image-RELEASE` package a metapackage's `Depends` names (the first that is
/// not unsigned or a debug package).
pub fn kernel_package(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-") && d.ends_with("-amd64") && !d.contains("unsigned"))
        .map(str::to_string)
}

/// The file named `name` anywhere under `dir` (module files, by their base name).
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            if let Some(found) = find_file(&p, name) {
                return Some(found);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}

/// The `/init` script (busybox sh). It prints [`marker`] lines, loads the nvme modules,
/// waits (bounded) for the namespace, reads sectors 0 and 1 and compares their patterns,
/// writes sector 2 and reads it back, runs the DMA probe when the command line asks for it
/// ([`DMA_PROBE_PARAM`]), then reboots (with `reboot=t`, a triple fault: the
/// hypervisor sees the partition shut down).
pub fn init_script(release: &str) -> String {
    let modules = NVME_MODULES.join(" ");
    format!(
        r#"#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "{init} $(uname -r) uptime $(cut -d' ' -f1 /proc/uptime)"
for m in {modules}; do insmod /lib/modules/$m.ko || echo "{fail} insmod $m"; done
echo "{modules_loaded}"
i=0
# Up to 120 s for the namespace, unless the driver has already given the controller up.
while [ ! -e /sys/block/nvme0n1 ] && [ $i -lt 120 ]; do
  dmesg | grep -q "nvme.*probe failure" && break
  sleep 1; i=$((i+1))
done
check() {{
  [ -e /sys/block/nvme0n1 ] || {{ echo "{fail} no /dev/nvme0n1"; return; }}
  s0=$(dd if=/dev/nvme0n1 bs=512 count=1 iflag=direct 2>/dev/null | head -c 32)
  s1=$(dd if=/dev/nvme0n1 bs=512 skip=1 count=1 iflag=direct 2>/dev/null | head -c 32)
  [ "$s0" = "{p0}" ] || {{ echo "{fail} sector 0 reads '$s0'"; return; }}
  [ "$s1" = "{p1}" ] || {{ echo "{fail} sector 1 reads '$s1'"; return; }}
  echo "{write}-{release}" | dd of=/dev/nvme0n1 bs=512 seek=2 count=1 conv=sync,fsync oflag=direct 2>/dev/null
  s2=$(dd if=/dev/nvme0n1 bs=512 skip=2 count=1 iflag=direct 2>/dev/null | head -c 19)
  [ "$s2" = "{write}" ] || {{ echo "{fail} sector 2 reads back '$s2'"; return; }}
  echo "{ok} read+write verified on /dev/nvme0n1 at uptime $(cut -d' ' -f1 /proc/uptime)"
}}
check
# The DMA probe ({param}ADDR, any number of them): /init takes the controller from the
# driver and has it write its Identify data to each ADDR through an admin queue pair of
# its own at {queues:#x} (reserved with memmap=): a guest aiming its device's DMA.
probe() {{
  targets=""
  for w in $(cat /proc/cmdline); do
    case "$w" in {param}*) targets="$targets ${{w#{param}}}";; esac
  done
  [ -n "$targets" ] || return
  dev=/sys/bus/pci/devices/0000:00:01.0
  echo 0000:00:01.0 > /sys/bus/pci/drivers/nvme/unbind
  printf '\006\000' | dd of=$dev/config bs=2 seek=2 count=1 conv=notrunc 2>/dev/null
  bar=$(( $(head -n1 $dev/resource | cut -d' ' -f1) ))
  q=$(({queues:#x})); sq=$q; cq=$((q + 0x1000))
  rdy() {{ echo $(( $(devmem $((bar + 0x1c)) 32) & 1 )); }}
  devmem $((bar + 0x14)) 32 0
  i=0; while [ "$(rdy)" != 0 ] && [ $i -lt 500 ]; do usleep 10000; i=$((i+1)); done
  for o in 0 4 8 12 16 20 24 28; do devmem $((cq + o)) 32 0; done
  devmem $((bar + 0x24)) 32 0x000f000f
  devmem $((bar + 0x28)) 32 $sq; devmem $((bar + 0x2c)) 32 0
  devmem $((bar + 0x30)) 32 $cq; devmem $((bar + 0x34)) 32 0
  devmem $((bar + 0x14)) 32 $(( (4 << 20) | (6 << 16) | 1 ))
  i=0; while [ "$(rdy)" != 1 ] && [ $i -lt 500 ]; do usleep 10000; i=$((i+1)); done
  [ "$(rdy)" = 1 ] || {{ echo "{probe} controller not ready: CSTS $(devmem $((bar + 0x1c)) 32)"; return; }}
  n=0
  for t in $targets; do
    tv=$((t)); e=$((sq + n * 64)); c=$((cq + n * 16 + 12)); inside=0
    [ $tv -ge $((q + 0x2000)) ] && [ $tv -lt $((q + 0x10000)) ] && inside=1
    [ $inside = 1 ] && devmem $tv 32 0
    for o in 4 8 12 16 20 32 36 44 48 52 56 60; do devmem $((e + o)) 32 0; done
    devmem $((e + 24)) 32 $((tv & 0xffffffff)); devmem $((e + 28)) 32 $((tv >> 32))
    devmem $((e + 40)) 32 1
    devmem $e 32 $(( 0x06 | ((n + 1) << 16) ))
    devmem $((bar + 0x1000)) 32 $((n + 1))
    i=0
    while [ $(( $(devmem $c 32) & 0x10000 )) = 0 ] && [ $i -lt 300 ]; do usleep 10000; i=$((i+1)); done
    if [ $(( $(devmem $c 32) & 0x10000 )) = 0 ]; then
      echo "{probe} $t no completion"
    else
      v=-; [ $inside = 1 ] && v=$(devmem $tv 16)
      echo "{probe} $t status $(( ($(devmem $c 32) >> 17) & 0x7fff )) reads $v"
    fi
    n=$((n+1))
  done
}}
probe
reboot -f
"#,
        init = marker::INIT,
        fail = marker::NVME_FAIL,
        modules_loaded = marker::MODULES,
        ok = marker::NVME_OK,
        p0 = std::str::from_utf8(SECTOR0_PATTERN).unwrap_or(""),
        p1 = std::str::from_utf8(SECTOR1_PATTERN).unwrap_or(""),
        write = GUEST_WRITE,
        param = DMA_PROBE_PARAM,
        queues = DMA_PROBE_QUEUES,
        probe = marker::DMA_PROBE,
    )
}

/// The initramfs from the unpacked packages under `root`.
fn initramfs(root: &Path, release: &str) -> Result<Vec<u8>, String> {
    let mut c = Cpio::default();
    for d in [".", "bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        c.dir(d);
    }
    c.node("dev/console", 0o020600, 5, 1);
    c.node("dev/null", 0o020666, 1, 3);
    let busybox = root.join("bin/busybox");
    let bytes = std::fs::read(&busybox).map_err(|e| format!("{}: {e}", busybox.display()))?;
    c.file("bin/busybox", 0o755, &bytes);
    c.symlink("bin/sh", "busybox");
    let kernel = root.join("lib/modules").join(release).join("kernel");
    for m in NVME_MODULES {
        let file = format!("{m}.ko");
        let path = find_file(&kernel, &file)
            .ok_or_else(|| format!("module {file} is not in {}", kernel.display()))?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        c.file(&format!("lib/modules/{file}"), 0o644, &bytes);
    }
    c.file("init", 0o755, init_script(release).as_bytes());
    Ok(c.finish())
}

/// The disk image: zero but for sectors 0 and 1, each its 32-byte pattern followed by
/// 480 bytes of `(j * 7 + sector) & 0xff`.
pub fn disk_image() -> Vec<u8> {
    let mut d = vec![0u8; DISK_BYTES];
    for (sector, pattern) in [SECTOR0_PATTERN, SECTOR1_PATTERN].into_iter().enumerate() {
        let s = &mut d[sector * 512..(sector + 1) * 512];
        s[..32].copy_from_slice(pattern);
        for (j, b) in s[32..].iter_mut().enumerate() {
            *b = (j * 7 + sector) as u8;
        }
    }
    d
}

/// A newc ("070701") cpio archive, the format the kernel's initramfs unpacker reads.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0, // mtime
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A directory (mode 0755).
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, (0, 0), target.as_bytes());
    }

    /// A device node (`mode` with its type bits) with device number `major:minor`.
    pub fn node(&mut self, name: &str, mode: u32, major: u32, minor: u32) {
        self.entry(name, mode, (major, minor), &[]);
    }

    /// The archive, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/init` is shell code inside a Rust format string (doubled braces, escaped
    /// backslashes): a POSIX shell must parse what comes out, probe included.
    #[test]
    fn init_script_parses_as_shell() {
        let script = init_script("6.1.0-test");
        assert!(script.contains(&format!("q=$(({DMA_PROBE_QUEUES:#x}))")), "{script}");
        assert!(script.contains("printf '\\006\\000'"), "{script}");
        let path = std::env::temp_dir().join(format!("init-{}.sh", std::process::id()));
        std::fs::write(&path, &script).expect("write the script");
        let out = std::process::Command::new("sh").arg("-n").arg(&path).output().expect("sh");
        let _ = std::fs::remove_file(&path);
        assert!(out.status.success(), "{}\n{script}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn newc_entries_are_aligned_and_end_in_the_trailer() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let a = c.finish();
        assert_eq!(&a[..6], b"070701");
        assert_eq!(a.len() % 4, 0);
        // The second entry starts at a 4-byte boundary after "bin\0" (110 + 4 bytes).
        assert_eq!(&a[116..122], b"070701");
        let trailer = a.windows(10).position(|w| w == b"TRAILER!!!");
        assert!(trailer.is_some());
        // filesize of `init`: 10 bytes, in hex at field 7 (offset 6 + 6 * 8).
        assert_eq!(&a[116 + 54..116 + 62], b"0000000a");
    }

    #[test]
    fn the_metapackage_names_its_kernel() {
        assert_eq!(
            kernel_package("linux-image-6.1.0-57-amd64 (= 6.1.192-3)").as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(kernel_package("libc6"), None);
    }

    #[test]
    fn the_disk_carries_both_patterns() {
        let d = disk_image();
        assert_eq!(&d[..32], SECTOR0_PATTERN);
        assert_eq!(&d[512..544], SECTOR1_PATTERN);
        assert_eq!(d[32], 0);
        assert_eq!(d[512 + 33], 8);
        assert!(d[1024..].iter().all(|b| *b == 0));
    }
}
