package virtctl

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/virtkube/virtkube/internal/cdi"
)

func TestRenderBar(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		want        string
	}{
		{0, 10 << 20, " 0 B / 10.00 MiB [>                                       ] 0.00% 0s"},
		{5 << 20, 10 << 20, " 5.00 MiB / 10.00 MiB [====================>                   ] 50.00% 0s"},
		{10 << 20, 10 << 20, " 10.00 MiB / 10.00 MiB [========================================] 100.00% 0s"},
		{3 << 30, 6 << 30, " 3.00 GiB / 6.00 GiB [====================>                   ] 50.00% 0s"},
	} {
		if got := renderBar(tc.done, tc.total, 0*time.Second); got != tc.want {
			t.Errorf("renderBar(%d, %d) = %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
}

func TestUploadTarget(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		pvcName   string
		kind, nm  string
		wantError bool
	}{
		{args: []string{"dv", "up"}, kind: "dv", nm: "up"},
		{args: []string{"PVC", "up"}, kind: "pvc", nm: "up"},
		{pvcName: "iso-win10", kind: "pvc", nm: "iso-win10"},
		{args: []string{"vm", "x"}, wantError: true},
		{wantError: true},
	} {
		kind, name, err := uploadTarget(tc.args, tc.pvcName)
		if (err != nil) != tc.wantError || kind != tc.kind || name != tc.nm {
			t.Errorf("uploadTarget(%v, %q) = %q, %q, %v", tc.args, tc.pvcName, kind, name, err)
		}
	}
}

// Flags of KubeVirt's image-upload: a bad value names the flag and what
// it may be, and a flag virtkube does not serve says so rather than
// "unknown flag"; none of them reaches the server.
func TestImageUploadFlagErrors(t *testing.T) {
	s := newFakeAPIServer(t)
	image := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(image, []byte("disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--access-mode", "ReadWriteOnly"}, `--access-mode "ReadWriteOnly": want one of ReadWriteOnce, ReadOnlyMany, ReadWriteMany`},
		{[]string{"--volume-mode", "raw"}, `--volume-mode "raw": want filesystem or block`},
		{[]string{"--volume-mode", "block"}, "--volume-mode block is not supported by virtkube"},
		{[]string{"--block-volume"}, "--block-volume is not supported by virtkube"},
		{[]string{"--archive-path", "a.tar"}, "--archive-path is not supported by virtkube: uploading a tar archive"},
		{[]string{"--datasource"}, "--datasource is not supported by virtkube"},
		{[]string{"--default-instancetype", "u1.small"}, "--default-instancetype is not supported by virtkube"},
		{[]string{"--default-preference-kind", "VirtualMachinePreference"}, "--default-preference-kind is not supported by virtkube"},
	} {
		args := append([]string{"image-upload", "dv", "up", "--size", "1Gi", "--image-path", image}, tc.args...)
		if tc.args[0] == "--datasource" {
			args = append(args, "fedora")
		}
		res := s.run(context.Background(), nil, args...)
		if res.err == nil || !strings.Contains(res.err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, res.err, tc.want)
		}
	}
	res := s.run(context.Background(), nil, "image-upload", "dv", "up", "--size", "1Gi")
	if res.err == nil || !strings.Contains(res.err.Error(), "--image-path is required") {
		t.Errorf("no --image-path: error %v", res.err)
	}
	if n := len(s.seen()); n != 0 {
		t.Errorf("%d requests reached the server, want none", n)
	}
}

// --access-mode, --volume-mode filesystem and --force-bind shape the
// DataVolume (or claim) image-upload creates.
func TestImageUploadCreatesWithFlags(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := cdi.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	o := &uploadOptions{size: "1Gi", accessMode: "ReadOnlyMany", volumeMode: "filesystem", forceBind: true}
	if err := o.validate(pflag.NewFlagSet("x", pflag.ContinueOnError)); err == nil {
		t.Error("validate passed without --image-path")
	}
	o.imagePath = "disk.img"
	if err := o.validate(pflag.NewFlagSet("x", pflag.ContinueOnError)); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"dv", "pvc"} {
		kc := fake.NewClientBuilder().WithScheme(scheme).Build()
		key := crclient.ObjectKey{Namespace: "ns", Name: "up"}
		if err := o.create(context.Background(), kc, kind, key, io.Discard); err != nil {
			t.Fatal(err)
		}
		var (
			modes       []corev1.PersistentVolumeAccessMode
			mode        *corev1.PersistentVolumeMode
			annotations map[string]string
		)
		if kind == "dv" {
			dv := &cdiv1.DataVolume{}
			if err := kc.Get(context.Background(), key, dv); err != nil {
				t.Fatal(err)
			}
			modes, mode, annotations = dv.Spec.Storage.AccessModes, dv.Spec.Storage.VolumeMode, dv.Annotations
		} else {
			pvc := &corev1.PersistentVolumeClaim{}
			if err := kc.Get(context.Background(), key, pvc); err != nil {
				t.Fatal(err)
			}
			modes, mode, annotations = pvc.Spec.AccessModes, pvc.Spec.VolumeMode, pvc.Annotations
			if _, ok := annotations[cdi.AnnUploadRequest]; !ok {
				t.Errorf("pvc: annotations %v, want the upload request", annotations)
			}
		}
		if len(modes) != 1 || modes[0] != corev1.ReadOnlyMany || mode == nil || *mode != corev1.PersistentVolumeFilesystem {
			t.Errorf("%s: accessModes %v, volumeMode %v; want [ReadOnlyMany], Filesystem", kind, modes, mode)
		}
		if annotations["cdi.kubevirt.io/storage.bind.immediate.requested"] != "true" {
			t.Errorf("%s: annotations %v, want the bind-immediate request", kind, annotations)
		}
	}
}
