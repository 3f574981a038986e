// Package noderuntime is what kubelet does for this machine when virtkube
// runs as one binary: [Node] registers the machine and keeps it Ready, and
// [Runtime] runs the pods bound to it — launcher pods — as supervised
// processes.
//
// # Pods
//
// The runtime watches the pods whose spec.nodeName is its node. A pod gets
// its emptyDir, secret and persistentVolumeClaim volumes (a bound claim's
// hostPath or local volume of this node: a directory in Filesystem mode, a
// block device in Block mode; see claimSource), a network namespace and an
// address, then its init containers, one after the other, each to its end,
// then its containers:
//
//   - a container whose image starts with the launcher image prefix runs its
//     command from the virtkube binary's directory (/usr/bin/virt-launcher
//     becomes `bin/virt-launcher … --private-libvirt`, and
//     /usr/bin/container-disk bin/container-disk: programs of their own; a
//     name that is only a link to virtkube runs as its subcommand),
//     through nsenter in the pod's network namespace and in a mount namespace
//     of its own where the volumes are bound at their mount paths and, if
//     it has volumeDevices, its block devices at their device paths in a
//     /dev of its own (see privateDev);
//   - any other image is pulled into the image store (package image) and
//     must be a containerDisk; its container runs its command from one of
//     its volumes (the container-disk program, which the launcher image's
//     init container put there) on this machine's root, with the image's
//     disk file in $VIRTKUBE_CONTAINER_DISK_FILE, since image layers are
//     not assembled into a root here.
//
// A container's first process is a small shell (see containerScript) that
// sets up the mounts, runs the command as its child, forwards SIGTERM and
// records the exit code. A container that failed and whose
// terminationMessagePolicy is FallbackToLogsOnError gets, as with kubelet,
// the tail of its log as its termination message (its last 80 lines, at
// most 2048 bytes; see logTail), computed again from the same files after
// a restart. The pod's status is written through the pods/status
// subresource when it changes. Pods never restart containers
// (launcher pods have restartPolicy Never): when the launchers end, the pod
// is Succeeded or Failed and whatever its processes left is killed.
//
// Deleting a pod sends SIGTERM to each container's first process, then,
// after the grace period, SIGKILL to every process in the pod's network
// namespace (QEMU, daemonised by libvirt, is in no process group of ours);
// the pod's resources are removed and the deletion is confirmed with a zero
// grace period.
//
// # Layout
//
//	<kubelet-root>/pods/<uid>/
//	    pod.json                       namespace, name, grace period
//	    volumes/kubernetes.io~empty-dir/<volume>/
//	    containers/<container>/rootfs/<path>/   a launcher's scratch paths
//	    containers/<container>/dev/    where its private /dev is staged
//	    logs/<container>.log           stdout and stderr; its tail is a
//	                                   failed container's message
//	    <container>.pid                "<pid> <start time in ticks>"
//	    <container>.exit               "<code>[ <reason>]", once it ended
//	<kubelet-root>/ipam/<ip>           the UID of the pod holding <ip>
//	/run/netns/vk-<uid[:8]>            the pod's network namespace
//	vk<uid[:8]>                        host end of the pod's veth, on the
//	                                   bridge (virtkube0 by default, holding
//	                                   the podCIDR's first address);
//	                                   the pod's end is eth0
//
// Everything of a pod is named after its UID and found again from these
// files, so the runtime can restart at any time: it adopts processes that
// still run (a pid with the recorded start time), never starts a container
// twice, and removes what belongs to pods that are gone. It never kills a
// process because it restarted.
//
// # Not done yet
//
// No egress NAT (pods reach the host and each other, not beyond). Only
// emptyDir, secret and persistentVolumeClaim volumes (a Secret is written
// once, when the pod starts; volumeDevices under /dev only, and a
// read-only block claim is not enforced by the runtime; no hostPath,
// configMap, projected, downward API); init
// containers of the launcher image only; no hostNetwork, no probes, no
// container restarts, no terminationMessagePath file (a termination
// message comes from the log only: containers run on this machine's root,
// where kubelet's file at /dev/termination-log would be the host's), no
// /etc/hosts, /etc/resolv.conf or hostname of the
// pod's, no image garbage collection, IPv4 only.
package noderuntime
