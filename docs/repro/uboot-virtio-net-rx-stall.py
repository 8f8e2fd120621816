#!/usr/bin/env python3
# Reproduces the U-Boot virtio-net receive stall that made devlab's U-Boot
# PXE board use an e1000 (ARCHITECTURE.md, "aarch64 network boot").
#
#   python3 docs/repro/uboot-virtio-net-rx-stall.py 40                 # stalls
#   python3 docs/repro/uboot-virtio-net-rx-stall.py 31                 # does not
#   python3 docs/repro/uboot-virtio-net-rx-stall.py 40 e1000           # does not
#
# Debian bookworm's U-Boot 2023.01 (u-boot-qemu, qemu_arm64) at its prompt,
# NIC on a UDP socket netdev; this script answers ARP and ICMP for 10.0.0.1.
# `ping` works; N broadcast frames are sent while U-Boot sits at the prompt
# (not polling); `ping` again. U-Boot's virtio_net_free_pkt() puts each
# received buffer back on the RX ring without virtqueue_kick(), and QEMU
# only looks at an exhausted RX ring again when kicked: past 32 frames (the
# ring size) the NIC receives nothing more, until something makes QEMU
# flush its queue (here HMP `stop` + `cont`). Measured 2026-11-24 with
# QEMU from bookworm-backports: 31 frames alive, 33 frames dead.
# The sleeps are this throwaway script's; devlab itself does not poll.
import socket, struct, subprocess, sys, threading, time, os
N = int(sys.argv[1]); NIC = sys.argv[2] if len(sys.argv) > 2 else "virtio-net-device"
MYMAC = bytes.fromhex("020000000001"); MYIP = socket.inet_aton("10.0.0.1")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 5555))
QEMU_AT = ("127.0.0.1", 5556)
mon = "/tmp/uboot-rx-stall-mon.sock"
if os.path.exists(mon): os.unlink(mon)
q = subprocess.Popen(["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-m", "256", "-nodefaults", "-display", "none",
    "-bios", "/usr/lib/u-boot/qemu_arm64/u-boot.bin", "-serial", "stdio", "-monitor", f"unix:{mon},server=on,wait=off",
    "-netdev", "socket,id=n0,udp=127.0.0.1:5555,localaddr=127.0.0.1:5556", "-device", f"{NIC},netdev=n0,mac=52:54:00:12:34:56"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
out = bytearray(); lock = threading.Lock()
def rd():
    while True:
        b = q.stdout.read1(4096)
        if not b: return
        with lock: out.extend(b)
threading.Thread(target=rd, daemon=True).start()
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack(f"!{len(b)//2}H", b)); t = (t >> 16) + (t & 0xffff); t += t >> 16
    return (~t) & 0xffff
def net():
    while True:
        f, _ = s.recvfrom(2048)
        dst, src, et = f[:6], f[6:12], struct.unpack("!H", f[12:14])[0]
        if et == 0x0806 and f[38:42] == MYIP:  # ARP request for us
            spa = f[28:32]
            rep = src + MYMAC + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + MYMAC + MYIP + src + spa
            s.sendto(rep, QEMU_AT)
        elif et == 0x0800 and f[23] == 1 and f[34] == 8:  # ICMP echo request
            ip = bytearray(f[14:34]); ip[12:16], ip[16:20] = f[30:34], f[26:30]; ip[10:12] = b"\0\0"
            ip[10:12] = struct.pack("!H", csum(bytes(ip)))
            icmp = bytearray(f[34:]); icmp[0] = 0; icmp[2:4] = b"\0\0"; icmp[2:4] = struct.pack("!H", csum(bytes(icmp)))
            s.sendto(src + MYMAC + b"\x08\x00" + bytes(ip) + bytes(icmp), QEMU_AT)
threading.Thread(target=net, daemon=True).start()
def wait(pat, t=30):
    end = time.time() + t
    while time.time() < end:
        with lock:
            if pat.encode() in out:
                i = out.index(pat.encode()) + len(pat); txt = bytes(out[:i]).decode(errors="replace"); del out[:i]; return txt
        time.sleep(0.05)
    raise SystemExit(f"timeout waiting for {pat!r}; got {bytes(out[-500:])!r}")
def cmd(c):
    q.stdin.write(c.encode() + b"\n"); q.stdin.flush(); return wait("=> ", 60)
def ping():
    r = cmd("ping 10.0.0.1")
    return "alive" if "is alive" in r else "NOT alive"
def hmp(c):
    m = socket.socket(socket.AF_UNIX); m.connect(mon); m.sendall(c.encode() + b"\n"); time.sleep(0.3); m.close()
try:
    wait("Hit any key"); q.stdin.write(b"\n"); q.stdin.flush(); wait("=> ")
    cmd("setenv ipaddr 10.0.0.2; setenv netmask 255.255.255.0; setenv serverip 10.0.0.1")
    print(NIC, "ping before:", ping())
    for i in range(N):
        s.sendto(b"\xff" * 6 + MYMAC + b"\x88\xb5" + bytes(46), QEMU_AT)
    time.sleep(0.5)
    print(NIC, f"ping after {N} broadcast frames at the prompt:", ping())
    print(NIC, "ping again:", ping())
    hmp("stop"); hmp("cont")
    print(NIC, "ping after HMP stop+cont:", ping())
finally:
    q.kill()
    q.wait()
