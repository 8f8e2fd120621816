//! Package resolution and download with the host's apt: the dependency
//! closure (`apt-cache depends --recurse`), exact versions (`apt-cache
//! policy`) and `apt-get download` into a per-arch cache. Uses a private
//! pkgcache under the cache root so repeated resolutions are fast. Must not
//! install anything on the host or write outside the cache root.
use crate::tools::Tool;
use crate::{Arch, ImageError};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// One resolved package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resolved {
    /// apt's name, possibly arch-qualified (`libc6:arm64`).
    pub apt_name: String,
    /// Plain package name.
    pub name: String,
    pub version: String,
}

impl Resolved {
    /// `name=version`, the lock-file line.
    pub fn lock_line(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

/// The resolution result: rootfs packages and the kernel package.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub packages: Vec<Resolved>,
    pub kernel: Resolved,
}

fn apt_options(cache_root: &Path) -> Vec<String> {
    let dir = cache_root.join("apt");
    vec![
        "-o".into(),
        format!("Dir::Cache={}", dir.display()),
        "-o".into(),
        "Dir::Cache::pkgcache=pkgcache.bin".into(),
        "-o".into(),
        "Dir::Cache::srcpkgcache=srcpkgcache.bin".into(),
        "-o".into(),
        "APT::Sandbox::User=root".into(),
        // Resolve as for an empty system: what the host has installed (and
        // pinned by being installed) must not leak into the guest.
        "-o".into(),
        format!("Dir::State::status={}", dir.join("status").display()),
    ]
}

/// One dependency group: alternatives, each with the providers apt lists.
type Group = Vec<(String, Vec<String>)>;

/// Parses `apt-cache depends` output into package → dependency groups.
fn parse_depends(text: &str) -> BTreeMap<String, Vec<Group>> {
    let mut map: BTreeMap<String, Vec<Group>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut continuing = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            let name = line.trim().to_string();
            map.entry(name.clone()).or_default();
            current = Some(name);
            continuing = false;
            continue;
        }
        let Some(pkg) = current.as_ref() else {
            continue;
        };
        let groups = map.entry(pkg.clone()).or_default();
        if line.starts_with("    ") {
            // A provider of the previous alternative.
            if let Some((_, providers)) = groups.last_mut().and_then(|g| g.last_mut()) {
                providers.push(line.trim().to_string());
            }
            continue;
        }
        let alt = line.as_bytes().get(1) == Some(&b'|');
        let Some((kind, dep)) = line.trim().trim_start_matches('|').split_once(':') else {
            continue;
        };
        if kind != "Depends" && kind != "PreDepends" {
            continue;
        }
        let dep = dep.trim().to_string();
        if continuing {
            if let Some(g) = groups.last_mut() {
                g.push((dep, Vec::new()));
            }
        } else {
            groups.push(vec![(dep, Vec::new())]);
        }
        continuing = alt;
    }
    map
}

fn plain_name(apt_name: &str) -> &str {
    apt_name.split(':').next().unwrap_or(apt_name)
}

fn is_virtual(n: &str) -> bool {
    n.starts_with('<')
}

/// Picks the package that satisfies a group for `arch`: the first real
/// alternative, preferring one built for the target arch; virtual entries are
/// replaced by their providers.
fn choose(group: &Group, arch: &str, native: bool, known: &BTreeMap<String, Vec<Group>>) -> Option<String> {
    let mut candidates: Vec<String> = Vec::new();
    for (dep, providers) in group {
        if !is_virtual(dep) {
            candidates.push(dep.clone());
        }
        candidates.extend(providers.iter().filter(|p| !is_virtual(p)).cloned());
    }
    let suffix = format!(":{arch}");
    let fits = |c: &String| {
        if native {
            !c.contains(':')
        } else {
            c.ends_with(&suffix)
        }
    };
    // A plain name on a foreign arch may be the native package: prefer the
    // arch-qualified one when apt knows it (plain stays for Architecture: all).
    if !native {
        for c in candidates.iter_mut() {
            let qualified = format!("{c}{suffix}");
            if !c.contains(':') && known.contains_key(&qualified) {
                *c = qualified;
            }
        }
    }
    candidates
        .iter()
        .find(|c| fits(c) && known.contains_key(*c))
        .or_else(|| candidates.iter().find(|c| known.contains_key(*c)))
        .or_else(|| candidates.first())
        .cloned()
}

/// Resolves the closure of the recipe packages and the kernel for `arch`.
pub fn resolve(
    cache_root: &Path,
    arch: Arch,
    packages: &[String],
    exclude: &[String],
    kernel: &str,
) -> Result<Resolution, ImageError> {
    // Recipes that extend one another share their package set: resolve each
    // set once per process (apt's answer cannot change under us here).
    type Memo = std::sync::Mutex<std::collections::HashMap<String, Resolution>>;
    static MEMO: std::sync::OnceLock<Memo> = std::sync::OnceLock::new();
    let memo_key = format!("{}|{arch:?}|{packages:?}|{exclude:?}|{kernel}", cache_root.display());
    let memo = MEMO.get_or_init(Default::default);
    if let Some(r) = memo.lock().unwrap().get(&memo_key) {
        return Ok(r.clone());
    }
    // Parallel builds share the private apt cache: one apt at a time.
    let r = {
        std::fs::create_dir_all(cache_root.join("apt")).map_err(ImageError::io(cache_root.join("apt")))?;
        let _lock = crate::cache::lock(&cache_root.join("apt/.devlab.lock"))?;
        resolve_uncached(cache_root, arch, packages, exclude, kernel)?
    };
    memo.lock().unwrap().insert(memo_key, r.clone());
    Ok(r)
}

fn resolve_uncached(
    cache_root: &Path,
    arch: Arch,
    packages: &[String],
    exclude: &[String],
    kernel: &str,
) -> Result<Resolution, ImageError> {
    let deb = arch.debian();
    let native = host_arch()? == deb;
    let qualify = |p: &str| {
        if native || p.contains(':') {
            p.to_string()
        } else {
            format!("{p}:{deb}")
        }
    };
    std::fs::create_dir_all(cache_root.join("apt/archives/partial")).map_err(ImageError::io(cache_root.join("apt")))?;
    let status = cache_root.join("apt/status");
    if !status.exists() {
        std::fs::write(&status, b"").map_err(ImageError::io(&status))?;
    }
    let roots: Vec<String> = packages.iter().map(|p| qualify(p)).collect();
    let kernel_root = qualify(kernel);
    let out = Tool::new("apt-cache")?
        .args(apt_options(cache_root))
        .args([
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ])
        .args(&roots)
        // `Architecture: all` packages are unknown as `name:<foreign arch>`.
        .args(packages.iter().filter(|p| !native && !p.contains(':')).map(|p| format!("{p}:all")))
        .arg(&kernel_root)
        .run()?;
    let map = parse_depends(&String::from_utf8_lossy(&out));
    // The kernel: a meta package points at the real image; only that one.
    let kernel_real = map
        .get(&kernel_root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|(d, _)| d.clone())
        .find(|d| plain_name(d).starts_with("linux-image-") && !is_virtual(d))
        .unwrap_or_else(|| kernel_root.clone());

    let excluded: BTreeSet<&str> = exclude.iter().map(|s| plain_name(s)).collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = roots
        .iter()
        .map(|r| match r.split_once(':') {
            Some((plain, _)) if !map.contains_key(r) && map.contains_key(plain) => plain.to_string(),
            _ => r.clone(),
        })
        .collect();
    while let Some(p) = queue.pop_front() {
        if excluded.contains(plain_name(&p)) || !seen.insert(p.clone()) {
            continue;
        }
        let Some(groups) = map.get(&p) else {
            return Err(ImageError::Resolve { arch: deb.into(), message: format!("apt does not know {p}") });
        };
        for g in groups {
            if let Some(c) = choose(g, deb, native, &map) {
                queue.push_back(c);
            }
        }
    }
    let mut names: Vec<String> = seen.into_iter().collect();
    names.push(kernel_real.clone());
    let versions = policy(cache_root, &names)?;
    let mut resolved = Vec::new();
    for n in &names {
        let Some(v) = versions.get(n) else {
            return Err(ImageError::Resolve { arch: deb.into(), message: format!("no installable candidate for {n}") });
        };
        resolved.push(Resolved { apt_name: n.clone(), name: plain_name(n).to_string(), version: v.clone() });
    }
    let kernel = resolved.pop().expect("kernel pushed last");
    resolved.sort();
    Ok(Resolution { packages: resolved, kernel })
}

/// Candidate versions from `apt-cache policy`, keyed by the queried name.
fn policy(cache_root: &Path, names: &[String]) -> Result<BTreeMap<String, String>, ImageError> {
    let out = Tool::new("apt-cache")?.args(apt_options(cache_root)).arg("policy").args(names).run()?;
    let text = String::from_utf8_lossy(&out);
    let mut map = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            current = Some(line.trim_end_matches(':').to_string());
        } else if let Some(v) = line.trim().strip_prefix("Candidate:") {
            let v = v.trim();
            if let (Some(c), false) = (current.take(), v == "(none)") {
                map.insert(c, v.to_string());
            }
        }
    }
    // apt prints native packages without their arch: accept both spellings.
    let host = host_arch()?;
    for n in names {
        if !map.contains_key(n) {
            if let Some(stripped) = n.strip_suffix(&format!(":{host}")) {
                if let Some(v) = map.get(stripped).cloned() {
                    map.insert(n.clone(), v);
                }
            }
        }
    }
    Ok(map)
}

fn host_arch() -> Result<String, ImageError> {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(h) = HOST.get() {
        return Ok(h.clone());
    }
    let out = Tool::new("dpkg")?.arg("--print-architecture").run()?;
    let h = String::from_utf8_lossy(&out).trim().to_string();
    Ok(HOST.get_or_init(|| h).clone())
}

/// The file name `apt-get download` gives a package (epoch colon escaped).
fn deb_file_name(r: &Resolved, arch: &str) -> Vec<String> {
    let v = r.version.replace(':', "%3a");
    vec![format!("{}_{}_{}.deb", r.name, v, arch), format!("{}_{}_all.deb", r.name, v)]
}

/// Whether `version` of `r` can still be had: its `.deb` is in the
/// download folder `dir`, or the apt sources list it (`apt-cache madison`).
pub fn available(cache_root: &Path, dir: &Path, arch: Arch, r: &Resolved, version: &str) -> Result<bool, ImageError> {
    let pinned = Resolved { version: version.to_string(), ..r.clone() };
    if deb_file_name(&pinned, arch.debian()).iter().any(|f| dir.join(f).is_file()) {
        return Ok(true);
    }
    let out = Tool::new("apt-cache")?.args(apt_options(cache_root)).arg("madison").arg(&r.apt_name).run()?;
    Ok(String::from_utf8_lossy(&out).lines().any(|l| l.split('|').nth(1).is_some_and(|v| v.trim() == version)))
}

/// Makes sure every package is in `dir` (downloading the missing ones in one
/// apt call) and returns the .deb paths in the same order.
pub fn download(cache_root: &Path, dir: &Path, arch: Arch, pkgs: &[&Resolved]) -> Result<Vec<PathBuf>, ImageError> {
    std::fs::create_dir_all(dir).map_err(ImageError::io(dir))?;
    let find = |r: &Resolved| deb_file_name(r, arch.debian()).into_iter().map(|f| dir.join(f)).find(|p| p.is_file());
    let missing = || -> Vec<String> {
        pkgs.iter().filter(|r| find(r).is_none()).map(|r| format!("{}={}", r.apt_name, r.version)).collect()
    };
    if !missing().is_empty() {
        // One download at a time into `dir` (apt's partial files would
        // clash); what another build fetched meanwhile is not fetched again.
        let _lock = crate::cache::lock(&dir.join(".devlab.lock"))?;
        let missing = missing();
        if !missing.is_empty() {
            Tool::new("apt-get")?
                .args(apt_options(cache_root))
                .args(["download", "-q"])
                .args(&missing)
                .current_dir(dir)
                .run()?;
        }
    }
    pkgs.iter()
        .map(|r| {
            find(r).ok_or_else(|| ImageError::Resolve {
                arch: arch.debian().into(),
                message: format!("{} {} not in {} after download", r.name, r.version, dir.display()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_alternatives_and_providers() {
        let text = "a:arm64\n  Depends: b:arm64\n |PreDepends: <v:arm64>\n    c\n  PreDepends: d:arm64\n    d\n  Recommends: e\nb:arm64\nd:arm64\n";
        let m = parse_depends(text);
        let g = &m["a:arm64"];
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].len(), 2);
        assert_eq!(g[1][0].1, vec!["c".to_string()]);
        assert_eq!(choose(&g[0], "arm64", false, &m).unwrap(), "b:arm64");
        assert_eq!(choose(&g[1], "arm64", false, &m).unwrap(), "d:arm64");
        assert!(m.contains_key("b:arm64"));
    }
}
