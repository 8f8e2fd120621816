# example-debian-rauc boot script: U-Boot hush, ONE text for both boards
# (QEMU `pc` with Debian's 32-bit qemu-x86 U-Boot ROM, QEMU `virt` arm64).
# build.sh compiles it: mkimage -A arm -O linux -T script -C none -d boot.cmd boot.scr
#
# U-Boot's stock distro boot finds boot.scr at the root of the first
# partition ("boot", FAT, legacy-bootable) and runs it with devtype, devnum
# and distro_bootpart set. Run by hand it falls back to virtio 0:1.
#
# A/B selection follows RAUC's documented U-Boot integration
# (https://rauc.readthedocs.io, Integration -> U-Boot):
#   BOOT_ORDER    slots in priority order ("A B" or "B A")
#   BOOT_A_LEFT   boot attempts left for slot A (0..3)
#   BOOT_B_LEFT   boot attempts left for slot B (0..3)
# The first slot in BOOT_ORDER with attempts left is chosen, its counter is
# decremented and the env is SAVED BEFORE the kernel starts, so a panic or
# a hang still costs an attempt. Linux (RAUC) resets the counter to 3 when it
# marks the booted slot good, and puts the new slot first after an install.
# When no slot has attempts left, both counters are reset and the board
# resets (what RAUC's example script does).
#
# The env is NOT U-Boot's own (neither board has a store for saveenv): it is
# the file uboot.env on this same FAT partition, a single-copy
# "CRC32 + data" blob of 0x4000 bytes (mkenvimage -s 0x4000), which Linux
# reads and writes with libubootenv (fw_printenv / fw_setenv) through
# /etc/fw_env.config = "/boot/firmware/uboot.env 0x0 0x4000".
#
# Pitfalls: x86 U-Boot has no `setexpr` (count down with an if/elif chain);
# x86 `zboot` needs the initrd above the kernel's decompression window
# (ramdisk_addr_r >= 0x8000000; the default 0x4000000 is inside it).

test -n "${devtype}" || setenv devtype virtio
test -n "${devnum}" || setenv devnum 0
test -n "${distro_bootpart}" || setenv distro_bootpart 1
setenv ex_bootdev "${devtype} ${devnum}:${distro_bootpart}"

# ---- read the shared env file (only our three variables are imported) ----
# kernel_addr_r is scratch space until the kernel is loaded there.
if fatload ${ex_bootdev} ${kernel_addr_r} uboot.env; then
    if env import -c ${kernel_addr_r} 0x4000 BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; then
        echo "example-boot: env from uboot.env: BOOT_ORDER=${BOOT_ORDER} BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT}"
    else
        echo "example-boot: uboot.env is corrupt (bad CRC), using defaults"
    fi
else
    echo "example-boot: no uboot.env, using defaults"
fi
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

# ---- choose the slot ----
setenv ex_slot
for ex_s in ${BOOT_ORDER}; do
    if test -z "${ex_slot}"; then
        if test "${ex_s}" = "A" && test ${BOOT_A_LEFT} -gt 0; then
            setenv ex_slot A
            setenv ex_left ${BOOT_A_LEFT}
        elif test "${ex_s}" = "B" && test ${BOOT_B_LEFT} -gt 0; then
            setenv ex_slot B
            setenv ex_left ${BOOT_B_LEFT}
        fi
    fi
done

if test -z "${ex_slot}"; then
    echo "example-boot: no slot has tries left (BOOT_ORDER=${BOOT_ORDER}), resetting both to 3"
    setenv BOOT_A_LEFT 3
    setenv BOOT_B_LEFT 3
    env export -c -s 0x4000 ${kernel_addr_r} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
    fatwrite ${ex_bootdev} ${kernel_addr_r} uboot.env 0x4000
    reset
fi

# ---- decrement (no setexpr on x86: lookup chain) ----
if test ${ex_left} -gt 3; then
    setenv ex_left 3
elif test ${ex_left} = 3; then
    setenv ex_left 2
elif test ${ex_left} = 2; then
    setenv ex_left 1
else
    setenv ex_left 0
fi
if test "${ex_slot}" = "A"; then
    setenv BOOT_A_LEFT ${ex_left}
    setenv ex_rootpart 2
    setenv ex_rootlabel rootfs.0
else
    setenv BOOT_B_LEFT ${ex_left}
    setenv ex_rootpart 3
    setenv ex_rootlabel rootfs.1
fi
echo "example-boot: slot ${ex_slot} tries left ${ex_left}"

# ---- save BEFORE booting ----
env export -c -s 0x4000 ${kernel_addr_r} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
if fatwrite ${ex_bootdev} ${kernel_addr_r} uboot.env 0x4000; then
    echo "example-boot: env saved"
else
    echo "example-boot: WARNING: could not save uboot.env"
fi

# ---- load kernel + initrd from the chosen slot (ext4, /boot inside the rootfs) ----
if test "${arch}" = "x86"; then
    setenv ramdisk_addr_r 0x8000000
    setenv ex_console ttyS0,115200
else
    setenv ex_console ttyAMA0,115200
fi
setenv ex_rootdev "${devtype} ${devnum}:${ex_rootpart}"
if load ${ex_rootdev} ${kernel_addr_r} /boot/vmlinuz; then
    setenv ex_ksize ${filesize}
else
    echo "example-boot: slot ${ex_slot}: cannot load /boot/vmlinuz"
    reset
fi
if load ${ex_rootdev} ${ramdisk_addr_r} /boot/initrd.img; then
    setenv ex_rdsize ${filesize}
else
    echo "example-boot: slot ${ex_slot}: cannot load /boot/initrd.img"
    reset
fi

# quiet: serial output is slow under emulation; the panic message is printed
# regardless (KERN_EMERG). panic=5: a kernel panic resets the board after
# 5 s, so a broken slot runs its counter down instead of hanging.
setenv bootargs "console=${ex_console} root=PARTLABEL=${ex_rootlabel} rootfstype=ext4 rootwait rw quiet rauc.slot=${ex_slot} panic=5"
echo "example-boot: booting slot ${ex_slot} (${ex_rootdev}): ${bootargs}"
if test "${arch}" = "x86"; then
    zboot ${kernel_addr_r} ${ex_ksize} ${ramdisk_addr_r} ${ex_rdsize}
else
    booti ${kernel_addr_r} ${ramdisk_addr_r}:${ex_rdsize} ${fdtcontroladdr}
fi
echo "example-boot: booting slot ${ex_slot} failed"
reset
