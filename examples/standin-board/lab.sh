#!/bin/sh
# Stand-in board lab: the infrastructure around the two stand-in boards.
#
#   lab.sh up|down|status [STATE_DIR]
#
# STATE_DIR defaults to ${DEVLAB_STANDIN_DIR:-/tmp/devlab-standin}. `up`
# starts, idempotently, for each arch in x86_64 aarch64 a null-modem pair
# (socat: $D/<arch>/ttyUSB0 <-> $D/<arch>/uart), one ser2net serving the
# ttyUSB0 ends over raw TCP, and one pdudaemon (HTTP) whose localcmdline PDUs
# run power.sh. The boards themselves (QEMU) are started and stopped only by
# power.sh. `down` powers the boards off and stops everything; `status` tells
# what runs. Every pid is recorded in $D. See README.md.
set -eu

ARCHES="x86_64 aarch64"
LISTEN=127.0.0.1
# pdudaemon's HTTP port: not its default 16421, where Debian's own
# pdudaemon.service (enabled where systemd runs) listens on 0.0.0.0.
PDU_PORT=${STANDIN_PDU_PORT:-16431}
# Console TCP port of an arch.
console_port() {
    case $1 in
        x86_64) echo 4101 ;;
        aarch64) echo 4102 ;;
        *) die "unknown arch: $1" ;;
    esac
}
# How long `up` waits for a daemon to listen, in tenths of a second.
LISTEN_WAIT_TENTHS=100

die() {
    echo "lab.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: lab.sh up|down|status [STATE_DIR]" >&2
    exit 2
}

HERE=$(cd "$(dirname "$0")" && pwd -P)
POWER="$HERE/power.sh"

{ [ $# -lt 1 ] || [ $# -gt 2 ]; } && usage
CMD=$1
D=${2:-${DEVLAB_STANDIN_DIR:-/tmp/devlab-standin}}

# The state dir ends up in pdudaemon's JSON, in a shell command line run by
# pdudaemon (and %-formatted by it) and in ser2net's YAML: keep it plain.
case $D in
    *[!A-Za-z0-9/._-]*) die "state dir '$D': only A-Z a-z 0-9 / . _ - allowed" ;;
esac
case $HERE in
    *[!A-Za-z0-9/._-]*) die "script dir '$HERE': only A-Z a-z 0-9 / . _ - allowed" ;;
esac

# Is PID a live process? A daemon that exited may linger as a zombie until
# its reaper (init, which here collects them only every second or so) does:
# that counts as gone.
running() { # PID
    _state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
    [ -n "$_state" ] && [ "$_state" != Z ]
}

# `true` when the pid in FILE is alive and its command line contains WORD
# (guards against a stale pid file whose pid was reused).
pid_alive() { # FILE WORD
    [ -s "$1" ] || return 1
    _pid=$(cat "$1")
    case $_pid in '' | *[!0-9]*) return 1 ;; esac
    running "$_pid" || return 1
    tr '\0' ' ' <"/proc/$_pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# Stop the process recorded in FILE (TERM, then KILL after ~5 s), remove FILE.
stop_pidfile() { # FILE WORD NAME
    if pid_alive "$1" "$2"; then
        _pid=$(cat "$1")
        kill -TERM "$_pid" 2>/dev/null || true
        _n=0
        while running "$_pid" && [ $_n -lt 50 ]; do
            # Bounded backoff poll (until the condition above, at most the count's bound).
            sleep 0.1
            _n=$((_n + 1))
        done
        if running "$_pid"; then
            echo "lab.sh: $3 (pid $_pid) ignored TERM, killing" >&2
            kill -KILL "$_pid" 2>/dev/null || true
            # Until it is gone, at most 5 s (a bounded backoff poll: a
            # process gives no event to wait on from sh).
            _n=0
            while running "$_pid" && [ $_n -lt 50 ]; do sleep 0.1; _n=$((_n + 1)); done
        fi
        echo "stopped $3 (pid $_pid)"
    fi
    rm -f "$1"
}

# Does something accept TCP connections on 127.0.0.1:PORT? (socat, 1 s max)
listening() { # PORT
    socat -u OPEN:/dev/null "TCP:$LISTEN:$1,connect-timeout=1" >/dev/null 2>&1
}

# Poll until PORT listens while PIDFILE's process lives; fail loudly. (Not
# pid_alive: just after spawn the pid may not have exec'd its command yet.)
# LOGS: space-separated log files to show on failure.
wait_listening() { # PORT PIDFILE WORD NAME LOGS
    _n=0
    while ! listening "$1"; do
        # shellcheck disable=SC2086 # LOGS splits on purpose (paths are plain)
        running "$(cat "$2")" || die "$4 exited before listening on $LISTEN:$1; $5:
$(tail -n 20 $5 2>&1)"
        # shellcheck disable=SC2086
        [ $_n -lt $LISTEN_WAIT_TENTHS ] || die "$4 not listening on $LISTEN:$1 after $((LISTEN_WAIT_TENTHS / 10)) s; $5:
$(tail -n 20 $5 2>&1)"
        # Bounded backoff poll (until the condition above, at most the count's bound).
        sleep 0.1
        _n=$((_n + 1))
    done
    echo "$4 listening on $LISTEN:$1 (after ~$((_n * 100)) ms)"
}

# A daemon in its own session, stdio to LOG, its pid into PIDFILE. In a
# non-interactive sh the background child is no process-group leader, so
# setsid(1) calls setsid() and execs without forking: $! is the daemon.
spawn() { # PIDFILE LOG CMD...
    _pidfile=$1
    _log=$2
    shift 2
    setsid "$@" </dev/null >>"$_log" 2>&1 &
    echo $! >"$_pidfile"
}

# Processes whose arguments name a path inside $D (excluding this script and
# its parent, which may carry $D as an argument).
leftovers() {
    STANDIN_MATCH="$D/" ps -eo pid=,args= |
        STANDIN_MATCH="$D/" awk -v self=$$ -v parent="$PPID" \
            'index($0, ENVIRON["STANDIN_MATCH"]) && $1 != self && $1 != parent'
}

up_pair() { # ARCH
    _a=$D/$1
    mkdir -p "$_a"
    if pid_alive "$_a/socat.pid" "$_a/ttyUSB0"; then
        echo "$1: null-modem pair already up (socat pid $(cat "$_a/socat.pid"))"
        return
    fi
    rm -f "$_a/ttyUSB0" "$_a/uart"
    # Both pty ends: ttyUSB0 for ser2net (the "USB serial adapter"), uart for
    # QEMU (the board's UART). socat keeps both slave sides open itself, so
    # neither QEMU exiting (power off) nor ser2net closing the device (client
    # gone) hangs the pair up: it survives power cycles (see README.md).
    spawn "$_a/socat.pid" "$_a/socat.log" \
        socat -d "pty,link=$_a/ttyUSB0,rawer" "pty,link=$_a/uart,rawer"
    _n=0
    while ! { [ -e "$_a/ttyUSB0" ] && [ -e "$_a/uart" ]; }; do
        running "$(cat "$_a/socat.pid")" || die "$1: socat exited: $(tail -n 5 "$_a/socat.log")"
        [ $_n -lt 50 ] || die "$1: socat made no ptys within 5 s"
        # Bounded backoff poll (until the condition above, at most the count's bound).
        sleep 0.1
        _n=$((_n + 1))
    done
    # The line survives power cycles only because socat holds both slave
    # ends open (socat 1.8 does); say so loudly if this socat does not.
    _held=0
    for _end in ttyUSB0 uart; do
        _tty=$(readlink -f "$_a/$_end")
        for _fd in /proc/"$(cat "$_a/socat.pid")"/fd/*; do
            if [ "$(readlink "$_fd" 2>/dev/null)" = "$_tty" ]; then
                _held=$((_held + 1))
                break
            fi
        done
    done
    [ $_held -eq 2 ] || echo "lab.sh: WARNING: this socat does not hold both pty slaves open:" \
        "the serial line may die when QEMU exits or ser2net closes it (README.md)" >&2
    echo "$1: null-modem pair up: $_a/ttyUSB0 <-> $_a/uart (socat pid $(cat "$_a/socat.pid"))"
}

write_ser2net_yaml() {
    {
        echo "%YAML 1.1"
        echo "---"
        echo "# Generated by lab.sh: one raw-TCP console per stand-in board."
        for _arch in $ARCHES; do
            echo "connection: &standin-$_arch"
            echo "    accepter: tcp,$LISTEN,$(console_port "$_arch")"
            echo "    enable: on"
            echo "    options:"
            echo "      kickolduser: true"
            echo "    connector: serialdev,$D/$_arch/ttyUSB0,115200n81,local"
        done
    } >"$D/ser2net.yaml.tmp"
    mv "$D/ser2net.yaml.tmp" "$D/ser2net.yaml"
}

write_pdudaemon_json() {
    # localcmdline formats cmd_on/cmd_off with `% port`, so each command
    # must carry exactly one %s: power.sh takes it as the (logged) outlet.
    {
        echo "{"
        echo "  \"daemon\": {\"hostname\": \"$LISTEN\", \"port\": $PDU_PORT, \"logging_level\": \"DEBUG\", \"listener\": \"http\"},"
        echo "  \"pdus\": {"
        _sep=""
        for _arch in $ARCHES; do
            _cmd="DEVLAB_STANDIN_DIR=$D $POWER"
            printf '%s    "standin-%s": {"driver": "localcmdline", "cmd_on": "%s on %s %%s", "cmd_off": "%s off %s %%s"}' \
                "$_sep" "$_arch" "$_cmd" "$_arch" "$_cmd" "$_arch"
            _sep=",
"
        done
        echo ""
        echo "  }"
        echo "}"
    } >"$D/pdudaemon.json.tmp"
    mv "$D/pdudaemon.json.tmp" "$D/pdudaemon.json"
}

cmd_up() {
    mkdir -p "$D"
    D=$(cd "$D" && pwd -P)
    for arch in $ARCHES; do
        up_pair "$arch"
    done

    if pid_alive "$D/ser2net.pid" "$D/ser2net.yaml"; then
        echo "ser2net already running (pid $(cat "$D/ser2net.pid"))"
    else
        for arch in $ARCHES; do
            ! listening "$(console_port "$arch")" ||
                die "port $LISTEN:$(console_port "$arch") is taken by another process"
        done
        write_ser2net_yaml
        # -d: stay in the foreground, log to stdout (our log file); -u: no
        # UUCP lock files (both boards' device is named ttyUSB0).
        spawn "$D/ser2net.pid" "$D/ser2net.log" ser2net -d -u -c "$D/ser2net.yaml"
        for arch in $ARCHES; do
            wait_listening "$(console_port "$arch")" "$D/ser2net.pid" "$D/ser2net.yaml" \
                "ser2net ($arch console)" "$D/ser2net.log"
        done
    fi

    if pid_alive "$D/pdudaemon.pid" "$D/pdudaemon.json"; then
        echo "pdudaemon already running (pid $(cat "$D/pdudaemon.pid"))"
    else
        ! listening "$PDU_PORT" || die "port $LISTEN:$PDU_PORT is taken by another process"
        write_pdudaemon_json
        spawn "$D/pdudaemon.pid" "$D/pdudaemon.out" \
            pdudaemon --conf "$D/pdudaemon.json" --logfile "$D/pdudaemon.log"
        wait_listening "$PDU_PORT" "$D/pdudaemon.pid" "$D/pdudaemon.json" pdudaemon \
            "$D/pdudaemon.out $D/pdudaemon.log"
    fi
    echo "lab up in $D"
}

cmd_down() {
    [ -d "$D" ] || {
        echo "nothing in $D"
        return 0
    }
    D=$(cd "$D" && pwd -P)
    # Boards first (directly, not through pdudaemon: it may be gone already).
    for arch in $ARCHES; do
        if [ -d "$D/$arch" ]; then
            DEVLAB_STANDIN_DIR=$D "$POWER" off "$arch" lab-down
        fi
    done
    stop_pidfile "$D/pdudaemon.pid" "$D/pdudaemon.json" pdudaemon
    stop_pidfile "$D/ser2net.pid" "$D/ser2net.yaml" ser2net
    for arch in $ARCHES; do
        stop_pidfile "$D/$arch/socat.pid" "$D/$arch/ttyUSB0" "socat ($arch)"
        rm -f "$D/$arch/ttyUSB0" "$D/$arch/uart"
    done
    left=$(leftovers)
    if [ -n "$left" ]; then
        echo "lab.sh: processes still using $D:" >&2
        echo "$left" >&2
        exit 1
    fi
    echo "lab down: no process uses $D any more (ps checked)"
}

show() { # NAME PIDFILE WORD EXTRA
    if pid_alive "$2" "$3"; then
        printf '%-20s running  pid %-7s %s\n' "$1" "$(cat "$2")" "$4"
    else
        printf '%-20s stopped\n' "$1"
    fi
}

cmd_status() {
    [ -d "$D" ] || {
        echo "no lab in $D"
        exit 3
    }
    D=$(cd "$D" && pwd -P)
    echo "state dir $D"
    _port=$(sed -n 's/.*"port": \([0-9]*\).*/\1/p' "$D/pdudaemon.json" 2>/dev/null) || true
    show pdudaemon "$D/pdudaemon.pid" "$D/pdudaemon.json" "http://$LISTEN:${_port:-$PDU_PORT}/power/control/{on,off,reboot}"
    show ser2net "$D/ser2net.pid" "$D/ser2net.yaml" "consoles on $LISTEN:4101 (x86_64), $LISTEN:4102 (aarch64)"
    for arch in $ARCHES; do
        show "socat ($arch)" "$D/$arch/socat.pid" "$D/$arch/ttyUSB0" "$D/$arch/ttyUSB0 <-> $D/$arch/uart"
        if [ -d "$D/$arch" ]; then
            printf '%-20s ' "board ($arch)"
            DEVLAB_STANDIN_DIR=$D "$POWER" status "$arch" || true
        fi
    done
}

case $CMD in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) usage ;;
esac
