#!/usr/bin/env bash
# example-debian-rauc: build a Debian bookworm "team product" image with
# RAUC A/B updates through U-Boot, for x86_64 and aarch64 QEMU boards.
#
#   examples/debian-rauc/build.sh [x86_64|aarch64|all]     (default: all)
#
# Output: ${DEVLAB_CACHE:-$HOME/.cache/devlab}/examples/debian-rauc/<hash>/,
# <hash> = sha256 of this script and every input file it reads (boot.cmd,
# mkrootfs.py, overlay/**); examples/debian-rauc/build is a symlink to it.
#   <arch>/disk.img.zst        GPT disk image (zstd; `zstd -d` gives a sparse raw image)
#   <arch>/bundle-v2.raucb     RAUC bundle, rootfs version 2
#   <arch>/bundle-bad.raucb    RAUC bundle, rootfs version 3 that panics at boot
#   <arch>/packages.txt        installed Debian packages
#   id_ed25519, id_ed25519.pub SSH key authorized for root (both arches)
#   pki/                       the example's CA and bundle-signing cert/key
#   manifest.txt               what was built, versions, sha256 of every artifact
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

usage() { echo "usage: $0 [x86_64|aarch64|all]" >&2; exit 2; }
case "${1:-all}" in
    all) ARCHES=(x86_64 aarch64) ;;
    x86_64|aarch64) ARCHES=("$1") ;;
    *) usage ;;
esac
[ $# -le 1 ] || usage

debarch() { case "$1" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; esac; }

# ---------------------------------------------------------------- inputs, cache
INPUTS=(build.sh boot.cmd mkrootfs.py)
while IFS= read -r -d '' f; do INPUTS+=("${f#./}"); done \
    < <(cd "$HERE" && find ./overlay -type f -print0 | LC_ALL=C sort -z)
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
    [ ${#missing[@]} -eq 0 ] || die "missing host commands: ${missing[*]}"

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

pids=()
for a in "${ARCHES[@]}"; do
    [ -d "$OUT/$a" ] && { log "$a: already built"; continue; }
    if [ ${#ARCHES[@]} -gt 1 ]; then
        # Both arches at once (2 cores: arm64's qemu-user bootstrap is the long pole).
        ( build_arch "$a" ) > >(sed -u "s/^/[$a] /") 2>&1 &
        pids+=($!)
    else
        ( build_arch "$a" )
    fi
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ $rc = 0 ] || die "a build failed (see above)"

write_manifest
link_build
log "built in $(( $(date +%s) - START )) s: $HERE/build -> $OUT"
