#!/usr/bin/env python3
"""Derive the example's file-system trees from one mmdebstrap base tarball.

mmdebstrap runs once per arch (minutes under qemu-user for arm64); the
product's versions differ only in a few files, so they are made here by
rewriting the tarball instead of bootstrapping three times. No root, no
mounts: ownership, modes, device nodes and xattrs travel inside the tar and
`mke2fs -d file.tar` (e2fsprogs >= 1.47.1) turns each tar into ext4.

One pass over the base writes:
  rootfs-v<N>.tar   for every --version N (the slot contents; --bad N makes
                    version N unbootable: /usr/sbin/init exits, the kernel
                    panics "Attempted to kill init")
  var.tar           the contents of the `var` partition (the base's /var,
                    re-rooted, from the first version) plus the example's
                    data file and /var/lib/rauc
  packages.txt      "name version arch" of every installed package

Usage: mkrootfs.py --base base.tar --overlay DIR --arch ARCH --out DIR
                   --version 1 --version 2 --bad 3 --files DIR --mtime EPOCH
--files holds what build.sh generated: authorized_keys, ssh_host_ed25519_key(.pub),
keyring.pem, root-password-hash, data.txt.
"""

import argparse
import io
import os
import sys
import tarfile

# Units a test device does not need. Masked (a link to /dev/null), not
# disabled, so a package's preset or a first-boot preset cannot bring them back.
MASKED_UNITS = [
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "man-db.timer",
    # First boot must never wait for answers on the console.
    "systemd-firstboot.service",
]

# Our own units and the target that pulls them in (what `systemctl enable` would link).
ENABLED_UNITS = [("example-health.service", "multi-user.target")]

BAD_INIT = b"""#!/bin/sh
# example-debian-rauc, bundle-bad: this version is broken ON PURPOSE.
# PID 1 exits, the kernel panics ("Attempted to kill init"), panic=5 resets
# the board, and U-Boot's boot counter for this slot runs down until it
# falls back to the other slot.
echo "example-bad-init: version @VERSION@ is broken on purpose, exiting PID 1"
exit 1
"""


def norm(name):
    """Tar member name without the leading './' (root itself is '')."""
    if name in (".", "./"):
        return ""
    if name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def member(name, kind=tarfile.REGTYPE, mode=0o644, mtime=0, size=0, linkname=""):
    ti = tarfile.TarInfo("./" + name if name else ".")
    ti.type = kind
    ti.mode = mode
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mtime = mtime
    ti.size = size
    ti.linkname = linkname
    return ti


class Tree:
    """One output tarball plus the names it already holds."""

    def __init__(self, path, mtime):
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)
        self.names = set()
        self.mtime = mtime

    def add(self, ti, data=None):
        n = norm(ti.name)
        if n in self.names:
            sys.exit(f"mkrootfs: {n} would be in the tarball twice")
        self.names.add(n)
        self.tar.addfile(ti, io.BytesIO(data) if data is not None else None)

    def ensure_dir(self, path, mode=0o755):
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.names:
                self.add(member(d, tarfile.DIRTYPE, mode, self.mtime))

    def file(self, path, data, mode=0o644):
        self.ensure_dir(os.path.dirname(path))
        self.add(member(path, tarfile.REGTYPE, mode, self.mtime, len(data)), data)

    def symlink(self, path, target):
        self.ensure_dir(os.path.dirname(path))
        self.add(member(path, tarfile.SYMTYPE, 0o777, self.mtime, linkname=target))

    def close(self):
        self.tar.close()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def overlay_files(overlay, arch):
    """{path in rootfs: (bytes, mode)} from the overlay dir; *.in are templates."""
    files = {}
    for dirpath, _, names in os.walk(overlay):
        for n in names:
            src = os.path.join(dirpath, n)
            rel = os.path.relpath(src, overlay)
            data = read(src)
            if rel.endswith(".in"):
                rel = rel[:-3]
                data = data.replace(b"@ARCH@", arch.encode())
            mode = 0o755 if os.stat(src).st_mode & 0o111 else 0o644
            files[rel] = (data, mode)
    return files


def os_release(base, version):
    lines = [l for l in base.decode().splitlines() if not l.startswith(("IMAGE_ID=", "IMAGE_VERSION="))]
    lines += ["IMAGE_ID=example-debian-rauc", f"IMAGE_VERSION={version}"]
    return ("\n".join(lines) + "\n").encode()


def shadow(base, root_hash):
    out = []
    for line in base.decode().splitlines():
        f = line.split(":")
        if f[0] == "root":
            f[1] = root_hash
        out.append(":".join(f))
    return ("\n".join(out) + "\n").encode()


def dpkg_packages(status):
    pkgs, cur = [], {}
    for line in status.decode().splitlines() + [""]:
        if not line:
            if cur.get("Status", "").endswith(" installed"):
                pkgs.append(f"{cur['Package']} {cur['Version']} {cur.get('Architecture', '')}")
            cur = {}
        elif not line.startswith(" ") and ":" in line:
            k, v = line.split(":", 1)
            cur[k] = v.strip()
    return sorted(pkgs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--overlay", required=True)
    ap.add_argument("--files", required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--version", action="append", default=[])
    ap.add_argument("--bad", action="append", default=[])
    ap.add_argument("--mtime", type=int, required=True)
    a = ap.parse_args()

    versions = [(v, False) for v in a.version] + [(v, True) for v in a.bad]
    ov = overlay_files(a.overlay, a.arch)
    gen = lambda n: read(os.path.join(a.files, n))
    # Files every version gets on top of the overlay.
    common = dict(ov)
    common["root/.ssh/authorized_keys"] = (gen("authorized_keys"), 0o600)
    common["etc/ssh/ssh_host_ed25519_key"] = (gen("ssh_host_ed25519_key"), 0o600)
    common["etc/ssh/ssh_host_ed25519_key.pub"] = (gen("ssh_host_ed25519_key.pub"), 0o644)
    common["etc/rauc/keyring.pem"] = (gen("keyring.pem"), 0o644)
    root_hash = gen("root-password-hash").decode().strip()
    # Host keys mmdebstrap's openssh-server postinst generated: dropped
    # (random per build, and sshd is configured for the one ed25519 key).
    drop_prefix = "etc/ssh/ssh_host_"

    # Paths written after the base pass: the base's own entries there are skipped.
    generated = set(common) | {"etc/example-release"}
    generated |= {f"etc/systemd/system/{u}" for u in MASKED_UNITS}
    generated |= {f"etc/systemd/system/{t}.wants/{u}" for u, t in ENABLED_UNITS}

    trees = {v: Tree(os.path.join(a.out, f"rootfs-v{v}.tar"), a.mtime) for v, _ in versions}
    var = Tree(os.path.join(a.out, "var.tar"), a.mtime)
    var.add(member("", tarfile.DIRTYPE, 0o755, a.mtime))
    kernels, initrds, status = [], [], None

    base = tarfile.open(a.base, "r:*")
    for ti in base:
        name = norm(ti.name)
        data = base.extractfile(ti).read() if ti.isreg() else None
        if name == "var/lib/dpkg/status":
            status = data
        if name.startswith("boot/vmlinuz-"):
            kernels.append(name)
        if name.startswith("boot/initrd.img-"):
            initrds.append(name)
        # var partition: the base's /var, re-rooted at the partition's root.
        if name.startswith("var/"):
            vi = tarfile.TarInfo("./" + name[4:])
            for attr in ("type", "mode", "uid", "gid", "uname", "gname", "mtime", "size", "linkname", "devmajor", "devminor"):
                setattr(vi, attr, getattr(ti, attr))
            # xattrs etc. travel; the old path must not (a pax header wins over the name).
            vi.pax_headers = {k: v for k, v in ti.pax_headers.items() if k not in ("path", "linkpath")}
            if ti.islnk() and ti.linkname.lstrip("./").startswith("var/"):
                vi.linkname = "./" + ti.linkname.lstrip("./")[4:]
            var.add(vi, data)
        if name.startswith(drop_prefix) or name in generated:
            continue
        for v, bad in versions:
            t = trees[v]
            if name in ("usr/lib/os-release", "etc/shadow"):
                d = os_release(data, v) if name == "usr/lib/os-release" else shadow(data, root_hash)
                ti2 = tarfile.TarInfo(ti.name)
                for attr in ("type", "mode", "uid", "gid", "uname", "gname", "mtime"):
                    setattr(ti2, attr, getattr(ti, attr))
                ti2.size = len(d)
                t.add(ti2, d)
            elif bad and name == "usr/sbin/init":
                continue  # replaced below
            else:
                t.add(ti, data)
    base.close()

    if status is None:
        sys.exit("mkrootfs: no var/lib/dpkg/status in the base tarball")
    for want, found in (("boot/vmlinuz", kernels), ("boot/initrd.img", initrds)):
        if len(found) != 1:
            sys.exit(f"mkrootfs: expected one {want}-* in the base, found {found}")

    for v, bad in versions:
        t = trees[v]
        for path, (data, mode) in sorted(common.items()):
            if path == "root/.ssh/authorized_keys":
                t.ensure_dir("root/.ssh", 0o700)
            t.file(path, data, mode)
        t.file("etc/example-release", f"example-debian-rauc {a.arch} version {v}\n".encode())
        t.ensure_dir("boot/firmware")
        # Stable names for boot.scr (Debian's link_in_boot makes them too; if
        # it did, the base's links were copied above and these are skipped).
        if "boot/vmlinuz" not in t.names:
            t.symlink("boot/vmlinuz", os.path.basename(kernels[0]))
        if "boot/initrd.img" not in t.names:
            t.symlink("boot/initrd.img", os.path.basename(initrds[0]))
        for unit in MASKED_UNITS:
            t.symlink(f"etc/systemd/system/{unit}", "/dev/null")
        for unit, target in ENABLED_UNITS:
            t.symlink(f"etc/systemd/system/{target}.wants/{unit}", f"/etc/systemd/system/{unit}")
        if bad:
            t.file("usr/sbin/init", BAD_INIT.replace(b"@VERSION@", v.encode()), 0o755)
        t.close()

    var.file("lib/example/data.txt", gen("data.txt"))
    var.ensure_dir("lib/rauc")
    var.close()

    with open(os.path.join(a.out, "packages.txt"), "w") as f:
        f.write("\n".join(dpkg_packages(status)) + "\n")


if __name__ == "__main__":
    main()
