//! The root filesystem as an in-memory tree merged from package data tars
//! (later entries win), with merged-/usr applied, everything owned by root,
//! generated files and the fixture overlay added, written out as ONE tar for
//! `mke2fs -d`. Must not extract anything to the host filesystem or need root.
use crate::tools::{self, Tool};
use crate::ImageError;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// One node of the tree.
#[derive(Debug, Clone)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// Paths (relative, no leading `/`) to nodes, sorted so parents come first.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    mtime: u64,
}

const MERGED: [&str; 6] = ["bin", "sbin", "lib", "lib64", "lib32", "libx32"];

/// Normalises a tar path: strips `./` and `/`, applies merged-/usr.
pub fn normalize(path: &str) -> Option<String> {
    let p = path.trim_start_matches("./").trim_start_matches('/');
    let p = p.trim_end_matches('/');
    if p.is_empty() || p == "." {
        return None;
    }
    let first = p.split('/').next().unwrap_or(p);
    if MERGED.contains(&first) {
        Some(format!("usr/{p}"))
    } else {
        Some(p.to_string())
    }
}

impl Tree {
    pub fn new(mtime: u64) -> Tree {
        Tree { nodes: BTreeMap::new(), mtime }
    }

    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn insert(&mut self, path: &str, node: Node) {
        if let Some(p) = normalize(path) {
            self.nodes.insert(p, node);
        }
    }

    pub fn file(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
        self.insert(path, Node::File { mode, data: data.into() });
    }

    pub fn dir(&mut self, path: &str, mode: u32) {
        self.insert(path, Node::Dir { mode });
    }

    /// A symlink stored exactly at `path` (no merged-/usr mapping: used for
    /// the `bin → usr/bin` links themselves).
    pub fn raw_symlink(&mut self, path: &str, target: &str) {
        self.nodes.insert(path.to_string(), Node::Symlink { target: target.to_string() });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Node::Symlink { target: target.to_string() });
    }

    /// Moves `from` and everything below it to `to` (e.g. `etc` to
    /// `usr/etc` for an OSTree commit); what was at `to` is replaced.
    pub fn move_prefix(&mut self, from: &str, to: &str) {
        let below = |p: &str| p == from || (p.starts_with(from) && p.as_bytes().get(from.len()) == Some(&b'/'));
        let moved: Vec<String> = self.nodes.keys().filter(|p| below(p)).cloned().collect();
        for p in moved {
            let node = self.nodes.remove(&p).expect("listed");
            self.nodes.insert(format!("{to}{}", &p[from.len()..]), node);
        }
    }

    /// Drops every path equal to or below one of `prefixes`.
    pub fn strip(&mut self, prefixes: &[String]) {
        self.nodes.retain(|p, _| {
            !prefixes.iter().any(|x| {
                let x = x.trim_matches('/');
                p == x || (p.starts_with(x) && p.as_bytes().get(x.len()) == Some(&b'/'))
            })
        });
    }

    /// Merges the data tar of one .deb (via `dpkg-deb --fsys-tarfile`).
    pub fn merge_deb(&mut self, deb: &Path) -> Result<(), ImageError> {
        let (mut child, shown) = Tool::new("dpkg-deb")?.arg("--fsys-tarfile").arg(deb).spawn_piped()?;
        let stdout = child.stdout.take().expect("piped");
        let res = self.merge_tar(stdout, deb);
        tools::wait_piped(child, &shown)?;
        res
    }

    fn merge_tar(&mut self, reader: impl Read, origin: &Path) -> Result<(), ImageError> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(ImageError::io(origin))?;
        for entry in entries {
            let mut entry = entry.map_err(ImageError::io(origin))?;
            let path = entry.path().map_err(ImageError::io(origin))?;
            let Some(path) = normalize(&path.to_string_lossy()) else {
                continue;
            };
            let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
            let kind = entry.header().entry_type();
            let node = if kind.is_dir() {
                Node::Dir { mode }
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()
                    .map_err(ImageError::io(origin))?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Node::Symlink { target }
            } else if kind.is_hard_link() {
                let target =
                    entry.link_name().map_err(ImageError::io(origin))?.and_then(|t| normalize(&t.to_string_lossy()));
                match target.and_then(|t| self.nodes.get(&t).cloned()) {
                    Some(n) => n,
                    None => continue,
                }
            } else if kind.is_file() {
                let mut data = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut data).map_err(ImageError::io(origin))?;
                Node::File { mode, data }
            } else {
                continue;
            };
            self.nodes.insert(path, node);
        }
        Ok(())
    }

    /// Adds the files below `dir` (fixture overlay), keeping modes.
    pub fn overlay(&mut self, dir: &Path) -> Result<(), ImageError> {
        for (rel, path) in crate::cache::walk(dir)? {
            let meta = std::fs::symlink_metadata(&path).map_err(ImageError::io(&path))?;
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&path).map_err(ImageError::io(&path))?;
                self.symlink(&rel, &t.to_string_lossy());
            } else if meta.is_dir() {
                self.dir(&rel, mode);
            } else {
                let data = std::fs::read(&path).map_err(ImageError::io(&path))?;
                self.file(&rel, mode, data);
            }
        }
        Ok(())
    }

    /// Writes the tree as one tar (parents first, all root-owned).
    pub fn write_tar(&self, out: &Path) -> Result<(), ImageError> {
        let file = std::fs::File::create(out).map_err(ImageError::io(out))?;
        let mut b = tar::Builder::new(std::io::BufWriter::new(file));
        let mut done_dirs: std::collections::BTreeSet<String> = Default::default();
        for (path, node) in &self.nodes {
            // Missing parents become 0755 directories.
            let mut parent = String::new();
            let comps: Vec<&str> = path.split('/').collect();
            for c in &comps[..comps.len() - 1] {
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(c);
                if !done_dirs.contains(&parent) {
                    if !matches!(self.nodes.get(&parent), Some(Node::Dir { .. }) | None) {
                        continue;
                    }
                    let mode = match self.nodes.get(&parent) {
                        Some(Node::Dir { mode }) => *mode,
                        _ => 0o755,
                    };
                    self.append(&mut b, &parent, &Node::Dir { mode }, out)?;
                    done_dirs.insert(parent.clone());
                }
            }
            if matches!(node, Node::Dir { .. }) {
                if done_dirs.insert(path.clone()) {
                    self.append(&mut b, path, node, out)?;
                }
            } else {
                self.append(&mut b, path, node, out)?;
            }
        }
        b.into_inner().and_then(|mut w| std::io::Write::flush(&mut w)).map_err(ImageError::io(out))
    }

    fn append(
        &self,
        b: &mut tar::Builder<impl std::io::Write>,
        path: &str,
        node: &Node,
        out: &Path,
    ) -> Result<(), ImageError> {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        let _ = h.set_username("root");
        let _ = h.set_groupname("root");
        let res = match node {
            Node::Dir { mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())
            }
            Node::File { mode, data } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())
            }
            Node::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)
            }
        };
        res.map_err(ImageError::io(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_usr_mapping() {
        assert_eq!(normalize("./bin/sh").unwrap(), "usr/bin/sh");
        assert_eq!(normalize("./lib/x/").unwrap(), "usr/lib/x");
        assert_eq!(normalize("./usr/bin/a").unwrap(), "usr/bin/a");
        assert_eq!(normalize("./etc/x").unwrap(), "etc/x");
        assert!(normalize("./").is_none());
    }

    #[test]
    fn strip_and_tar() {
        let mut t = Tree::new(0);
        t.file("usr/share/doc/a/x", 0o644, "x");
        t.file("usr/share/docs", 0o644, "y");
        t.file("bin/sh", 0o755, "z");
        t.raw_symlink("bin", "usr/bin");
        t.strip(&["usr/share/doc".into()]);
        assert!(!t.contains("usr/share/doc/a/x"));
        assert!(t.contains("usr/share/docs"));
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.tar");
        t.write_tar(&out).unwrap();
        let mut a = tar::Archive::new(std::fs::File::open(&out).unwrap());
        let names: Vec<String> =
            a.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["bin", "usr/", "usr/bin/", "usr/bin/sh", "usr/share/", "usr/share/docs"]);
    }
}
