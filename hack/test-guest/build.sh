#!/usr/bin/env bash
# Builds the virtkube test guest from Debian packages: a small raw BIOS disk
# image (MBR + one FAT partition with SYSLINUX, Debian's cloud kernel and a
# busybox-static initramfs whose /init is hack/test-guest/init), and the same
# kernel and initramfs on a bootable CD (ISO9660 with ISOLINUX, El Torito).
#
#   hack/test-guest/build.sh OUT_DIR
#
# Writes OUT_DIR/disk.img (raw), OUT_DIR/disk.qcow2, OUT_DIR/disk.iso, and,
# for direct kernel boot, OUT_DIR/vmlinuz and OUT_DIR/initrd.img. Run as root
# on Debian 12; safe to run again. hack/test-guest/verify.sh boots the results
# and checks them.
#
# The bootloaders load the kernel and initramfs through the BIOS, so the CD
# boots even from a bus the cloud kernel has no driver for (a SATA CD-ROM on
# q35); the guest then runs from its initramfs alone. Each bootloader adds
# virtkube.boot=disk or virtkube.boot=iso to the kernel command line, and /init
# prints it as "BOOTED-FROM disk" or "BOOTED-FROM iso".
set -euo pipefail

# Host tools, installed with apt-get when missing.
HOST_PACKAGES=(syslinux syslinux-common isolinux xorriso mtools dosfstools fdisk cpio gzip qemu-utils)
# Guest contents: fetched with `apt-get download` and unpacked into a scratch
# dir, never installed on the host (a kernel package would run initramfs hooks
# there, and busybox-static conflicts with busybox).
KERNEL_PACKAGE=linux-image-cloud-amd64 # meta package; resolved to the versioned one
BUSYBOX_PACKAGE="busybox-static"
# Modules /init loads; the initramfs also carries what they depend on. Debian's
# cloud kernel builds these drivers as modules, not into the kernel: without
# them the guest has no virtio disk or NIC, cannot read the cloud-init ISO
# (virtio-blk or virtio-scsi CD-ROM) and ignores the ACPI power button.
GUEST_MODULES=(virtio_pci virtio_blk virtio_net virtio_scsi sd_mod sr_mod cdrom isofs button evdev)
KERNEL_CMDLINE="console=ttyS0 quiet loglevel=4"
DISK_MIB=32 # whole image; the FAT partition starts at 1 MiB
ISO_VOLUME_ID=VIRTKUBE-TEST-GUEST

if [ $# -ne 1 ]; then
	echo "usage: $0 OUT_DIR" >&2
	exit 2
fi
out=$1
here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive
apt=(apt-get -o DPkg::Lock::Timeout=300 -qq)

# apt-get update (retried: another apt may hold the lists lock), then install
# the missing host tools.
for try in 1 2 3 4 5 6; do
	"${apt[@]}" update && break
	[ "$try" -lt 6 ] || exit 1
	sleep 5
done
missing=()
for p in "${HOST_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	"${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

tmp=$(mktemp -d -t virtkube-test-guest.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Download the guest packages. apt drops privileges to _apt for downloads, so
# give it a directory it may write.
mkdir -p "$tmp/debs"
chmod 755 "$tmp"
chown _apt "$tmp/debs" 2>/dev/null || true
kpkg=$(apt-cache depends --no-recommends "$KERNEL_PACKAGE" | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
[ -n "$kpkg" ] || { echo "build.sh: cannot resolve $KERNEL_PACKAGE" >&2; exit 1; }
(cd "$tmp/debs" && "${apt[@]}" download "$kpkg" "$BUSYBOX_PACKAGE")
mkdir -p "$tmp/kernel" "$tmp/busybox"
dpkg-deb -x "$tmp/debs/$kpkg"_*.deb "$tmp/kernel"
dpkg-deb -x "$tmp/debs/$BUSYBOX_PACKAGE"_*.deb "$tmp/busybox"
kver=${kpkg#linux-image-}
vmlinuz=$tmp/kernel/boot/vmlinuz-$kver
kmods=$tmp/kernel/lib/modules/$kver
busybox=$tmp/busybox/bin/busybox
[ -f "$vmlinuz" ] && [ -d "$kmods" ] && [ -x "$busybox" ]

# The package ships no modules.dep (its postinst runs depmod), so make one with
# busybox depmod. Its lines list every (transitive) dependency of a module.
"$busybox" depmod -b "$tmp/kernel" "$kver"

# The initramfs: busybox and its applet links, /init, the DHCP and ACPI
# scripts, and the modules with their dependencies.
root=$tmp/initramfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/acpi/PWRF,dev,proc,sys,run,tmp,root,lib/modules/"$kver"}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list-full); do
	[ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
install -m 755 "$here/init" "$root/init"
install -m 755 "$here/udhcpc.script" "$root/etc/udhcpc.script"
# busybox acpid turns KEY_POWER into the event PWRF/00000080 and runs the file of
# that name under its config dir.
cat >"$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
printf '\nGUEST-POWEROFF\n' >/dev/console
sync
poweroff -f
EOF
chmod 755 "$root/etc/acpi/PWRF/00000080"
mknod -m 600 "$root/dev/console" c 5 1 # stdio for /init before devtmpfs is mounted
echo "127.0.0.1 localhost" >"$root/etc/hosts"

loaded=()
for m in "${GUEST_MODULES[@]}"; do
	# modules.dep spells file names with "_" or "-" as the source does.
	line=$(grep -E "/(${m}|${m//_/-})\.ko:" "$kmods/modules.dep" | head -n 1 || true)
	if [ -z "$line" ]; then
		if grep -qE "/(${m}|${m//_/-})\.ko\$" "$kmods/modules.builtin"; then
			continue # built into the kernel: nothing to load
		fi
		echo "build.sh: module $m not found in $kpkg" >&2
		exit 1
	fi
	for f in ${line/:/}; do
		mkdir -p "$root/lib/modules/$kver/$(dirname "$f")"
		cp "$kmods/$f" "$root/lib/modules/$kver/$f"
	done
	loaded+=("$m")
done
cp "$kmods"/modules.builtin "$kmods"/modules.order "$root/lib/modules/$kver/"
"$busybox" depmod -b "$root" "$kver"
printf '%s\n' "${loaded[@]}" >"$root/etc/guest-modules"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -9n) >"$tmp/initrd.img"

# The boot partition: FAT16, made as a file and filled without mounting it:
# Debian's `syslinux` is the mtools flavour, which writes its boot sector and
# ldlinux.sys/ldlinux.c32 through mtools, and mcopy adds the kernel, initramfs
# and syslinux.cfg. -h 2048 records the partition's start sector (hidden
# sectors) in the boot sector, as the partition will start at sector 2048.
fat_kib=$(((DISK_MIB - 1) * 1024))
mkfs.fat -F 16 -h 2048 -n VIRTKUBE -C "$tmp/fat.img" "$fat_kib" >/dev/null
syslinux --install "$tmp/fat.img"
# bootloader_cfg MEDIUM: the SYSLINUX/ISOLINUX configuration (the same
# language) that boots the kernel on the serial console and tells /init
# which medium it came from.
bootloader_cfg() {
	cat <<EOF
SERIAL 0 115200
DEFAULT virtkube
PROMPT 0
TIMEOUT 0
LABEL virtkube
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND $KERNEL_CMDLINE virtkube.boot=$1
EOF
}
bootloader_cfg disk >"$tmp/syslinux.cfg"
export MTOOLS_SKIP_CHECK=1
mcopy -i "$tmp/fat.img" "$vmlinuz" ::vmlinuz
mcopy -i "$tmp/fat.img" "$tmp/initrd.img" ::initrd.img
mcopy -i "$tmp/fat.img" "$tmp/syslinux.cfg" ::syslinux.cfg

# The disk: an MBR partition table with one active FAT16 (LBA) partition at
# 1 MiB, SYSLINUX's MBR boot code (it chains to the active partition's boot
# sector), then the FAT image copied into place.
truncate -s "${DISK_MIB}M" "$tmp/disk.img"
printf 'label: dos\nstart=2048, type=e, bootable\n' | sfdisk -q "$tmp/disk.img"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$tmp/disk.img" bs=440 count=1 conv=notrunc status=none
dd if="$tmp/fat.img" of="$tmp/disk.img" bs=1M seek=1 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$tmp/disk.img" "$tmp/disk.qcow2"

# The CD: ISOLINUX (isolinux.bin from Debian's isolinux, its ldlinux.c32 from
# syslinux-common) as a no-emulation El Torito boot image. -boot-load-size 4
# is the 2 KiB the BIOS loads; -boot-info-table patches the CD's layout into
# isolinux.bin, which it needs to find the rest of itself.
iso_started=$(date +%s%N)
iso=$tmp/iso
mkdir -p "$iso/isolinux"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/isolinux/"
bootloader_cfg iso >"$iso/isolinux/isolinux.cfg"
cp "$vmlinuz" "$iso/vmlinuz"
cp "$tmp/initrd.img" "$iso/initrd.img"
# xorriso prints its banner on stderr even with -quiet: show it on failure only.
xorriso -as mkisofs -quiet -o "$tmp/disk.iso" -V "$ISO_VOLUME_ID" -r -J \
	-b isolinux/isolinux.bin -c isolinux/boot.cat \
	-no-emul-boot -boot-load-size 4 -boot-info-table "$iso" 2>"$tmp/xorriso.err" ||
	{ cat "$tmp/xorriso.err" >&2; exit 1; }
iso_ms=$((($(date +%s%N) - iso_started) / 1000000))

mkdir -p "$out"
for f in disk.img disk.qcow2 disk.iso initrd.img; do
	mv -f "$tmp/$f" "$out/$f"
done
cp -f "$vmlinuz" "$out/vmlinuz"
echo "test guest built from $kpkg $(dpkg-deb -f "$tmp/debs/$kpkg"_*.deb Version)" \
	"and $BUSYBOX_PACKAGE $(dpkg-deb -f "$tmp/debs/$BUSYBOX_PACKAGE"_*.deb Version):"
for f in disk.img disk.qcow2 disk.iso vmlinuz initrd.img; do
	printf '  %s (%s bytes)\n' "$out/$f" "$(stat -c %s "$out/$f")"
done
echo "  kernel command line: $KERNEL_CMDLINE virtkube.boot=disk|iso"
echo "  disk.iso made in $iso_ms ms"
