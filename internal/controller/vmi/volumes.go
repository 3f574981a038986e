package vmi

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// claimVolumeStatus reports the claims of vmi's persistentVolumeClaim and
// ephemeral volumes in status.volumeStatus[].persistentVolumeClaimInfo, as
// KubeVirt's virt-controller does: the launcher pod has a claim in
// volumeMode Block as a device by it (see claimIsBlock), and the launcher
// sizes a blank claim's disk.img by it. A claim not there yet is left out
// until it is. No
// filesystemOverhead is reported: without CDI there is no configuration of
// it, and disk.img takes the whole capacity.
func (r *Reconciler) claimVolumeStatus(ctx context.Context, vmi *virtv1.VirtualMachineInstance) error {
	for _, v := range vmi.Spec.Volumes {
		claimName := claimOf(v)
		if claimName == "" {
			continue
		}
		pvc := &corev1.PersistentVolumeClaim{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: vmi.Namespace, Name: claimName}, pvc)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("get claim %s of volume %s: %w", claimName, v.Name, err)
		}
		setClaimInfo(&vmi.Status, v.Name, claimInfo(pvc))
	}
	return nil
}

// claimOf is the claim a VMI volume reads, "" for other kinds.
func claimOf(v virtv1.Volume) string {
	switch {
	case v.PersistentVolumeClaim != nil:
		return v.PersistentVolumeClaim.ClaimName
	case v.Ephemeral != nil && v.Ephemeral.PersistentVolumeClaim != nil:
		return v.Ephemeral.PersistentVolumeClaim.ClaimName
	case v.DataVolume != nil:
		return v.DataVolume.Name
	}
	return ""
}

func claimInfo(pvc *corev1.PersistentVolumeClaim) *virtv1.PersistentVolumeClaimInfo {
	return &virtv1.PersistentVolumeClaimInfo{
		ClaimName:   pvc.Name,
		AccessModes: pvc.Spec.AccessModes,
		VolumeMode:  pvc.Spec.VolumeMode,
		Capacity:    pvc.Status.Capacity,
		Requests:    pvc.Spec.Resources.Requests,
	}
}

// setClaimInfo puts info on the volumeStatus entry of volume, adding the
// entry when there is none; what others wrote on the entry stays.
func setClaimInfo(status *virtv1.VirtualMachineInstanceStatus, volume string, info *virtv1.PersistentVolumeClaimInfo) {
	for i := range status.VolumeStatus {
		if status.VolumeStatus[i].Name == volume {
			status.VolumeStatus[i].PersistentVolumeClaimInfo = info
			return
		}
	}
	status.VolumeStatus = append(status.VolumeStatus, virtv1.VolumeStatus{Name: volume, PersistentVolumeClaimInfo: info})
}
