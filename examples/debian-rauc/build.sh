#!/usr/bin/env bash
# example-debian-rauc: build a Debian bookworm "team product" image with
# RAUC A/B updates through U-Boot, for x86_64 and aarch64 QEMU boards.
#
#   examples/debian-rauc/build.sh [x86_64|aarch64|netboot|all]   (default: all)
#
# x86_64, aarch64: that arch's image and bundles; netboot: both arches' images
# and the factory provisioning files below; all: everything.
#
# Output: ${DEVLAB_CACHE:-$HOME/.cache/devlab}/examples/debian-rauc/<hash>/,
# <hash> = sha256 of this script and every input file it reads (boot.cmd,
# mkrootfs.py, overlay/**, netboot/**); examples/debian-rauc/build is a symlink to it.
#   <arch>/disk.img.zst        GPT disk image (zstd; `zstd -d` gives a sparse raw image)
#   <arch>/bundle-v2.raucb     RAUC bundle, rootfs version 2
#   <arch>/bundle-bad.raucb    RAUC bundle, rootfs version 3 that panics at boot
#   <arch>/packages.txt        installed Debian packages
#   id_ed25519, id_ed25519.pub SSH key authorized for root (both arches)
#   pki/                       the example's CA and bundle-signing cert/key
#   manifest.txt               what was built, versions, sha256 of every artifact
# Factory provisioning (target netboot): a blank device network-boots Debian
# 12's own netboot installer (d-i), whose preseed/early_command writes
# disk.img.gz onto /dev/vda and powers off (netboot/preseed.cfg says how).
#   preseed.cfg                netboot/preseed.cfg (one file for both arches)
#   <arch>/disk.img.gz         the disk image as gzip (what d-i's busybox gunzip reads)
#   <arch>/netboot/linux       d-i's kernel       } copies of the files of
#   <arch>/netboot/initrd.gz   d-i's initrd       } debian-installer-12-netboot-<debarch>
#   <arch>/netboot/modules.cpio.gz  virtio_blk.ko of d-i's exact kernel (d-i's
#                              initrd has no virtio_blk), from Debian's
#                              linux-image-<ABI> package; goes after initrd.gz
#   <arch>/netboot/source.txt  where each of them came from
# <arch>/netboot is a symlink to netboot-<key>, <key> = sha256 of d-i's
# linux and initrd.gz: an upgraded d-i package makes a new one (no rebuild of
# the images). They are copies, not links into /usr/lib/debian-installer: a
# symlink would change under its key when the package is upgraded, a hard
# link fails across file systems (or as non-root on a root-owned file) and
# anything writing through it would change the package's file.
# Each <arch>/ is built in a temp dir and renamed into place, so an
# interrupted build never leaves a complete-looking entry. The mmdebstrap
# tarball (the slow part) is cached separately under base/, keyed by the
# exact mmdebstrap command; delete base/ to pick up new Debian updates.
#
# Host packages (Debian 12; `-t bookworm-backports` where noted):
#   mmdebstrap                      bootstrap the rootfs (--mode=unshare; as
#                                   non-root also uidmap + /etc/subuid entries)
#   qemu-user-static (backports: qemu-user + qemu-user-binfmt), arch-test
#                                   run arm64 maintainer scripts on an x86 host
#                                   (binfmt_misc must have qemu-aarch64 registered)
#   e2fsprogs >= 1.47.1 (backports) mke2fs -d FILE.tar
#   gdisk                           sgdisk
#   dosfstools                      mkfs.vfat
#   mtools                          mcopy
#   u-boot-tools                    mkimage, mkenvimage
#   rauc, squashfs-tools            rauc bundle (mksquashfs)
#   openssl                         the example PKI
#   openssh-client                  ssh-keygen
#   zstd, python3, coreutils, util-linux (flock)
#   netboot target only:
#   debian-installer-12-netboot-amd64, debian-installer-12-netboot-arm64
#                                   d-i's kernel and initrd (its text/ images)
#   apt (apt-get download), dpkg (dpkg-deb), cpio, gzip, kmod (modinfo)
#                                   virtio_blk.ko from the Debian mirror; for
#                                   the other arch's kernel package apt needs
#                                   `dpkg --add-architecture arm64` (or amd64)
#                                   and `apt-get update`
# To boot/verify the result (verify.py): qemu-system-x86 qemu-system-arm
# (backports), u-boot-qemu, qemu-utils, python3-pexpect, openssh-client.
#
# No loop devices, no mounts, no root beyond what mmdebstrap --mode=unshare
# needs: partitions are made as files (mke2fs -d, mkfs.vfat + mtools) and
# copied into a sparse disk file with dd conv=notrunc,sparse.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY_MIRROR=http://deb.debian.org/debian-security
# Fixed timestamps for generated files, boot.scr and FAT (reproducible-ish).
export SOURCE_DATE_EPOCH=1735689600   # 2025-01-01
PRODUCT=example-debian-rauc

# Partition table (MiB). PARTLABELs are what everything refers to.
BOOT_MIB=64        # p1 boot      FAT: boot.scr, uboot.env
ROOTFS_MIB=700     # p2 rootfs.0  ext4, slot A
                   # p3 rootfs.1  ext4, slot B
VAR_MIB=128        # p4 var       ext4, mounted at /var

PACKAGES=(
    systemd systemd-sysv udev dbus
    openssh-server openssh-sftp-server
    rauc rauc-service libubootenv-tool e2fsprogs
    initramfs-tools iproute2 procps netbase
)

die() { echo "build.sh: error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*"; }

usage() { echo "usage: $0 [x86_64|aarch64|netboot|all]" >&2; exit 2; }
NETBOOT=0
case "${1:-all}" in
    all|netboot) ARCHES=(x86_64 aarch64); NETBOOT=1 ;;
    x86_64|aarch64) ARCHES=("$1") ;;
    *) usage ;;
esac
[ $# -le 1 ] || usage

debarch() { case "$1" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; esac; }
# d-i's netboot kernel and initrd (package debian-installer-12-netboot-<debarch>).
di_dir() { local da; da=$(debarch "$1"); echo "/usr/lib/debian-installer/images/12/$da/text/debian-installer/$da"; }
di_pkg() { echo "debian-installer-12-netboot-$(debarch "$1")"; }
# Key of a netboot dir: the content of d-i's linux and initrd.gz in DIR.
di_key() { (cd "$1" && sha256sum linux initrd.gz) | sha256sum | cut -c1-16; }

# ---------------------------------------------------------------- inputs, cache
INPUTS=(build.sh boot.cmd mkrootfs.py)
while IFS= read -r -d '' f; do INPUTS+=("${f#./}"); done \
    < <(cd "$HERE" && find ./overlay ./netboot -type f -print0 | LC_ALL=C sort -z)
# Content, mode (an overlay file's x bit lands in the image) and path of each input.
HASH=$(cd "$HERE" && for f in "${INPUTS[@]}"; do
           printf '%s %s %s\n' "$(sha256sum < "$f" | cut -d' ' -f1)" "$(stat -c %a "$f")" "$f"
       done | sha256sum | cut -d' ' -f1)
CACHE=${DEVLAB_CACHE:-$HOME/.cache/devlab}/examples/debian-rauc
OUT=$CACHE/$HASH

link_build() {
    ln -sfn "$OUT" "$HERE/build.tmp.$$"
    mv -T "$HERE/build.tmp.$$" "$HERE/build"
}

complete() {
    [ -d "$OUT/common" ] && [ -f "$OUT/manifest.txt" ] || return 1
    local a
    for a in "${ARCHES[@]}"; do [ -d "$OUT/$a" ] || return 1; done
    for a in "${ARCHES[@]}"; do grep -q "^\[$a\]" "$OUT/manifest.txt" || return 1; done
    [ "$NETBOOT" = 1 ] || return 0
    [ -f "$OUT/preseed.cfg" ] || return 1
    local key
    for a in "${ARCHES[@]}"; do
        [ -f "$OUT/$a/disk.img.gz" ] && [ -f "$(di_dir "$a")/initrd.gz" ] || return 1
        key=$(di_key "$(di_dir "$a")")
        # Made from the d-i now installed, and in the manifest.
        [ "$(readlink "$OUT/$a/netboot")" = "netboot-$key" ] || return 1
        grep -qx "\[$a netboot\] netboot-$key" "$OUT/manifest.txt" || return 1
    done
}

if complete; then
    link_build
    echo "up to date: $HERE/build -> $OUT"
    exit 0
fi

# ---------------------------------------------------------------- host checks
check_host() {
    local missing=() c
    for c in mmdebstrap:mmdebstrap sgdisk:gdisk mkfs.vfat:dosfstools mcopy:mtools \
             mkimage:u-boot-tools mkenvimage:u-boot-tools rauc:rauc \
             mksquashfs:squashfs-tools openssl:openssl ssh-keygen:openssh-client \
             zstd:zstd python3:python3 flock:util-linux mke2fs:e2fsprogs; do
        command -v "${c%%:*}" >/dev/null || missing+=("${c%%:*} (package ${c#*:})")
    done
    if [ "$NETBOOT" = 1 ]; then
        for c in apt-get:apt dpkg-deb:dpkg cpio:cpio gzip:gzip modinfo:kmod; do
            command -v "${c%%:*}" >/dev/null || missing+=("${c%%:*} (package ${c#*:})")
        done
    fi
    [ ${#missing[@]} -eq 0 ] || die "missing host commands: ${missing[*]}"
    if [ "$NETBOOT" = 1 ]; then
        local a k nodi=()
        for a in "${ARCHES[@]}"; do
            k=$(di_dir "$a")
            [ -f "$k/linux" ] && [ -f "$k/initrd.gz" ] || nodi+=("$(di_pkg "$a")")
        done
        [ ${#nodi[@]} -eq 0 ] || die "the netboot target needs Debian 12's netboot installer (d-i):" \
            "install ${nodi[*]} (its kernel and initrd, under /usr/lib/debian-installer/images/12/)"
    fi

    local v
    v=$(mke2fs -V 2>&1 | sed -n 's/^mke2fs \([0-9.]*\).*/\1/p')
    if ! printf '1.47.1\n%s\n' "$v" | sort -V -C; then
        die "mke2fs $v cannot read a tar with -d; need e2fsprogs >= 1.47.1:" \
            "apt-get install -t bookworm-backports e2fsprogs"
    fi

    if [ "$(id -u)" != 0 ] && ! grep -q "^$(id -un):" /etc/subuid 2>/dev/null; then
        die "mmdebstrap --mode=unshare as $(id -un) needs an /etc/subuid entry" \
            "(and uidmap); or run as root"
    fi

    local host a qarch
    host=$(dpkg --print-architecture)
    for a in "${ARCHES[@]}"; do
        [ "$(debarch "$a")" = "$host" ] && continue
        qarch=$a
        if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
            die "binfmt_misc is not mounted (needed to run $a maintainer scripts):" \
                "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"
        fi
        if ! grep -qx enabled "/proc/sys/fs/binfmt_misc/qemu-$qarch" 2>/dev/null; then
            die "no binfmt_misc handler qemu-$qarch: install qemu-user-static" \
                "(bookworm-backports: qemu-user-binfmt) and register it, e.g." \
                "'cat /usr/lib/binfmt.d/qemu-$qarch.conf > /proc/sys/fs/binfmt_misc/register'" \
                "or 'update-binfmts --enable qemu-$qarch' (binfmt-support)"
        fi
        if ! grep -q '^flags:.*F' "/proc/sys/fs/binfmt_misc/qemu-$qarch"; then
            die "binfmt_misc qemu-$qarch lacks the F (fix-binary) flag: a" \
                "namespaced chroot cannot open the interpreter; use qemu-user-static's registration"
        fi
        if command -v arch-test >/dev/null && ! arch-test "$(debarch "$a")" >/dev/null; then
            die "arch-test $(debarch "$a") fails: this host cannot run $a binaries"
        fi
    done
}
check_host

mkdir -p "$OUT" "$CACHE/base"
exec 9>"$OUT/.lock"
flock 9
# Left-overs of an interrupted build of this same entry (we hold its lock).
rm -rf "$OUT"/.work-* "$OUT"/.tmp-*

# ---------------------------------------------------------------- keys (shared)
make_common() {
    [ -d "$OUT/common" ] && return 0
    log "keys: SSH client key, SSH host key, PKI (CA + bundle signing cert)"
    local t
    t=$(mktemp -d "$OUT/.tmp-common.XXXXXX")
    ssh-keygen -q -t ed25519 -N '' -C "$PRODUCT-client" -f "$t/id_ed25519"
    ssh-keygen -q -t ed25519 -N '' -C "root@example-device" -f "$t/ssh_host_ed25519_key"
    mkdir "$t/pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$t/pki/ca.key.pem" -out "$t/pki/ca.cert.pem" -days 3650 \
        -subj "/O=Example Team/CN=$PRODUCT CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$t/pki/signing.key.pem" -out "$t/pki/signing.csr.pem" \
        -subj "/O=Example Team/CN=$PRODUCT bundle signing" 2>/dev/null
    # No extendedKeyUsage: rauc 1.8's default check-purpose (OpenSSL's
    # smimesign) rejects a codeSigning-only certificate.
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" \
        "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" > "$t/pki/signing.ext"
    openssl x509 -req -in "$t/pki/signing.csr.pem" -CA "$t/pki/ca.cert.pem" \
        -CAkey "$t/pki/ca.key.pem" -set_serial 2 -days 3650 \
        -extfile "$t/pki/signing.ext" -out "$t/pki/signing.cert.pem" 2>/dev/null
    openssl verify -CAfile "$t/pki/ca.cert.pem" "$t/pki/signing.cert.pem" >/dev/null \
        || die "the signing certificate does not verify against the CA"
    # Root's serial-console password "kT4-serial-9vQ" (fixed salt: same hash every build;
    # distinctive, so a test can prove it is never written by devlab).
    openssl passwd -6 -salt exampledebrauc kT4-serial-9vQ > "$t/root-password-hash"
    printf 'example-debian-rauc data: written at build time, must survive updates.\n' > "$t/data.txt"
    mv -T "$t" "$OUT/common"
}

# ---------------------------------------------------------------- base rootfs
# One mmdebstrap per arch, full install with maintainer scripts (arm64 runs
# them under qemu-user). Cached by the exact command line.
base_tar() {
    local arch=$1 da kpkg key t
    da=$(debarch "$arch")
    kpkg=linux-image-cloud-$da
    local cmd=(mmdebstrap --mode=unshare --variant=minbase --architectures="$da"
        --include="$(IFS=,; echo "${PACKAGES[*]},$kpkg")"
        --dpkgopt='path-exclude=/usr/share/man/*'
        --dpkgopt='path-exclude=/usr/share/doc/*'
        --dpkgopt='path-include=/usr/share/doc/*/copyright'
        --dpkgopt='path-exclude=/usr/share/locale/*'
        --dpkgopt='path-exclude=/usr/share/info/*'
        # Debian's kernel postinst keeps /boot/vmlinuz and /boot/initrd.img
        # pointing at the installed kernel: the stable names boot.scr loads.
        --setup-hook='mkdir -p "$1/etc" && printf "do_symlinks = yes\nlink_in_boot = yes\n" > "$1/etc/kernel-img.conf"'
        --customize-hook='chroot "$1" systemctl enable systemd-networkd.service'
        "$SUITE"
        TARGET
        "deb $MIRROR $SUITE main"
        "deb $MIRROR $SUITE-updates main"
        "deb $SECURITY_MIRROR $SUITE-security main")
    key=$(printf '%s\0' "${cmd[@]}" | sha256sum | cut -c1-16)
    BASE=$CACHE/base/$da-$key.tar
    # One bootstrap per arch at a time; a holder of the lock may clear the
    # left-overs of an interrupted one.
    local lock
    exec {lock}>"$CACHE/base/.lock-$da"
    flock "$lock"
    if [ -f "$BASE" ]; then
        log "base: cached $BASE"
        return 0
    fi
    rm -f "$CACHE/base/.tmp-$da-"*
    t=$(mktemp "$CACHE/base/.tmp-$da-XXXXXX.tar")
    cmd[${#cmd[@]}-4]=$t
    log "base: mmdebstrap $SUITE $da (arm64 under qemu-user takes minutes)"
    if ! "${cmd[@]}" > "$t.log" 2>&1; then
        tail -n 40 "$t.log"
        rm -f "$t" "$t.log"
        die "mmdebstrap $da failed"
    fi
    rm -f "$t.log"
    mv -T "$t" "$BASE"
    log "base: $(du -h "$BASE" | cut -f1) $BASE"
}

# ---------------------------------------------------------------- one arch
mkext4() {  # mkext4 TAR IMAGE SIZE_MIB LABEL
    rm -f "$2"
    mke2fs -q -F -t ext4 -i 8192 -L "$4" -d "$1" "$2" "$3M"
}

build_arch() {
    local arch=$1 W T
    W=$(mktemp -d "$OUT/.work-$arch.XXXXXX")
    T=$(mktemp -d "$OUT/.tmp-$arch.XXXXXX")
    # shellcheck disable=SC2064  # expand now: W and T are local
    trap "rm -rf '$W' '$T'" EXIT
    trap 'exit 130' INT TERM

    base_tar "$arch"

    log "rootfs: v1, v2, v3 (bad) and var from the base"
    mkdir "$W/files"
    cp "$OUT/common/id_ed25519.pub" "$W/files/authorized_keys"
    cp "$OUT/common/ssh_host_ed25519_key" "$OUT/common/ssh_host_ed25519_key.pub" \
       "$OUT/common/root-password-hash" "$OUT/common/data.txt" "$W/files/"
    cp "$OUT/common/pki/ca.cert.pem" "$W/files/keyring.pem"
    python3 "$HERE/mkrootfs.py" --base "$BASE" --overlay "$HERE/overlay" \
        --files "$W/files" --arch "$arch" --out "$W" --mtime "$SOURCE_DATE_EPOCH" \
        --version 1 --version 2 --bad 3

    log "ext4: slot image v1 (${ROOTFS_MIB} MiB), var (${VAR_MIB} MiB), bundle images v2, v3"
    mkext4 "$W/rootfs-v1.tar" "$W/rootfs-v1.ext4" "$ROOTFS_MIB" rootfs-v1
    mkext4 "$W/var.tar" "$W/var.ext4" "$VAR_MIB" var
    local v size
    for v in 2 3; do
        # Sized to the content (+20 % +48 MiB); RAUC grows it to the slot (resize=true).
        size=$(( $(stat -c %s "$W/rootfs-v$v.tar") * 12 / 10 / 1048576 + 48 ))
        mkext4 "$W/rootfs-v$v.tar" "$W/rootfs-v$v.ext4" "$size" "rootfs-v$v"
    done

    log "boot partition: boot.scr, uboot.env"
    mkimage -A arm -O linux -T script -C none -n "$PRODUCT boot" \
        -d "$HERE/boot.cmd" "$W/boot.scr" >/dev/null
    mkenvimage -s 0x4000 -o "$W/uboot.env" "$HERE/overlay/etc/u-boot-initial-env"
    truncate -s "${BOOT_MIB}M" "$W/boot.vfat"
    mkfs.vfat -n BOOT -i 0e5a0001 "$W/boot.vfat" >/dev/null
    mcopy -i "$W/boot.vfat" "$W/boot.scr" "$W/uboot.env" "$HERE/boot.cmd" ::/

    log "disk: GPT boot | rootfs.0 | rootfs.1 | var"
    local p1=1 p2 p3 p4 end
    p2=$((p1 + BOOT_MIB)); p3=$((p2 + ROOTFS_MIB)); p4=$((p3 + ROOTFS_MIB)); end=$((p4 + VAR_MIB))
    truncate -s "$((end + 1))M" "$W/disk.img"
    sgdisk -o \
        -n "1:$((p1 * 2048)):$((p2 * 2048 - 1))" -t 1:0700 -c 1:boot -A 1:set:2 \
        -n "2:$((p2 * 2048)):$((p3 * 2048 - 1))" -t 2:8300 -c 2:rootfs.0 \
        -n "3:$((p3 * 2048)):$((p4 * 2048 - 1))" -t 3:8300 -c 3:rootfs.1 \
        -n "4:$((p4 * 2048)):$((end * 2048 - 1))" -t 4:8300 -c 4:var \
        "$W/disk.img" >/dev/null
    dd if="$W/boot.vfat" of="$W/disk.img" bs=1M seek="$p1" conv=notrunc,sparse status=none
    # Both slots hold v1: a factory-fresh device can fall back either way.
    dd if="$W/rootfs-v1.ext4" of="$W/disk.img" bs=1M seek="$p2" conv=notrunc,sparse status=none
    dd if="$W/rootfs-v1.ext4" of="$W/disk.img" bs=1M seek="$p3" conv=notrunc,sparse status=none
    dd if="$W/var.ext4" of="$W/disk.img" bs=1M seek="$p4" conv=notrunc,sparse status=none
    zstd -q -T0 -3 "$W/disk.img" -o "$T/disk.img.zst"

    log "bundles: v2, v3 (bad)"
    local name
    for v in 2 3; do
        [ "$v" = 3 ] && name=bundle-bad || name=bundle-v$v
        mkdir "$W/$name"
        cat > "$W/$name/manifest.raucm" <<EOF
[update]
compatible=$PRODUCT-$arch
version=$v
description=$PRODUCT $arch version $v$([ "$v" = 3 ] && echo " (broken on purpose: init exits)")
build=$HASH

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
EOF
        mv "$W/rootfs-v$v.ext4" "$W/$name/rootfs.ext4"
        rauc bundle --cert "$OUT/common/pki/signing.cert.pem" \
            --key "$OUT/common/pki/signing.key.pem" \
            --keyring "$OUT/common/pki/ca.cert.pem" \
            --mksquashfs-args="-comp zstd -Xcompression-level 3" \
            "$W/$name" "$T/$name.raucb" >/dev/null
    done

    cp "$W/packages.txt" "$T/packages.txt"
    chmod 755 "$T"
    mv -T "$T" "$OUT/$arch"
    log "done: $OUT/$arch"
}

# ---------------------------------------------------------------- netboot
# The preseed d-i loads (one file for both arches). Nothing in it varies
# per build; its early_command is checked with `sh -n` here rather than
# found broken by a factory device.
make_preseed() {
    [ -f "$OUT/preseed.cfg" ] && return 0
    local t cmd
    t=$(mktemp "$OUT/.tmp-preseed.XXXXXX")
    cp "$HERE/netboot/preseed.cfg" "$t"
    # Join backslash-continued lines as d-i's preseed parser does.
    cmd=$(sed -e ':a' -e '/\\$/{N;s/\\\n//;ba' -e '}' "$t" \
          | sed -n 's/^d-i preseed\/early_command string //p')
    [ -n "$cmd" ] || die "netboot/preseed.cfg has no d-i preseed/early_command"
    sh -n -c "$cmd" || die "netboot/preseed.cfg: preseed/early_command is not valid sh"
    chmod 644 "$t"
    mv -T "$t" "$OUT/preseed.cfg"
    log "netboot: preseed.cfg"
}

# <arch>/disk.img.gz and <arch>/netboot for one arch (its image is built).
build_netboot() {
    local arch=$1 da K T key abi kver pkg mod deps d m
    da=$(debarch "$arch")
    K=$(di_dir "$arch")
    T=$(mktemp -d "$OUT/.tmp-netboot-$arch.XXXXXX")
    # shellcheck disable=SC2064  # expand now: T is local
    trap "rm -rf '$T'" EXIT
    trap 'exit 130' INT TERM

    if [ ! -f "$OUT/$arch/disk.img.gz" ]; then
        log "netboot: disk.img.gz (zstd -d | gzip -1)"
        zstd -dcq "$OUT/$arch/disk.img.zst" | gzip -1 -n > "$T/disk.img.gz" \
            || die "$arch: disk.img.zst -> disk.img.gz failed"
        chmod 644 "$T/disk.img.gz"
        mv -T "$T/disk.img.gz" "$OUT/$arch/disk.img.gz"
    fi

    key=$(di_key "$K")
    if [ "$(readlink "$OUT/$arch/netboot" 2>/dev/null)" = "netboot-$key" ]; then
        log "netboot: d-i $key already done"
        return 0
    fi
    mkdir "$T/nb" "$T/deb" "$T/x" "$T/cpio"
    # Everything below is read from the copies: the dir's name is their content.
    cp "$K/linux" "$K/initrd.gz" "$T/nb/"
    key=$(di_key "$T/nb")

    # d-i's kernel ABI is the one module dir in its initrd; its Debian version
    # is in the kernel's banner (bzImage header / arm64 Image).
    zcat "$T/nb/initrd.gz" | cpio -t --quiet > "$T/initrd.list" \
        || die "$arch: cannot list d-i's initrd $K/initrd.gz"
    abi=$(sed -n 's#^lib/modules/\([^/]*\)$#\1#p' "$T/initrd.list")
    [ -n "$abi" ] && [ "$(printf '%s\n' "$abi" | wc -l)" = 1 ] \
        || die "$arch: expected one lib/modules/<ABI> in d-i's initrd, found: ${abi:-none}"
    kver=$(LC_ALL=C grep -a -o -E -m1 "SMP [A-Z_ ]*Debian [0-9][^ ]*" "$T/nb/linux" | head -n1 || true)
    kver=${kver##* }
    log "netboot: $(di_pkg "$arch") $(dpkg-query -W -f='${Version}' "$(di_pkg "$arch")" 2>/dev/null || echo '?'), kernel $abi ${kver:-?}"
    if grep -q "^lib/modules/$abi/.*/virtio_blk\.ko" "$T/initrd.list"; then
        die "$arch: d-i's initrd has virtio_blk.ko already; modules.cpio.gz is not needed (update build.sh)"
    fi

    # virtio_blk.ko from the kernel package of the same ABI: d-i's exact
    # version if the mirror still has it, else the current one (same ABI:
    # Debian keeps the module interface of an ABI stable).
    pkg=linux-image-$abi
    if [ "$da" != "$(dpkg --print-architecture)" ] \
            && ! dpkg --print-foreign-architectures | grep -qx "$da"; then
        die "apt cannot fetch $da packages ($pkg for the $arch netboot):" \
            "dpkg --add-architecture $da && apt-get update"
    fi
    log "netboot: apt-get download $pkg:$da ${kver:+(=$kver)}"
    if ! { [ -n "$kver" ] && (cd "$T/deb" && apt-get download "$pkg:$da=$kver") > "$T/apt.log" 2>&1; }; then
        [ -z "$kver" ] || log "netboot: $pkg $kver is not in the apt lists; taking the current $pkg"
        if ! (cd "$T/deb" && apt-get download "$pkg:$da") > "$T/apt.log" 2>&1; then
            tail -n 20 "$T/apt.log" >&2
            die "$arch: apt-get download $pkg:$da failed (apt-get update? a mirror with bookworm" \
                "and bookworm-security in the sources)"
        fi
    fi
    d=$(find "$T/deb" -name "${pkg}_*_$da.deb")
    [ -f "$d" ] || die "$arch: apt-get download left no ${pkg}_*_$da.deb"
    dpkg-deb --fsys-tarfile "$d" | tar -x -C "$T/x" --wildcards '*/virtio_blk.ko' \
        || die "$arch: no virtio_blk.ko in $(basename "$d")"
    mod=$(cd "$T/x" && find . -name virtio_blk.ko | sed 's#^\./##')
    [ "$mod" = "lib/modules/$abi/kernel/drivers/block/virtio_blk.ko" ] \
        || die "$arch: virtio_blk.ko is at '${mod:-nowhere}' in $(basename "$d"), the preseed insmods" \
               "lib/modules/$abi/kernel/drivers/block/virtio_blk.ko"
    [ "$(modinfo -F vermagic "$T/x/$mod" | cut -d' ' -f1)" = "$abi" ] \
        || die "$arch: $mod is not for kernel $abi: $(modinfo -F vermagic "$T/x/$mod")"
    # What it needs must be in d-i's initrd (a module there, or built in).
    deps=$(modinfo -F depends "$T/x/$mod")
    zcat "$T/nb/initrd.gz" | cpio -i --quiet --to-stdout "lib/modules/$abi/modules.builtin" \
        > "$T/builtin" || die "$arch: no lib/modules/$abi/modules.builtin in d-i's initrd"
    for m in ${deps//,/ }; do
        grep -q "^lib/modules/$abi/.*/$m\.ko$" "$T/initrd.list" || grep -q "/$m\.ko$" "$T/builtin" \
            || die "$arch: virtio_blk needs $m, which d-i's initrd has neither as module nor built in"
    done

    # A newc cpio of just that file (and its dirs), owned by root, fixed mtime.
    mkdir -p "$T/cpio/$(dirname "$mod")"
    cp "$T/x/$mod" "$T/cpio/$mod"
    chmod 644 "$T/cpio/$mod"
    find "$T/cpio" -type d -exec chmod 755 {} +
    find "$T/cpio" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    (cd "$T/cpio" && find lib | LC_ALL=C sort \
        | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9 -n > "$T/nb/modules.cpio.gz" \
        || die "$arch: packing modules.cpio.gz failed"

    {
        echo "d-i: $(di_pkg "$arch") $(dpkg-query -W -f='${Version}' "$(di_pkg "$arch")" 2>/dev/null || echo '?') ($K)"
        echo "kernel: $abi ${kver:-?}"
        echo "virtio_blk.ko: $mod from $(basename "$d") (depends: ${deps:-none})"
    } > "$T/nb/source.txt"
    chmod 644 "$T/nb"/*
    chmod 755 "$T/nb"
    rm -rf "$OUT/$arch/netboot-$key"
    mv -T "$T/nb" "$OUT/$arch/netboot-$key"
    ln -sfn "netboot-$key" "$OUT/$arch/netboot.tmp.$$"
    mv -T "$OUT/$arch/netboot.tmp.$$" "$OUT/$arch/netboot"
    # Those of an older d-i.
    find "$OUT/$arch" -maxdepth 1 -name 'netboot-*' ! -name "netboot-$key" -exec rm -rf {} +
    log "netboot: done: $OUT/$arch/netboot -> netboot-$key"
}

# ---------------------------------------------------------------- manifest
pkgver() { awk -v p="$1" '$1 == p { print $2 }' "$2"; }

write_manifest() {
    local m a f
    m=$(mktemp "$OUT/.tmp-manifest.XXXXXX")
    {
        echo "$PRODUCT build $HASH"
        echo "written: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "debian: $SUITE (+ $SUITE-updates, $SUITE-security) from $MIRROR"
        echo "arches: $(cd "$OUT" && ls -d x86_64 aarch64 2>/dev/null | tr '\n' ' ')"
        echo "inputs:"
        (cd "$HERE" && sha256sum "${INPUTS[@]}" | sed 's/^/  /')
        echo "shared:"
        (cd "$OUT" && sha256sum common/id_ed25519.pub common/pki/ca.cert.pem \
                      common/pki/signing.cert.pem | sed 's/^/  /')
        for a in x86_64 aarch64; do
            [ -d "$OUT/$a" ] || continue
            f=$OUT/$a/packages.txt
            echo "[$a]"
            echo "  kernel: $(awk '$1 ~ /^linux-image-[0-9]/ { print $1, $2 }' "$f")"
            echo "  rauc: $(pkgver rauc "$f")"
            echo "  systemd: $(pkgver systemd "$f")"
            echo "  libubootenv-tool: $(pkgver libubootenv-tool "$f")"
            echo "  openssh-server: $(pkgver openssh-server "$f")"
            (cd "$OUT" && sha256sum "$a"/*.zst "$a"/*.raucb "$a"/packages.txt | sed 's/^/  /')
        done
        [ -f "$OUT/preseed.cfg" ] && echo "netboot:" \
            && (cd "$OUT" && sha256sum preseed.cfg | sed 's/^/  /')
        for a in x86_64 aarch64; do
            [ -L "$OUT/$a/netboot" ] && [ -f "$OUT/$a/disk.img.gz" ] || continue
            echo "[$a netboot] $(readlink "$OUT/$a/netboot")"
            sed 's/^/  /' "$OUT/$a/netboot/source.txt"
            (cd "$OUT" && sha256sum "$a"/disk.img.gz "$a"/netboot/linux "$a"/netboot/initrd.gz \
                          "$a"/netboot/modules.cpio.gz | sed 's/^/  /')
        done
    } > "$m"
    chmod 644 "$m"
    mv -T "$m" "$OUT/manifest.txt"
}

# ---------------------------------------------------------------- main
START=$(date +%s)
make_common
ln -sfn common/id_ed25519 "$OUT/id_ed25519"
ln -sfn common/id_ed25519.pub "$OUT/id_ed25519.pub"
ln -sfn common/pki "$OUT/pki"

[ "$NETBOOT" = 0 ] || make_preseed

# One arch: its image and bundles if missing, then (netboot) the rest.
one_arch() {
    if [ -d "$OUT/$1" ]; then log "$1: already built"; else ( build_arch "$1" ); fi
    [ "$NETBOOT" = 0 ] || ( build_netboot "$1" )
}
pids=()
for a in "${ARCHES[@]}"; do
    if [ ${#ARCHES[@]} -gt 1 ]; then
        # Both arches at once (2 cores: arm64's qemu-user bootstrap is the long pole).
        ( one_arch "$a" ) > >(sed -u "s/^/[$a] /") 2>&1 &
        pids+=($!)
    else
        ( one_arch "$a" )
    fi
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ $rc = 0 ] || die "a build failed (see above)"

write_manifest
link_build
log "built in $(( $(date +%s) - START )) s: $HERE/build -> $OUT"
