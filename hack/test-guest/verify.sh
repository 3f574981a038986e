#!/usr/bin/env bash
# Boots the test guest made by build.sh under QEMU (TCG, q35, SeaBIOS) and
# checks what end-to-end tests rely on. Exits non-zero on the first failure.
#
#   hack/test-guest/verify.sh OUT_DIR
#
# Boot 1: OUT_DIR/disk.img, a NoCloud ISO (label cidata) as a second virtio
#   disk, slirp networking with a port forward: ready marker, user-data and
#   marker, block devices, DHCP address, HTTP body, serial shell, and
#   QMP system_powerdown making QEMU exit.
# Boot 2: OUT_DIR/disk.qcow2, a ConfigDrive ISO (label config-2) as a
#   virtio-scsi CD-ROM, a NIC on a network without DHCP server: udhcpc keeps
#   trying in the background.
# Boot 3: OUT_DIR/vmlinuz + initrd.img by direct kernel boot, no disks, no NIC.
# Boot 4: OUT_DIR/disk.iso as a SATA CD-ROM (bootindex 2) behind an empty
#   sparse virtio disk (bootindex 1), an e1000 NIC: SeaBIOS finds no boot
#   sector on the disk, boots the CD's ISOLINUX, and the guest runs from its
#   initramfs (the cloud kernel has no SATA or e1000 driver).
#
# BOOT_TIMEOUT (default 120 s) bounds each wait for the ready marker,
# STEP_TIMEOUT (default 60 s) each later wait. Waits poll the serial log.
set -euo pipefail

HOST_PACKAGES=(qemu-system-x86 genisoimage curl socat)
BOOT_TIMEOUT=${BOOT_TIMEOUT:-120}
STEP_TIMEOUT=${STEP_TIMEOUT:-60}

if [ $# -ne 1 ]; then
	echo "usage: $0 OUT_DIR" >&2
	exit 2
fi
out=$(cd "$1" && pwd)
for f in disk.img disk.qcow2 disk.iso vmlinuz initrd.img; do
	[ -f "$out/$f" ] || { echo "verify: $out/$f is missing; run build.sh first" >&2; exit 1; }
done

missing=()
for p in "${HOST_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=300 -qq update
	apt-get -o DPkg::Lock::Timeout=300 -qq install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

tmp=$(mktemp -d -t virtkube-test-guest-verify.XXXXXX)
qemu_pid=
log=
cleanup() {
	if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
		kill "$qemu_pid" 2>/dev/null || true
		wait "$qemu_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
	echo "verify: FAIL: $*" >&2
	if [ -n "$log" ] && [ -f "$log" ]; then
		echo "--- serial console:" >&2
		tr -d '\r' <"$log" >&2
		echo "--- qemu stderr:" >&2
		cat "${log%.log}.err" >&2
	fi
	exit 1
}
ok() { echo "verify: ok: $*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# boot NAME QEMU_ARGS...: start QEMU in the background with the serial console
# on stdio: output to $log, input from a FIFO kept open on fd 3.
boot() {
	local name=$1
	shift
	log=$tmp/$name.log
	qmp=$tmp/$name.qmp
	mkfifo "$tmp/$name.in"
	exec 3<>"$tmp/$name.in"
	: >"$log" # exists before the background job opens it, for the first poll
	started=$(now_ms)
	qemu-system-x86_64 -machine q35 -accel tcg -m 128 -nodefaults -no-user-config \
		-display none -serial stdio -qmp "unix:$qmp,server=on,wait=off" "$@" \
		<&3 >"$log" 2>"$tmp/$name.err" &
	qemu_pid=$!
}

# console_has REGEX: the serial log has a whole line matching the extended REGEX.
console_has() { tr -d '\r' <"$log" | grep -Eqx -- "$1"; }

# wait_line REGEX TIMEOUT: poll the serial log until console_has REGEX.
wait_line() {
	local deadline=$(($(now_ms) + $2 * 1000))
	until console_has "$1"; do
		kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited before the console showed /$1/"
		[ "$(now_ms)" -lt "$deadline" ] || fail "no console line /$1/ within $2 s"
		sleep 0.2
	done
}

# wait_prompt: the console shows the shell's prompt (not a whole line).
wait_prompt() {
	local deadline=$(($(now_ms) + STEP_TIMEOUT * 1000))
	until grep -q 'guest# ' "$log"; do
		[ "$(now_ms)" -lt "$deadline" ] || fail "no shell prompt on the console"
		sleep 0.2
	done
}

wait_ready() {
	wait_line VIRTKUBE-TEST-GUEST-READY "$BOOT_TIMEOUT"
	ok "$1: VIRTKUBE-TEST-GUEST-READY $(($(now_ms) - started)) ms after QEMU started"
}

# expect_user_data FILE: the USER-DATA-BEGIN/-END block equals FILE.
expect_user_data() {
	tr -d '\r' <"$log" | awk '/^USER-DATA-END$/ { p = 0 } p { print } /^USER-DATA-BEGIN$/ { p = 1 }' >"$tmp/got-user-data"
	cmp -s "$1" "$tmp/got-user-data" || fail "user-data printed differs from $1"
	ok "user-data printed between USER-DATA-BEGIN and USER-DATA-END"
}

expect_line() {
	console_has "$1" || fail "no console line /$1/"
	ok "console: $1"
}

# powerdown: QMP system_powerdown; the guest must power off and QEMU exit.
powerdown() {
	printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"system_powerdown"}' |
		socat -t 5 - "UNIX-CONNECT:$qmp" >"$tmp/qmp.out" || fail "QMP connection failed"
	grep -q '"event": *"POWERDOWN"' "$tmp/qmp.out" || fail "QMP did not accept system_powerdown: $(cat "$tmp/qmp.out")"
	wait_line GUEST-POWEROFF "$STEP_TIMEOUT"
	local deadline=$(($(now_ms) + STEP_TIMEOUT * 1000))
	while kill -0 "$qemu_pid" 2>/dev/null; do
		[ "$(now_ms)" -lt "$deadline" ] || fail "QEMU still runs $STEP_TIMEOUT s after system_powerdown"
		sleep 0.2
	done
	local rc=0
	wait "$qemu_pid" || rc=$?
	qemu_pid=
	exec 3>&-
	[ "$rc" -eq 0 ] || fail "QEMU exited with status $rc after the guest powered off"
	ok "system_powerdown: guest printed GUEST-POWEROFF and QEMU exited"
}

# --- Boot 1: NoCloud, raw disk, slirp network --------------------------------
mkdir -p "$tmp/nocloud"
printf '#cloud-config\nvirtkube-marker: hello-42\nruncmd:\n  - echo hi\n' >"$tmp/nocloud/user-data"
printf 'instance-id: verify-1\nlocal-hostname: verify-nocloud\n' >"$tmp/nocloud/meta-data"
printf 'version: 2\nethernets:\n  eth0:\n    dhcp4: true\n' >"$tmp/nocloud/network-config"
genisoimage -quiet -o "$tmp/nocloud.iso" -V cidata -J -r \
	"$tmp/nocloud/user-data" "$tmp/nocloud/meta-data" "$tmp/nocloud/network-config"
port=${VERIFY_HTTP_PORT:-$((20000 + RANDOM % 20000))}

boot nocloud \
	-drive "file=$out/disk.img,if=virtio,format=raw" \
	-drive "file=$tmp/nocloud.iso,if=virtio,format=raw,readonly=on" \
	-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:80" -device virtio-net-pci,netdev=n0
wait_ready nocloud
expect_line 'BOOTED-FROM disk'
wait_line 'BLOCKDEV vdb [0-9]+' "$STEP_TIMEOUT"
expect_line 'CLOUD-INIT nocloud /dev/vdb'
expect_user_data "$tmp/nocloud/user-data"
expect_line 'VIRTKUBE-MARKER: hello-42'
expect_line 'NETWORK-CONFIG-BEGIN'
expect_line "BLOCKDEV vda $(stat -c %s "$out/disk.img")"
expect_line "BLOCKDEV vdb $(stat -c %s "$tmp/nocloud.iso")"
wait_line 'GUEST-IP 10\.0\.2\.15' "$STEP_TIMEOUT"
ok "console: GUEST-IP 10.0.2.15 $(($(now_ms) - started)) ms after QEMU started"

deadline=$(($(now_ms) + STEP_TIMEOUT * 1000))
until body=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/" 2>/dev/null && echo x); do
	[ "$(now_ms)" -lt "$deadline" ] || fail "no HTTP answer on 127.0.0.1:$port within $STEP_TIMEOUT s"
	sleep 0.5
done
[ "$body" = $'virtkube test guest\nx' ] || fail "HTTP body is $(printf %q "${body%x}")"
ok "HTTP / body is exactly 'virtkube test guest\\n'"
hn=$(curl -fsS --max-time 5 "http://127.0.0.1:$port/hostname") || fail "no HTTP /hostname"
[ "$hn" = verify-nocloud ] || fail "HTTP /hostname is '$hn', want verify-nocloud (from meta-data)"
ok "HTTP /hostname is the meta-data local-hostname"

# The shell on the serial console: wait for its prompt, then type a command.
wait_prompt
# shellcheck disable=SC2016 # expanded by the guest's shell
printf 'echo SHELL-$((6 * 7))\n' >&3
wait_line SHELL-42 "$STEP_TIMEOUT"
ok "serial console shell runs commands"
powerdown

# --- Boot 2: ConfigDrive on a virtio-scsi CD-ROM, qcow2 disk, no DHCP ---------
mkdir -p "$tmp/configdrive/openstack/latest"
printf '#cloud-config\nvirtkube-marker: hello-configdrive\n' >"$tmp/configdrive/openstack/latest/user_data"
printf '{"uuid": "verify-2", "hostname": "verify-configdrive"}\n' >"$tmp/configdrive/openstack/latest/meta_data.json"
genisoimage -quiet -o "$tmp/configdrive.iso" -V config-2 -J -r "$tmp/configdrive"

boot configdrive \
	-drive "file=$out/disk.qcow2,if=virtio,format=qcow2,snapshot=on" \
	-device virtio-scsi-pci,id=scsi0 \
	-drive "file=$tmp/configdrive.iso,if=none,id=cd0,format=raw,readonly=on,media=cdrom" \
	-device scsi-cd,bus=scsi0.0,drive=cd0 \
	-netdev hubport,id=n0,hubid=0 -device virtio-net-pci,netdev=n0
wait_ready configdrive
wait_line 'BLOCKDEV sr0 [0-9]+' "$STEP_TIMEOUT"
expect_line 'CLOUD-INIT configdrive /dev/sr0'
expect_user_data "$tmp/configdrive/openstack/latest/user_data"
expect_line 'VIRTKUBE-MARKER: hello-configdrive'
wait_prompt
# shellcheck disable=SC2016 # expanded by the guest's shell
printf 'echo UDHCPC-RUNNING-$(pidof udhcpc | wc -w)\n' >&3
wait_line UDHCPC-RUNNING-1 "$STEP_TIMEOUT"
console_has 'GUEST-IP .*' && fail "GUEST-IP printed with no DHCP server"
ok "no DHCP server: no GUEST-IP, udhcpc still trying, shell usable"
powerdown

# --- Boot 3: direct kernel boot, nothing attached -----------------------------
boot direct -kernel "$out/vmlinuz" -initrd "$out/initrd.img" -append "console=ttyS0 quiet loglevel=4"
wait_ready direct
wait_line NO-NETWORK "$STEP_TIMEOUT"
expect_line NO-CLOUD-INIT
console_has 'BLOCKDEV .*' && fail "block devices listed with no disk attached"
ok "console: no BLOCKDEV lines"
ok "console: NO-NETWORK"
console_has 'BOOTED-FROM .*' && fail "BOOTED-FROM printed for a direct kernel boot"
ok "console: no BOOTED-FROM line"
powerdown

# --- Boot 4: the CD on SATA behind an empty disk, as the seed's win10 VM -------
truncate -s 50G "$tmp/empty.img"
boot iso \
	-smp 2 \
	-drive "file=$tmp/empty.img,if=none,id=hd0,format=raw" \
	-device virtio-blk-pci,drive=hd0,bootindex=1 \
	-drive "file=$out/disk.iso,if=none,id=cd0,format=raw,readonly=on,media=cdrom" \
	-device ide-cd,bus=ide.0,drive=cd0,bootindex=2 \
	-netdev hubport,id=n0,hubid=0 -device e1000,netdev=n0
wait_ready iso
expect_line 'BOOTED-FROM iso'
console_has 'ISOLINUX .*' || fail "no ISOLINUX banner on the console"
ok "console: ISOLINUX banner"
wait_line NO-NETWORK "$STEP_TIMEOUT"
expect_line "BLOCKDEV vda $(stat -c %s "$tmp/empty.img")"
console_has 'BLOCKDEV s[dr].*' && fail "a SATA device is listed, but the cloud kernel has no SATA driver"
ok "console: only the empty virtio disk is listed"
wait_prompt
# shellcheck disable=SC2016 # expanded by the guest's shell
printf 'echo ISO-SHELL-$((6 * 7))\n' >&3
wait_line ISO-SHELL-42 "$STEP_TIMEOUT"
ok "serial console shell runs commands"
powerdown

echo "verify: all checks passed"
