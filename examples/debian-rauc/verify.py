#!/usr/bin/env python3
"""Boot example-debian-rauc with plain QEMU and walk through its update story.

    examples/debian-rauc/verify.py x86_64|aarch64 [--memory MiB] [--keep-log FILE]
                                  [--boot-only]

Needs what build.sh made (examples/debian-rauc/build). Never writes the
built image: it unpacks disk.img.zst into a temp dir and boots a qcow2
overlay of it, on the same QEMU machines as devlab's boards (qemu-x86_64,
qemu-aarch64), with U-Boot left to autoboot (no key pressed).

Steps, each waited for on the console or over SSH (no fixed sleeps):
 1. power on -> U-Boot's distro boot runs boot.scr -> slot A -> login prompt
 2. serial login root/kT4-serial-9vQ; SSH login with build/id_ed25519
 3. `rauc status`: booted A
 4. `rauc install http://10.0.2.2:PORT/bundle-v2.raucb` (python3 -m http.server)
 5. reboot -> slot B, IMAGE_VERSION=2, marked good, /var/lib/example/data.txt intact
 6. install bundle-bad -> reboot -> kernel panics 3 times -> U-Boot falls back to B
Prints a timeline (seconds since QEMU was spawned) and the measured times.
"""

import argparse
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

MACHINES = {
    "x86_64": ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-nodefaults",
               "-cpu", "qemu64,+rdrand", "-smp", "1",
               "-bios", "/usr/lib/u-boot/qemu-x86/u-boot.rom"],
    "aarch64": ["qemu-system-aarch64", "-accel", "tcg", "-machine", "virt",
                "-cpu", "cortex-a57", "-smp", "1",
                "-bios", "/usr/lib/u-boot/qemu_arm64/u-boot.bin"],
}

SHELL_PROMPT = "root@example-device:~# "


class Console:
    """QEMU's serial port on stdio, read by a thread into one growing text."""

    def __init__(self, cmd, log):
        self.t0 = time.monotonic()
        self.text = ""
        self.cond = threading.Condition()
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.pos = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            b = os.read(self.proc.stdout.fileno(), 65536)
            if not b:
                break
            s = b.decode("utf-8", "replace")
            self.log.write(s)
            self.log.flush()
            with self.cond:
                self.text += s
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def now(self):
        return time.monotonic() - self.t0

    def expect(self, pattern, timeout=300, what=None):
        """Wait for `pattern` after the last match; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = rx.search(self.text, self.pos)
                if m:
                    self.pos = m.end()
                    return m
                if self.proc.poll() is not None and not self.reader.is_alive():
                    raise SystemExit(f"QEMU exited while waiting for {what or pattern!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = self.text[-2000:]
                    raise SystemExit(f"timeout waiting for {what or pattern!r}; console tail:\n{tail}")
                self.cond.wait(min(left, 1.0))

    def send(self, s):
        self.proc.stdin.write(s.encode())
        self.proc.stdin.flush()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


class Verify:
    def __init__(self, arch, memory, log):
        self.arch = arch
        self.build = os.path.join(HERE, "build")
        self.art = os.path.join(self.build, arch)
        self.key = os.path.join(self.build, "id_ed25519")
        self.memory = memory
        self.log = log
        self.times = {}
        self.tmp = tempfile.mkdtemp(prefix=f"debian-rauc-verify-{arch}-")
        self.httpd = None
        self.con = None

    # ---- helpers
    def mark(self, what):
        t = self.con.now()
        print(f"  {t:7.1f} s  {what}", flush=True)
        return t

    def ssh(self, command, timeout=600, check=True):
        cmd = ["ssh", "-i", self.key, "-p", str(self.ssh_port),
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
               "root@127.0.0.1", command]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise SystemExit(f"ssh {command!r} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def wait_ssh(self, timeout=120):
        """First successful `ssh true`; slirp accepts TCP before sshd listens,
        so each try is bounded and retried at once (no sleeping)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.ssh("true", timeout=8, check=False).returncode == 0:
                    return self.mark("ssh ready")
            except subprocess.TimeoutExpired:
                pass
        raise SystemExit("ssh never became ready")

    def boot_to_login(self, slot, version, label):
        """From power-on/reset: boot.scr picks `slot`, the health unit marks it
        good, the login prompt shows. Returns (t_slot, t_login, t_good)."""
        c = self.con
        m = c.expect(r"example-boot: slot ([AB]) tries left (\d)", what="boot.scr slot choice")
        if m.group(1) != slot:
            raise SystemExit(f"{label}: boot.scr chose slot {m.group(1)}, expected {slot}")
        t_slot = self.mark(f"{label}: example-boot: slot {slot} tries left {m.group(2)}")
        # The health line may come before or after the login prompt.
        i0 = c.pos
        c.expect(r"example-device login: ", what="login prompt")
        t_login = self.mark(f"{label}: login prompt")
        end_login = c.pos
        c.pos = i0
        m = c.expect(r"example-health: (good slot (\w) version (\S+)|NOT marking.*)", what="health line")
        if not m.group(0).startswith("example-health: good") or m.group(2) != slot or m.group(3) != version:
            raise SystemExit(f"{label}: unexpected health line {m.group(0)!r}")
        t_good = self.mark(f"{label}: {m.group(0).strip()}")
        c.pos = max(c.pos, end_login)
        return t_slot, t_login, t_good

    # ---- the story
    def run(self, boot_only=False):
        disk = os.path.join(self.tmp, "disk.img")
        ov = os.path.join(self.tmp, "ov.qcow2")
        subprocess.run(["zstd", "-q", "-d", os.path.join(self.art, "disk.img.zst"), "-o", disk], check=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", disk, ov], check=True)

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), lambda *a, **k: Quiet(*a, directory=self.art, **k))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        http_port = self.httpd.server_address[1]
        self.ssh_port = free_port()

        cmd = MACHINES[self.arch] + [
            "-m", str(self.memory), "-display", "none", "-serial", "stdio",
            "-drive", f"if=none,id=d0,file={ov},format=qcow2",
            "-device", "virtio-blk-pci,drive=d0",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22",
            "-device", "virtio-net-pci,netdev=n0"]
        print(f"{self.arch}: {' '.join(cmd)}", flush=True)
        self.con = c = Console(cmd, self.log)

        # 1. power on, autoboot (no key pressed)
        c.expect(r"U-Boot 20\d\d", what="U-Boot banner")
        self.mark("U-Boot banner")
        c.expect(r"Found U-Boot script /boot.scr", what="distro boot finding boot.scr")
        self.mark("distro boot found /boot.scr")
        _, t_login, t_good = self.boot_to_login("A", "1", "v1")
        self.times["power-on -> login prompt"] = t_login
        self.times["power-on -> slot good"] = t_good

        # 2. serial login
        c.send("root\n")
        c.expect(r"Password: ", what="password prompt")
        c.send("kT4-serial-9vQ\n")
        c.expect(re.escape(SHELL_PROMPT), what="shell prompt")
        self.mark("serial login ok")
        c.send("cat /proc/cmdline; grep IMAGE_VERSION /etc/os-release\n")
        c.expect(r"IMAGE_VERSION=1", what="IMAGE_VERSION=1 over serial")
        c.expect(re.escape(SHELL_PROMPT))
        t = self.wait_ssh()
        self.times["power-on -> ssh ready"] = t
        if boot_only:
            return

        # 3. rauc status on A
        st = self.ssh("rauc status").stdout
        print(indent(st))
        if "Booted from: rootfs.0 (A)" not in st:
            raise SystemExit("rauc status does not say booted from rootfs.0 (A)")
        print(indent(self.ssh("fw_printenv").stdout))

        # 4. install v2
        t = self.install(http_port, "bundle-v2.raucb")
        self.times["install bundle-v2"] = t
        print(indent(self.ssh("fw_printenv").stdout))

        # 5. reboot into B
        self.reboot()
        t0 = c.now()
        _, t_login, t_good = self.boot_to_login("B", "2", "v2")
        self.times["reboot -> login prompt (v2)"] = t_login - t0
        t = self.wait_ssh()
        self.times["reboot -> ssh ready (v2)"] = t - t0
        self.check_v2("after update")

        # 6. bad bundle into A, reboot, 3 panics, fallback to B
        self.install(http_port, "bundle-bad.raucb")
        self.reboot()
        t0 = c.now()
        for left in ("2", "1", "0"):
            m = c.expect(r"example-boot: slot ([AB]) tries left (\d)", what="boot.scr slot choice")
            if (m.group(1), m.group(2)) != ("A", left):
                raise SystemExit(f"bad image: expected slot A tries left {left}, got {m.group(0)}")
            self.mark(f"bad: {m.group(0)}")
            c.expect(r"example-bad-init: ", what="the bad init")
            c.expect(r"Kernel panic - not syncing: Attempted to kill init", what="kernel panic")
            self.mark("bad: Kernel panic - not syncing: Attempted to kill init")
        _, t_login, t_good = self.boot_to_login("B", "2", "fallback")
        self.times["bad install reboot -> fallback B good"] = t_good - t0
        self.wait_ssh()
        self.check_v2("after fallback")
        st = self.ssh("rauc status").stdout
        print(indent(st))
        print(indent(self.ssh("fw_printenv").stdout))

    def install(self, http_port, bundle):
        url = f"http://10.0.2.2:{http_port}/{bundle}"
        t0 = time.monotonic()
        self.mark(f"rauc install {url}")
        r = self.ssh(f"rauc install {url}", check=False)
        t = time.monotonic() - t0
        print(indent(r.stdout + r.stderr))
        if r.returncode != 0:
            raise SystemExit(f"rauc install {bundle} failed")
        self.mark(f"installed {bundle} in {t:.1f} s")
        return t

    def reboot(self):
        self.mark("reboot")
        # --no-block: queue the reboot job and return before sshd is stopped.
        # (Not `systemd-run --on-active=1`: timers default to AccuracySec=1min
        # and that reboot came 20 s late.)
        self.ssh("systemctl --no-block reboot", check=True)

    def check_v2(self, label):
        out = self.ssh("grep IMAGE_VERSION /etc/os-release; cat /var/lib/example/data.txt;"
                       " cat /proc/cmdline; rauc status --output-format=json").stdout
        print(indent(out))
        if "IMAGE_VERSION=2" not in out or "rauc.slot=B" not in out:
            raise SystemExit(f"{label}: not version 2 on slot B")
        if "must survive updates" not in out:
            raise SystemExit(f"{label}: /var/lib/example/data.txt lost")
        if '"boot_status":"good"' not in out.replace(" ", ""):
            print(f"{label}: NOTE boot_status good not found in rauc json")

    def close(self):
        if self.con:
            self.con.stop()
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def indent(s):
    return "\n".join("      | " + l for l in s.rstrip().splitlines())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("arch", choices=sorted(MACHINES))
    ap.add_argument("--memory", type=int, default=1024)
    ap.add_argument("--keep-log", default=None, help="console log file (default: deleted)")
    ap.add_argument("--boot-only", action="store_true")
    a = ap.parse_args()
    log = a.keep_log or os.path.join(tempfile.gettempdir(), f"debian-rauc-console-{a.arch}-{os.getpid()}.log")
    v = Verify(a.arch, a.memory, log)
    ok = False
    try:
        v.run(a.boot_only)
        ok = True
    finally:
        v.close()
        if not a.keep_log and ok:
            os.unlink(log)
        elif not ok:
            print(f"console log: {log}")
    print(f"{a.arch}: {'PASS' if ok else 'FAIL'}")
    for k, t in v.times.items():
        print(f"  {k}: {t:.1f} s")


if __name__ == "__main__":
    main()
