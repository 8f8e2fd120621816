#!/bin/sh
# Stand-in board power switch: what pdudaemon's localcmdline PDU runs.
#
#   power.sh on|off|status <arch> [OUTLET]
#
# on:     start the board (QEMU, daemonized) if it is not running. Its disk
#         $D/<arch>/disk.img must exist (flash.sh writes it).
# off:    kill QEMU (SIGKILL: a power cut, no shutdown) and wait until it has
#         exited (bounded).
# status: print "on (pid N)" / "off"; exit 0 when on, 3 when off.
# OUTLET is the port number pdudaemon substitutes for %s: logged, unused.
# State dir: ${DEVLAB_STANDIN_DIR:-/tmp/devlab-standin} (lab.sh passes it).
# Every on/off appends a line to $D/<arch>/power.log.
#
# The board's hardware copies devlab's QEMU board profiles
# (harness/boards/qemu-<arch>.toml) so devlab's images boot unchanged, but
# has no QMP or monitor socket, no snapshots: it is reached only through its
# serial console (the pty pair lab.sh made, served by ser2net) and SSH.
set -eu

die() {
    echo "power.sh: $*" >&2
    exit 1
}

{ [ $# -lt 2 ] || [ $# -gt 3 ]; } && {
    echo "usage: power.sh on|off|status <arch> [OUTLET]" >&2
    exit 2
}
CMD=$1
ARCH=$2
OUTLET=${3:-}
D=${DEVLAB_STANDIN_DIR:-/tmp/devlab-standin}
A=$D/$ARCH

case $ARCH in
    x86_64)
        QEMU=qemu-system-x86_64
        MACHINE=pc
        CPU=qemu64,+rdrand
        FIRMWARE=/usr/lib/u-boot/qemu-x86/u-boot.rom
        MAC=52:54:00:de:00:01
        PRODUCT=qemu-x86_64
        SERIAL=DEVLAB-X86-0001
        UUID=6b1e4c2a-0d3f-4a51-9f0e-000000000001
        SSH_PORT=4122
        ;;
    aarch64)
        QEMU=qemu-system-aarch64
        MACHINE=virt
        CPU=cortex-a57
        FIRMWARE=/usr/lib/u-boot/qemu_arm64/u-boot.bin
        MAC=52:54:00:de:00:02
        PRODUCT=qemu-aarch64
        SERIAL=DEVLAB-ARM-0001
        UUID=6b1e4c2a-0d3f-4a51-9f0e-000000000002
        SSH_PORT=4222
        ;;
    *) die "unknown arch '$ARCH' (x86_64 or aarch64)" ;;
esac
MANUFACTURER=devlab
NAME=standin-$ARCH

[ -d "$A" ] || die "no board dir $A (run lab.sh up first)"

log() {
    echo "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ) $*${OUTLET:+ (outlet $OUTLET)}" >>"$A/power.log"
}

# Is PID a live process? (A killed daemon may linger as a zombie until its
# reaper collects it: that counts as gone, its power is off.)
running() { # PID
    _state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
    [ -n "$_state" ] && [ "$_state" != Z ]
}

# The board's QEMU pid, if it runs (the pid file alone may be stale: QEMU
# leaves it behind when killed, and the pid may have been reused since).
board_pid() {
    [ -s "$A/qemu.pid" ] || return 1
    _pid=$(cat "$A/qemu.pid")
    case $_pid in '' | *[!0-9]*) return 1 ;; esac
    tr '\0' ' ' <"/proc/$_pid/cmdline" 2>/dev/null | grep -qF -- "-name $NAME " || return 1
    echo "$_pid"
}

# Accelerator: like devlab, KVM only if it really runs this board's firmware
# (on some hosts /dev/kvm works but x86 U-Boot stalls under it). The probe
# boots the firmware without a disk under KVM and waits up to 3 s for U-Boot's
# autoboot prompt; the answer is cached per host boot in $A/accel.
# STANDIN_ACCEL=tcg|kvm overrides. A guest of another arch gets TCG.
choose_accel() {
    if [ -n "${STANDIN_ACCEL:-}" ]; then
        echo "$STANDIN_ACCEL"
        return
    fi
    if [ "$(uname -m)" != "$ARCH" ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
        echo tcg
        return
    fi
    _boot=$(cat /proc/sys/kernel/random/boot_id)
    if [ -s "$A/accel" ] && [ "$(sed -n 1p "$A/accel")" = "$_boot" ]; then
        sed -n 2p "$A/accel"
        return
    fi
    _out=$A/kvm-probe.out
    : >"$_out"
    "$QEMU" -nodefaults -no-user-config -display none -machine "$MACHINE" -accel kvm \
        -cpu "$CPU" -smp 1 -m 512M -bios "$FIRMWARE" -serial "file:$_out" \
        </dev/null >/dev/null 2>&1 9>&- &
    _probe=$!
    _accel=tcg
    _n=0
    while [ $_n -lt 30 ] && running "$_probe"; do
        if grep -q "Hit any key to stop autoboot" "$_out"; then
            _accel=kvm
            break
        fi
        # Bounded backoff poll (until the condition above, at most the count's bound).
        sleep 0.1
        _n=$((_n + 1))
    done
    kill -KILL "$_probe" 2>/dev/null || true
    wait "$_probe" 2>/dev/null || true
    printf '%s\n%s\n' "$_boot" "$_accel" >"$A/accel"
    echo "$_accel"
}

# Is the console's device end open in ser2net (a client is connected)?
console_client() {
    [ -s "$D/ser2net.pid" ] || return 1
    _tty=$(readlink -f "$A/ttyUSB0") || return 1
    for _fd in /proc/"$(cat "$D/ser2net.pid")"/fd/*; do
        [ "$(readlink "$_fd" 2>/dev/null)" != "$_tty" ] || return 0
    done
    return 1
}

# A real USB serial adapter that nobody has open drops what the board sends.
# The pty pair instead keeps it (socat holds both ends open, ~40 KiB deep):
# without this, the next console client would first receive the output of
# a previous boot and could take it for output of the current one. Only when
# no client is connected, so that nothing a client should see is stolen.
drop_unread_output() {
    console_client ||
        dd if="$A/ttyUSB0" of=/dev/null iflag=nonblock status=none 2>/dev/null || true
}

power_on() {
    if _pid=$(board_pid); then
        echo "$NAME already on (pid $_pid)"
        log "on: already on (pid $_pid)"
        return 0
    fi
    [ -f "$A/disk.img" ] || {
        log "on: refused, no disk"
        die "$NAME: no disk $A/disk.img: flash an image first (flash.sh $ARCH IMAGE)"
    }
    [ -e "$A/uart" ] || {
        log "on: refused, no serial line"
        die "$NAME: no serial line $A/uart (is the lab up? lab.sh up)"
    }
    _accel=$(choose_accel)
    # A powered-off board receives nothing: drop what was typed on the
    # console while it was off (the pty pair would otherwise hand it to this
    # boot, where a stray key stops U-Boot's autoboot).
    dd if="$A/uart" of=/dev/null iflag=nonblock status=none 2>/dev/null || true
    drop_unread_output
    rm -f "$A/qemu.pid"
    # fd 9 (the power lock) must not leak into the daemon.
    if ! "$QEMU" -name "$NAME" -nodefaults -no-user-config -display none \
        -machine "$MACHINE" -accel "$_accel" -cpu "$CPU" -smp 1 -m 512M \
        -bios "$FIRMWARE" \
        -chardev "serial,id=uart,path=$A/uart" -serial chardev:uart \
        -drive "if=none,id=disk0,file=$A/disk.img,format=raw" \
        -device virtio-blk-pci,drive=disk0 \
        -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" \
        -device "virtio-net-pci,netdev=net0,mac=$MAC" \
        -smbios "type=1,manufacturer=$MANUFACTURER,product=$PRODUCT,serial=$SERIAL,uuid=$UUID" \
        -uuid "$UUID" \
        -fw_cfg "name=opt/org.devlab/uuid,string=$UUID" \
        -fw_cfg "name=opt/org.devlab/serial,string=$SERIAL" \
        -fw_cfg "name=opt/org.devlab/manufacturer,string=$MANUFACTURER" \
        -fw_cfg "name=opt/org.devlab/product,string=$PRODUCT" \
        -device i6300esb -action watchdog=reset \
        -daemonize -pidfile "$A/qemu.pid" \
        </dev/null >>"$A/qemu.log" 2>&1 9>&-; then
        log "on: QEMU failed to start (see $A/qemu.log)"
        die "$NAME: QEMU failed to start: $(tail -n 5 "$A/qemu.log")"
    fi
    _pid=$(board_pid) || die "$NAME: QEMU daemonized but is not running (see $A/qemu.log)"
    log "on: pid $_pid accel $_accel"
    echo "$NAME on (pid $_pid, accel $_accel, ssh 127.0.0.1:$SSH_PORT)"
}

power_off() {
    if ! _pid=$(board_pid); then
        rm -f "$A/qemu.pid"
        log "off: already off"
        echo "$NAME already off"
        return 0
    fi
    kill -KILL "$_pid" 2>/dev/null || true
    _n=0
    while running "$_pid"; do
        [ $_n -lt 100 ] || {
            log "off: pid $_pid still alive after 10 s"
            die "$NAME: QEMU pid $_pid did not exit within 10 s of SIGKILL"
        }
        # Bounded backoff poll (until the condition above, at most the count's bound).
        sleep 0.05
        _n=$((_n + 1))
    done
    rm -f "$A/qemu.pid"
    sleep 0.05 # let socat pass on the last bytes QEMU wrote
    drop_unread_output
    log "off: killed pid $_pid"
    echo "$NAME off (killed pid $_pid)"
}

case $CMD in
    on | off)
        # One power operation per board at a time; flash.sh holds the same
        # lock while it writes the disk.
        exec 9>"$A/lock"
        flock -w 10 9 || {
            log "$CMD: refused, board locked (flashing?)"
            die "$NAME is busy (being flashed or switched) for more than 10 s"
        }
        if [ "$CMD" = on ]; then power_on; else power_off; fi
        ;;
    status)
        if _pid=$(board_pid); then
            echo "on (pid $_pid, ssh 127.0.0.1:$SSH_PORT)"
        else
            echo "off"
            exit 3
        fi
        ;;
    *)
        echo "usage: power.sh on|off|status <arch> [OUTLET]" >&2
        exit 2
        ;;
esac
