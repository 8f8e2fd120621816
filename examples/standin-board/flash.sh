#!/bin/sh
# Stand-in board flasher: write a disk image to a board's disk, like
# `bmaptool copy image /dev/mmcblkN` on a real bench.
#
#   flash.sh <arch> <image> [--bmap BMAP | --nobmap]
#
# The board's disk is the raw file $D/<arch>/disk.img (D =
# ${DEVLAB_STANDIN_DIR:-/tmp/devlab-standin}); it gets the image's size.
# Without --bmap, a bmap of a raw image is made first with `bmaptool create`
# into $D/<arch>/disk.img.bmap (never next to the image); compressed images
# (.gz .xz .zst ...) are copied with --nobmap unless a bmap is given.
# Why bmap by default: on a 1.5 GiB sparse image holding ~110 MiB of data,
# create + copy took 0.7-1.1 s and left a sparse 110 MiB disk, where
# `copy --nobmap` took 1.5-5.8 s and allocated the full 1.5 GiB (README.md).
#
# The disk is written as a new file then renamed over the old one: a flash
# starts from an erased (all-zero) disk, and a failed flash leaves the old
# disk in place. Refused while the board is powered on (it holds the power
# lock, so the board cannot be switched on mid-flash either). The source
# image is only read; the script checks that its size and mtime are unchanged.
set -eu

die() {
    echo "flash.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: flash.sh <arch> <image> [--bmap BMAP | --nobmap]" >&2
    exit 2
}

HERE=$(cd "$(dirname "$0")" && pwd -P)
{ [ $# -lt 2 ] || [ $# -gt 4 ]; } && usage
ARCH=$1
IMAGE=$2
shift 2
BMAP=
NOBMAP=
while [ $# -gt 0 ]; do
    case $1 in
        --bmap)
            [ $# -ge 2 ] || usage
            BMAP=$2
            shift 2
            ;;
        --nobmap)
            NOBMAP=1
            shift
            ;;
        *) usage ;;
    esac
done
[ -z "$BMAP" ] || [ -z "$NOBMAP" ] || die "--bmap and --nobmap exclude each other"

case $ARCH in
    x86_64 | aarch64) ;;
    *) die "unknown arch '$ARCH' (x86_64 or aarch64)" ;;
esac
D=${DEVLAB_STANDIN_DIR:-/tmp/devlab-standin}
A=$D/$ARCH
DISK=$A/disk.img

if [ ! -f "$IMAGE" ] || [ ! -r "$IMAGE" ]; then
    die "image '$IMAGE' is not a readable file"
fi
[ -z "$BMAP" ] || [ -r "$BMAP" ] || die "bmap '$BMAP' is not readable"
mkdir -p "$A"
if [ -e "$DISK" ] && [ "$(readlink -f "$IMAGE")" = "$(readlink -f "$DISK")" ]; then
    die "the image is the board's disk itself"
fi

# The power lock: no power on/off while we write (and we do not wait for one).
exec 9>"$A/lock"
flock -n 9 || die "board $ARCH is busy (being powered on/off or flashed): try again"
if state=$(DEVLAB_STANDIN_DIR=$D "$HERE/power.sh" status "$ARCH"); then
    die "board $ARCH is powered on ($state): power it off before flashing"
fi

before=$(stat -L -c '%s %Y' "$IMAGE")
start=$(date +%s.%N)

if [ -n "$NOBMAP" ]; then
    mode="--nobmap"
elif [ -n "$BMAP" ]; then
    mode="--bmap $BMAP"
else
    case $IMAGE in
        *.gz | *.bz2 | *.xz | *.lzo | *.lz4 | *.zst | *.zip | *.tar | *.tar.*)
            echo "compressed image and no bmap given: copying with --nobmap"
            mode="--nobmap"
            ;;
        *)
            rm -f "$DISK.bmap"
            bmaptool -q create -o "$DISK.bmap" "$IMAGE" || die "bmaptool create failed"
            BMAP=$DISK.bmap
            mode="--bmap $BMAP (created)"
            ;;
    esac
fi

rm -f "$DISK.new"
if [ -n "$BMAP" ]; then
    bmaptool -q copy --bmap "$BMAP" "$IMAGE" "$DISK.new" || {
        rm -f "$DISK.new"
        die "bmaptool copy failed"
    }
else
    bmaptool -q copy --nobmap "$IMAGE" "$DISK.new" || {
        rm -f "$DISK.new"
        die "bmaptool copy failed"
    }
fi
mv -f "$DISK.new" "$DISK"
end=$(date +%s.%N)

after=$(stat -L -c '%s %Y' "$IMAGE")
[ "$before" = "$after" ] || die "the source image changed during the flash ($before -> $after)"

echo "flashed $IMAGE -> $DISK ($mode): $(du -h --apparent-size "$DISK" | cut -f1) image, $(du -h "$DISK" | cut -f1) written, $(awk "BEGIN { printf \"%.2f\", $end - $start }") s"
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) flashed $IMAGE ($mode)" >>"$A/power.log"
