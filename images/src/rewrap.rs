//! x86_64 kernels that unpack fast under TCG: Debian's bzImage carries its
//! vmlinux XZ-compressed, and unpacking that took ~3 s of every x86 boot
//! under TCG. The same vmlinux (byte for byte) is re-wrapped once per kernel
//! package into a bzImage whose payload is LZ4, and every x86_64 image boots
//! that one (`../shared/VERIFIED.md`, "Boot to SSH, fast").
//!
//! How: the stock payload is `vmlinux.bin` (the stripped ELF) followed by
//! `vmlinux.relocs`; it is unpacked and split, and only `arch/x86/boot` of
//! Kbuild runs from the matching `linux-source-X.Y` package (same version as
//! the kernel package, Debian builds both from one source), with Debian's
//! config switched to `KERNEL_LZ4`, the extracted ELF as the top-level
//! `vmlinux`, and two small wrappers Kbuild runs: `NM` answers the four
//! symbols `voffset.h` needs from the ELF's section headers (the ELF has no
//! symbol table), `CMD_RELOCS` prints the extracted relocations. The kernel
//! itself is never compiled.
//!
//! Invariants: the result is kept only if its payload, unpacked, equals the
//! stock payload byte for byte and its version string is the stock one; it
//! is built in a temp folder and renamed into place under a lock per kernel
//! package, so a half-built kernel is never seen and two builds never build
//! it at once; the source tree (~300 MB) is removed whatever happens.
use crate::apt::{self, Resolved};
use crate::cache;
use crate::tools::Tool;
use crate::{Arch, ImageError};
use std::path::{Path, PathBuf};

/// What every image's inputs carry (see [`crate::cache::inputs_hash`]):
/// changing how kernels are wrapped rebuilds the images.
pub const IDENTITY: &str = "x86_64 bzImage payload lz4, rewrap 1";

/// The kernel an image boots: for x86_64 the LZ4 re-wrap of the package's
/// `boot/vmlinuz-<kver>` (built once), for other arches that file itself.
pub fn vmlinuz(root: &Path, arch: Arch, kernel: &Resolved, kroot: &Path, kver: &str) -> Result<PathBuf, ImageError> {
    let stock = kroot.join(format!("boot/vmlinuz-{kver}"));
    if arch != Arch::X86_64 {
        return Ok(stock);
    }
    let parent = root.join("kernels").join("x86_64-lz4");
    std::fs::create_dir_all(&parent).map_err(ImageError::io(&parent))?;
    let stem = format!("{}_{}", kernel.name, kernel.version.replace(':', "%3a"));
    let done = parent.join(&stem).join("vmlinuz");
    if done.is_file() {
        return Ok(done);
    }
    let _lock = cache::lock(&parent.join(format!("{stem}.lock")))?;
    if done.is_file() {
        return Ok(done);
    }
    cache::remove_stale(&parent, &format!("{stem}."));
    let source = source_package(kernel)?;
    let downloads = root.join("downloads").join(arch.debian());
    let debs = apt::download(root, &downloads, arch, &[&source])?;
    let work = parent.join(format!("{stem}.{}", cache::tmp_suffix()));
    std::fs::create_dir_all(&work).map_err(ImageError::io(&work))?;
    let built = build(&work, &stock, kroot, kver, &debs[0], &source.version);
    let kept = built.and_then(|out| {
        let dir = parent.join(&stem);
        let staged = work.join("out");
        std::fs::create_dir_all(&staged).map_err(ImageError::io(&staged))?;
        std::fs::rename(&out, staged.join("vmlinuz")).map_err(ImageError::io(&out))?;
        std::fs::rename(&staged, &dir).map_err(ImageError::io(&dir))
    });
    let _ = std::fs::remove_dir_all(&work);
    kept?;
    // The re-wraps of the most recently used kernels stay, as their packages do.
    crate::kernel::prune(&parent, &stem);
    Ok(done)
}

/// `linux-source-X.Y` at the kernel package's version.
fn source_package(kernel: &Resolved) -> Result<Resolved, ImageError> {
    let upstream = kernel.version.split(['-', '+', '~']).next().unwrap_or_default();
    let mut parts = upstream.rsplit_once(':').map_or(upstream, |(_, v)| v).split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) if !major.is_empty() && !minor.is_empty() => {
            let name = format!("linux-source-{major}.{minor}");
            Ok(Resolved { apt_name: name.clone(), name, version: kernel.version.clone() })
        }
        _ => Err(ImageError::Resolve {
            arch: "amd64".into(),
            message: format!("{} {}: no X.Y in the version to find its linux-source", kernel.name, kernel.version),
        }),
    }
}

/// The setup header fields a re-wrap reads.
#[derive(Debug, PartialEq)]
pub struct Header {
    /// Where the protected-mode code starts in the file.
    pub protected_mode: usize,
    /// The payload (compressed vmlinux.bin + relocs, then its 4-byte
    /// little-endian unpacked size), relative to the start of the file.
    pub payload: std::ops::Range<usize>,
    /// `kernel_version`: `<release> (<user>@<host>) <uts version>`.
    pub version: String,
}

/// Reads a bzImage's setup header (Documentation/x86/boot.rst).
pub fn header(img: &[u8]) -> Result<Header, String> {
    let u16_at = |o: usize| img.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| img.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    if img.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err("not a bzImage (no HdrS signature)".into());
    }
    let sects = match img[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let protected_mode = (sects + 1) * 512;
    let (offset, length) = (u32_at(0x248).unwrap_or(0), u32_at(0x24c).unwrap_or(0));
    let start = protected_mode + offset;
    if length < 4 || start + length > img.len() {
        return Err(format!("payload {offset:#x}+{length:#x} is outside the file ({} bytes)", img.len()));
    }
    let v = u16_at(0x20e).map(|o| o + 0x200).filter(|&o| o < img.len()).ok_or("no kernel_version")?;
    let end = img[v..].iter().position(|&b| b == 0).ok_or("kernel_version has no end")?;
    let version = String::from_utf8_lossy(&img[v..v + end]).into_owned();
    Ok(Header { protected_mode, payload: start..start + length, version })
}

/// What the version string says Kbuild stamped into the image.
#[derive(Debug, PartialEq)]
pub struct Stamp {
    pub release: String,
    pub user: String,
    pub host: String,
    /// `#<build number> ...`.
    pub uts_version: String,
    pub build_number: String,
}

/// Splits `<release> (<user>@<host>) #<n> <rest>`.
pub fn stamp(version: &str) -> Result<Stamp, String> {
    let bad = || format!("cannot read kernel_version {version:?}");
    let (release, rest) = version.split_once(" (").ok_or_else(bad)?;
    let (by, uts) = rest.split_once(") #").ok_or_else(bad)?;
    let (user, host) = by.rsplit_once('@').ok_or_else(bad)?;
    let build_number = uts.split(' ').next().filter(|n| n.bytes().all(|b| b.is_ascii_digit())).ok_or_else(bad)?;
    Ok(Stamp {
        release: release.into(),
        user: user.into(),
        host: host.into(),
        uts_version: format!("#{uts}"),
        build_number: build_number.into(),
    })
}

/// The unpacked payload cut in two: the stripped ELF and the relocations,
/// with the symbols `voffset.h` needs (nm's format).
#[derive(Debug)]
pub struct Split {
    pub elf_len: usize,
    pub symbols: String,
}

/// Finds where `vmlinux.bin` ends in the unpacked payload (the relocations
/// follow) and computes `_text`, `__start_rodata`, `__bss_start` and `_end`
/// from its section headers; checks the relocations' layout (three zero
/// separators, every entry inside the kernel).
pub fn split(all: &[u8]) -> Result<Split, String> {
    let u16_at = |o: usize| all.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize).unwrap_or(0);
    let u32_at = |o: usize| all.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap())).unwrap_or(0);
    let u64_at = |o: usize| all.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap())).unwrap_or(0);
    if all.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) || u16_at(16) != 2 || u16_at(18) != 62 {
        return Err("the payload does not start with an x86_64 ELF executable".into());
    }
    let (phoff, shoff) = (u64_at(32) as usize, u64_at(40) as usize);
    let (phentsize, phnum, shentsize, shnum, shstrndx) = (u16_at(54), u16_at(56), u16_at(58), u16_at(60), u16_at(62));
    let mut end = (phoff + phnum * phentsize).max(shoff + shnum * shentsize).max(u16_at(52));
    if end > all.len() {
        return Err("the ELF headers run past the payload".into());
    }
    // (name offset, type, address, file offset, size)
    let sections: Vec<(usize, u32, u64, usize, u64)> = (0..shnum)
        .map(|i| {
            let s = shoff + i * shentsize;
            (u32_at(s) as usize, u32_at(s + 4), u64_at(s + 16), u64_at(s + 24) as usize, u64_at(s + 32))
        })
        .collect();
    for &(_, kind, _, offset, size) in &sections {
        // SHT_NOBITS occupies no file bytes.
        if kind != 8 {
            end = end.max(offset + size as usize);
        }
    }
    for i in 0..phnum {
        let p = phoff + i * phentsize;
        end = end.max(u64_at(p + 8) as usize + u64_at(p + 32) as usize);
    }
    let names = sections.get(shstrndx).map_or(0, |s| s.3);
    let named = |want: &str| {
        sections.iter().find(|s| {
            let n = &all[(names + s.0).min(all.len())..];
            n.starts_with(want.as_bytes()) && n.get(want.len()) == Some(&0)
        })
    };
    let addr = |want: &str| named(want).map(|s| (s.2, s.4)).ok_or(format!("the ELF has no {want} section"));
    let (text, rodata, bss, brk) = (addr(".text")?.0, addr(".rodata")?.0, addr(".bss")?.0, addr(".brk")?);
    // vmlinux.lds: `. = ALIGN(PAGE_SIZE); _end = .;` right after .brk.
    let kernel_end = (brk.0 + brk.1 + 4095) & !4095;
    let relocs = all.get(end..).unwrap_or_default();
    if relocs.len() < 12 || relocs.len() % 4 != 0 {
        return Err(format!("{} bytes of relocations after the ELF: not a relocation table", relocs.len()));
    }
    let entries: Vec<u32> = relocs.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    if entries[0] != 0 || entries.iter().filter(|&&e| e == 0).count() != 3 {
        return Err("the relocation table does not have its three zero separators".into());
    }
    let (lo, hi) = (text as u32, kernel_end as u32);
    if let Some(bad) = entries.iter().find(|&&e| e != 0 && !(lo..hi).contains(&e)) {
        return Err(format!("relocation {bad:#x} lies outside the kernel [{lo:#x}, {hi:#x})"));
    }
    let symbols = format!(
        "{text:016x} T _text\n{rodata:016x} D __start_rodata\n{bss:016x} B __bss_start\n{kernel_end:016x} B _end\n"
    );
    Ok(Split { elf_len: end, symbols })
}

/// Debian's config with the payload compression switched to LZ4.
pub fn lz4_config(config: &str) -> String {
    const ALL: [&str; 7] = ["GZIP", "BZIP2", "LZMA", "XZ", "LZO", "LZ4", "ZSTD"];
    let mut out: Vec<String> = config
        .lines()
        .filter(|l| {
            !ALL.iter().any(|c| {
                l.starts_with(&format!("CONFIG_KERNEL_{c}=")) || *l == format!("# CONFIG_KERNEL_{c} is not set")
            })
        })
        .map(str::to_string)
        .collect();
    for c in ALL {
        out.push(if c == "LZ4" { "CONFIG_KERNEL_LZ4=y".into() } else { format!("# CONFIG_KERNEL_{c} is not set") });
    }
    out.join("\n") + "\n"
}

/// Runs `tool`, its output appended to `log`; on failure the error quotes
/// the last lines of what it printed.
fn run(tool: Tool, log: &Path) -> Result<Vec<u8>, ImageError> {
    let out = tool.run().map_err(|e| match e {
        ImageError::Command { command, status, stderr } => {
            let tail: Vec<&str> = stderr.lines().rev().take(25).collect();
            let stderr = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            ImageError::Command { command, status, stderr }
        }
        other => other,
    })?;
    use std::io::Write;
    if let Ok(mut f) = std::fs::File::options().create(true).append(true).open(log) {
        let _ = f.write_all(&out);
    }
    Ok(out)
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), ImageError> {
    std::fs::write(path, bytes).map_err(ImageError::io(path))
}

/// The payload of `img` unpacked with `tool` (`xz`, `lz4`), checked against
/// the unpacked size stored in its last four bytes.
fn unpack(img: &[u8], tool: &str, work: &Path) -> Result<Vec<u8>, ImageError> {
    let h = header(img).map_err(|e| ImageError::invalid(work, e))?;
    let payload = &img[h.payload.clone()];
    let (packed, size) = payload.split_at(payload.len() - 4);
    let file = work.join(format!("payload.{tool}"));
    write(&file, packed)?;
    let all = Tool::new(tool)?.args(["-dc"]).arg(&file).run()?;
    let _ = std::fs::remove_file(&file);
    if all.len() != u32::from_le_bytes(size.try_into().unwrap()) as usize {
        return Err(ImageError::invalid(
            work,
            format!("{tool} payload unpacks to {} bytes, not the stored size", all.len()),
        ));
    }
    Ok(all)
}

/// The part of the kernel source this build reads (every Kconfig file, what
/// `prepare`, the EFI stub and arch/x86/boot need), unpacked from the
/// `linux-source` package into `work`; checked to be `version`'s.
fn source_tree(work: &Path, source_deb: &Path, version: &str, log: &Path) -> Result<PathBuf, ImageError> {
    run(Tool::new("dpkg-deb")?.arg("-x").arg(source_deb).arg(work.join("deb")), log)?;
    let src = work.join("deb/usr/src");
    let tarball = std::fs::read_dir(&src)
        .map_err(ImageError::io(&src))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.xz"))
        .ok_or_else(|| ImageError::invalid(source_deb, "no usr/src/linux-source-*.tar.xz inside"))?;
    let top = tarball.file_name().unwrap().to_string_lossy().trim_end_matches(".tar.xz").to_string();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut tar = Tool::new("tar")?.arg("-C").arg(work).args(["-I", &format!("xz -T{jobs}"), "-xf"]).arg(&tarball);
    for d in ["dt-bindings", "net", "sound", "media", "drm", "soc", "scsi", "rdma"] {
        tar = tar.arg(format!("--exclude={top}/include/{d}"));
    }
    tar = tar.arg("--wildcards");
    for m in [
        "Makefile",
        "Kbuild",
        "Kconfig",
        "*Kconfig*",
        "scripts",
        "include",
        "arch/x86",
        "lib",
        "kernel/bounds.c",
        "kernel/time/timeconst.bc",
        "drivers/Makefile",
        "drivers/firmware/Makefile",
        "drivers/firmware/efi/Makefile",
        "drivers/firmware/efi/libstub",
        "tools/include",
    ] {
        tar = tar.arg(format!("{top}/{m}"));
    }
    run(tar, log)?;
    let _ = std::fs::remove_dir_all(work.join("deb"));
    let s = work.join(&top);
    let upstream =
        String::from_utf8_lossy(&run(Tool::new("make")?.args(["-s", "-C"]).arg(&s).arg("kernelversion"), log)?)
            .trim()
            .to_string();
    if !version.starts_with(&format!("{upstream}-")) && version != upstream {
        return Err(ImageError::invalid(source_deb, format!("source is {upstream}, the kernel package {version}")));
    }
    Ok(s)
}

/// The stock vmlinux as the top-level `vmlinux` of the tree `s`, and the
/// two wrappers Kbuild asks for what it would read from an unstripped one:
/// `NM` (voffset.h's symbols from the section headers, everything else from
/// nm) and `CMD_RELOCS` (the stock payload's relocations).
fn stand_in(work: &Path, s: &Path, all: &[u8], parts: &Split) -> Result<(PathBuf, PathBuf), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    write(&s.join("vmlinux"), &all[..parts.elf_len])?;
    let (relocs, symbols) = (work.join("vmlinux.relocs"), work.join("vmlinux.syms"));
    write(&relocs, &all[parts.elf_len..])?;
    write(&symbols, &parts.symbols)?;
    let vmlinux = s.join("vmlinux");
    let nm = work.join("nm-voffset");
    write(
        &nm,
        format!(
            "#!/bin/sh\n# nm for Kbuild: the stock vmlinux has no symbol table; voffset.h's\n\
             # symbols come from its section headers, everything else from nm.\n\
             for a in \"$@\"; do\n  case \"$a\" in -*) ;; *) [ \"$(realpath -m -- \"$a\")\" = '{}' ] && exec cat '{}' ;; esac\ndone\n\
             exec nm \"$@\"\n",
            vmlinux.display(),
            symbols.display()
        ),
    )?;
    let rel = work.join("relocs-stock");
    write(
        &rel,
        format!(
            "#!/bin/sh\n# CMD_RELOCS for Kbuild: the stock payload's relocations.\n\
             [ \"$1\" = --abs-relocs ] && exit 0\n\
             [ \"$(realpath -m -- \"$1\")\" = '{}' ] || {{ echo \"relocs-stock: unexpected input $1\" >&2; exit 1; }}\n\
             exec cat '{}'\n",
            vmlinux.display(),
            relocs.display()
        ),
    )?;
    for p in [&nm, &rel] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).map_err(ImageError::io(p))?;
    }
    Ok((nm, rel))
}

/// Builds the LZ4 bzImage in `work` and returns its path there.
fn build(
    work: &Path,
    stock: &Path,
    kroot: &Path,
    kver: &str,
    source_deb: &Path,
    version: &str,
) -> Result<PathBuf, ImageError> {
    let log = work.join("rewrap.log");
    let img = std::fs::read(stock).map_err(ImageError::io(stock))?;
    let h = header(&img).map_err(|e| ImageError::invalid(stock, e))?;
    let st = stamp(&h.version).map_err(|e| ImageError::invalid(stock, e))?;
    let all = unpack(&img, "xz", work)?;
    let parts = split(&all).map_err(|e| ImageError::invalid(stock, e))?;

    let s = source_tree(work, source_deb, version, &log)?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get()).to_string();

    // Debian's config, LZ4 payload; the compiler Debian used if it is here.
    let config_path = kroot.join(format!("boot/config-{kver}"));
    let config = std::fs::read_to_string(&config_path).map_err(ImageError::io(&config_path))?;
    write(&s.join(".config"), lz4_config(&config))?;
    let cc = config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_CC_VERSION_TEXT=\""))
        .and_then(|t| t.split(' ').next())
        .filter(|c| crate::tools::find(c).is_ok())
        .unwrap_or("gcc")
        .to_string();
    let make = || -> Result<Tool, ImageError> {
        Ok(Tool::new("make")?.arg("-C").arg(&s).arg(format!("-j{jobs}")).args(["ARCH=x86", &format!("CC={cc}")]))
    };
    run(make()?.arg("olddefconfig"), &log)?;
    let config = std::fs::read_to_string(s.join(".config")).map_err(ImageError::io(s.join(".config")))?;
    if !config.lines().any(|l| l == "CONFIG_KERNEL_LZ4=y") {
        return Err(ImageError::invalid(&config_path, "CONFIG_KERNEL_LZ4=y did not survive olddefconfig"));
    }

    let (nm, rel) = stand_in(work, &s, &all, &parts)?;
    let kbuild = || -> Result<Tool, ImageError> {
        Ok(make()?
            .arg(format!("KERNELRELEASE={}", st.release))
            .arg(format!("KBUILD_BUILD_USER={}", st.user))
            .arg(format!("KBUILD_BUILD_HOST={}", st.host))
            .arg(format!("NM={}", nm.display()))
            .arg(format!("CMD_RELOCS={}", rel.display()))
            // Never build the kernel or the host tools only it needs.
            .args(["-o", "vmlinux", "-o", "tools/objtool", "-o", "tools/bpf/resolve_btfids", "-o", "scripts"])
            .args(["-o", "archscripts"]))
    };
    run(kbuild()?.arg("prepare"), &log)?;

    // Files the rest of a kernel build would have generated.
    write(&s.join("include/generated/utsversion.h"), format!("#define UTS_VERSION \"{}\"\n", st.uts_version))?;
    write(&s.join(".version"), format!("{}\n", st.build_number))?;
    let cpu = "arch/x86/kernel/cpu";
    run(
        Tool::new("sh")?
            .current_dir(&s)
            .arg(format!("{cpu}/mkcapflags.sh"))
            .arg(format!("{cpu}/capflags.c"))
            .arg("arch/x86/include/asm/cpufeatures.h")
            .arg("arch/x86/include/asm/vmxfeatures.h")
            .arg(format!("{cpu}/mkcapflags.sh")),
        &log,
    )?;
    let inat = run(
        Tool::new("awk")?.current_dir(&s).args([
            "-f",
            "arch/x86/tools/gen-insn-attr-x86.awk",
            "arch/x86/lib/x86-opcode-map.txt",
        ]),
        &log,
    )?;
    write(&s.join("arch/x86/lib/inat-tables.c"), inat)?;
    if config.lines().any(|l| l == "CONFIG_EFI_STUB=y") {
        run(kbuild()?.arg("drivers/firmware/efi/libstub/lib.a"), &log)?;
    }
    run(kbuild()?.arg("bzImage"), &log)?;

    // Kept only if it carries the stock kernel, byte for byte.
    let out = s.join("arch/x86/boot/bzImage");
    let new = std::fs::read(&out).map_err(ImageError::io(&out))?;
    let nh = header(&new).map_err(|e| ImageError::invalid(&out, e))?;
    if nh.version != h.version {
        return Err(ImageError::invalid(&out, format!("version {:?}, the stock one {:?}", nh.version, h.version)));
    }
    if unpack(&new, "lz4", work)? != all {
        return Err(ImageError::invalid(&out, "its payload differs from the stock kernel's"));
    }
    let kept = work.join("vmlinuz");
    std::fs::rename(&out, &kept).map_err(ImageError::io(&out))?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A setup header with `sects` setup sectors, a payload and a version.
    fn bzimage(sects: u8, payload: &[u8], version: &str) -> Vec<u8> {
        let pm = (if sects == 0 { 4 } else { sects as usize } + 1) * 512;
        let mut img = vec![0u8; pm + 64 + payload.len()];
        img[0x1f1] = sects;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x248..0x24c].copy_from_slice(&64u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let v = 0x300;
        img[0x20e..0x210].copy_from_slice(&((v - 0x200) as u16).to_le_bytes());
        img[v..v + version.len()].copy_from_slice(version.as_bytes());
        img[pm + 64..].copy_from_slice(payload);
        img
    }

    #[test]
    fn reads_the_setup_header() {
        let v = "6.1.0-57-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)";
        let img = bzimage(5, b"PAYLOAD\x07\0\0\0", v);
        let h = header(&img).unwrap();
        assert_eq!(h.protected_mode, 6 * 512);
        assert_eq!(&img[h.payload.clone()], b"PAYLOAD\x07\0\0\0");
        assert_eq!(h.version, v);
        let s = stamp(&h.version).unwrap();
        assert_eq!(
            (s.release.as_str(), s.user.as_str(), s.host.as_str()),
            ("6.1.0-57-amd64", "debian-kernel", "lists.debian.org")
        );
        assert_eq!(s.uts_version, "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)");
        assert_eq!(s.build_number, "1");
        // Zero setup sectors means four.
        assert_eq!(header(&bzimage(0, b"abcdefgh", v)).unwrap().protected_mode, 5 * 512);
        // Not a bzImage; a payload past the end.
        assert!(header(&vec![0u8; 4096]).unwrap_err().contains("HdrS"));
        let mut cut = bzimage(5, b"PAYLOAD\x07\0\0\0", v);
        cut.truncate(cut.len() - 3);
        assert!(header(&cut).unwrap_err().contains("outside"));
        assert!(stamp("6.1.0 no builder").is_err());
    }

    /// A minimal x86_64 ELF with .text, .rodata, .bss and .brk section
    /// headers, followed by `relocs`.
    fn elf_with(relocs: &[u32]) -> Vec<u8> {
        let names = b"\0.text\0.rodata\0.bss\0.brk\0.shstrtab\0";
        let (shoff, shnum) = (64 + names.len(), 6usize);
        let mut e = vec![0u8; shoff + shnum * 64];
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
        e[16..18].copy_from_slice(&2u16.to_le_bytes());
        e[18..20].copy_from_slice(&62u16.to_le_bytes());
        e[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
        e[52..54].copy_from_slice(&64u16.to_le_bytes());
        e[58..60].copy_from_slice(&64u16.to_le_bytes());
        e[60..62].copy_from_slice(&(shnum as u16).to_le_bytes());
        e[62..64].copy_from_slice(&5u16.to_le_bytes());
        e[64..64 + names.len()].copy_from_slice(names);
        // (name, type, addr, offset, size); .bss and .brk are NOBITS.
        let base = 0xffff_ffff_8100_0000u64;
        let secs = [
            (0u32, 0u32, 0u64, 0u64, 0u64),
            (1, 1, base, 0, 0x10),
            (7, 1, base + 0x20_0000, 0, 0x10),
            (15, 8, base + 0x40_0000, 0, 0x1000),
            (20, 8, base + 0x50_0000, 0, 0x1800),
            (25, 3, 0, 64, names.len() as u64),
        ];
        for (i, (name, kind, addr, off, size)) in secs.iter().enumerate() {
            let s = shoff + i * 64;
            e[s..s + 4].copy_from_slice(&name.to_le_bytes());
            e[s + 4..s + 8].copy_from_slice(&kind.to_le_bytes());
            e[s + 16..s + 24].copy_from_slice(&addr.to_le_bytes());
            e[s + 24..s + 32].copy_from_slice(&off.to_le_bytes());
            e[s + 32..s + 40].copy_from_slice(&size.to_le_bytes());
        }
        e.extend(relocs.iter().flat_map(|r| r.to_le_bytes()));
        e
    }

    #[test]
    fn splits_the_payload_and_computes_voffset_symbols() {
        let elf_len = elf_with(&[]).len();
        let all = elf_with(&[0, 0x8100_0010, 0, 0x8120_0000, 0, 0x8150_0ff0]);
        let s = split(&all).unwrap();
        assert_eq!(s.elf_len, elf_len);
        assert_eq!(
            s.symbols,
            "ffffffff81000000 T _text\nffffffff81200000 D __start_rodata\n\
             ffffffff81400000 B __bss_start\nffffffff81502000 B _end\n"
        );
        // A relocation past _end, a missing separator, no relocations.
        assert!(split(&elf_with(&[0, 0x8160_0000, 0, 0])).unwrap_err().contains("outside"));
        assert!(split(&elf_with(&[0, 0x8100_0010, 0x8100_0020, 0])).unwrap_err().contains("separators"));
        assert!(split(&elf_with(&[])).unwrap_err().contains("not a relocation table"));
        assert!(split(b"MZ not an elf at all").unwrap_err().contains("ELF"));
    }

    #[test]
    fn the_config_asks_for_lz4_only() {
        let c = "CONFIG_A=y\nCONFIG_KERNEL_XZ=y\n# CONFIG_KERNEL_LZ4 is not set\nCONFIG_B=m\n";
        let out = lz4_config(c);
        assert!(out.contains("CONFIG_A=y\n") && out.contains("CONFIG_B=m\n"));
        assert_eq!(out.matches("CONFIG_KERNEL_LZ4=y").count(), 1);
        assert!(out.contains("# CONFIG_KERNEL_XZ is not set") && !out.contains("CONFIG_KERNEL_XZ=y"));
        assert!(!out.contains("# CONFIG_KERNEL_LZ4 is not set"));
    }

    #[test]
    fn the_source_package_follows_the_kernel_version() {
        let k = |v: &str| Resolved {
            apt_name: "linux-image-6.1.0-57-amd64".into(),
            name: "linux-image-6.1.0-57-amd64".into(),
            version: v.into(),
        };
        let s = source_package(&k("6.1.192-3")).unwrap();
        assert_eq!((s.name.as_str(), s.version.as_str()), ("linux-source-6.1", "6.1.192-3"));
        assert_eq!(source_package(&k("6.12.9-1~bpo12+1")).unwrap().name, "linux-source-6.12");
        assert!(source_package(&k("garbage")).is_err());
    }
}
