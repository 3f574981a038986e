package datavolume

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	"github.com/virtkube/virtkube/internal/cdi"
)

func dvWith(src *cdiv1.DataVolumeSource, storage string) *cdiv1.DataVolume {
	dv := &cdiv1.DataVolume{ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: "ns", UID: "u"}, Spec: cdiv1.DataVolumeSpec{Source: src}}
	if storage != "" {
		dv.Spec.Storage = &cdiv1.StorageSpec{Resources: corev1.VolumeResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(storage)}}}
	}
	return dv
}

func TestSourceKind(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  *cdiv1.DataVolumeSource
		want string
		err  string
	}{
		{"blank", &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}}, sourceBlank, ""},
		{"http", &cdiv1.DataVolumeSource{HTTP: &cdiv1.DataVolumeSourceHTTP{URL: "http://x/d.img"}}, sourceHTTP, ""},
		{"http without url", &cdiv1.DataVolumeSource{HTTP: &cdiv1.DataVolumeSourceHTTP{}}, "", "spec.source.http.url"},
		{"http with secret", &cdiv1.DataVolumeSource{HTTP: &cdiv1.DataVolumeSourceHTTP{URL: "http://x", SecretRef: "s"}}, "", "spec.source.http"},
		{"registry", &cdiv1.DataVolumeSource{Registry: &cdiv1.DataVolumeSourceRegistry{URL: ptr.To("docker://r/i")}}, sourceRegistry, ""},
		{"pvc", &cdiv1.DataVolumeSource{PVC: &cdiv1.DataVolumeSourcePVC{Name: "src"}}, sourcePVC, ""},
		{"upload", &cdiv1.DataVolumeSource{Upload: &cdiv1.DataVolumeSourceUpload{}}, sourceUpload, ""},
		{"s3", &cdiv1.DataVolumeSource{S3: &cdiv1.DataVolumeSourceS3{URL: "s3://b/k"}}, "", "Unsupported value"},
		{"two", &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}, Upload: &cdiv1.DataVolumeSourceUpload{}}, "", "exactly one source"},
		{"none", nil, "", "spec.source: Required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sourceKind(dvWith(tc.src, "1Gi"))
			if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("sourceKind = %q, %v; want %q, error containing %q", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestClaimFor(t *testing.T) {
	dv := dvWith(&cdiv1.DataVolumeSource{Upload: &cdiv1.DataVolumeSourceUpload{}}, "64Mi")
	dv.Spec.Storage.StorageClassName = ptr.To("hostpath-csi")
	pvc, err := claimFor(dv, sourceUpload, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Name != "d" || pvc.Namespace != "ns" || !metav1.IsControlledBy(pvc, dv) {
		t.Errorf("claim %s/%s owners %v: want d/ns controlled by the DataVolume", pvc.Namespace, pvc.Name, pvc.OwnerReferences)
	}
	if _, ok := pvc.Annotations[cdi.AnnUploadRequest]; !ok {
		t.Error("upload claim lacks the upload annotation")
	}
	if len(pvc.Spec.AccessModes) != 1 || pvc.Spec.AccessModes[0] != corev1.ReadWriteOnce || ptr.Deref(pvc.Spec.StorageClassName, "") != "hostpath-csi" {
		t.Errorf("claim spec = %+v", pvc.Spec)
	}
	if size, _ := claimSize(pvc); size != 64<<20 {
		t.Errorf("claim size %d, want 64Mi", size)
	}

	if _, err := claimFor(dvWith(&cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}}, ""), sourceBlank, nil); err == nil || !strings.Contains(err.Error(), "spec.pvc") {
		t.Errorf("no pvc/storage: err = %v, want one naming spec.pvc", err)
	}
	noSize := dvWith(&cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}}, "")
	noSize.Spec.Storage = &cdiv1.StorageSpec{}
	if _, err := claimFor(noSize, sourceBlank, nil); err == nil || !strings.Contains(err.Error(), "spec.storage.resources.requests.storage") {
		t.Errorf("no size: err = %v, want one naming spec.storage.resources.requests.storage", err)
	}
}

// A DataVolume's status writes (progress reports, a failed import's
// restart count) do not wake it; a change of its spec or labels does.
func TestStatusOnly(t *testing.T) {
	before := dvWith(&cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}}, "")
	before.ResourceVersion, before.Status.Progress = "1", "10.00%"
	progressed := before.DeepCopy()
	progressed.ResourceVersion, progressed.Status.Progress = "2", "20.00%"
	progressed.Status.RestartCount++
	if !statusOnly(before, progressed) {
		t.Error("a status write wakes the DataVolume")
	}
	respecced := before.DeepCopy()
	respecced.Spec.Source = &cdiv1.DataVolumeSource{HTTP: &cdiv1.DataVolumeSourceHTTP{URL: "http://x/disk.img"}}
	if statusOnly(before, respecced) {
		t.Error("a spec change is taken for a status write")
	}
	relabelled := before.DeepCopy()
	relabelled.Labels = map[string]string{"a": "b"}
	if statusOnly(before, relabelled) {
		t.Error("a label change is taken for a status write")
	}
}

// A clone into spec.storage that gives no size takes its source claim's:
// the capacity of a bound claim, else its request. spec.pvc must say.
func TestClaimForCloneSize(t *testing.T) {
	source := func(request, capacity string) *corev1.PersistentVolumeClaim {
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "golden", Name: "base"}}
		if request != "" {
			pvc.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(request)}
		}
		if capacity != "" {
			pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(capacity)}
		}
		return pvc
	}
	clone := &cdiv1.DataVolumeSource{PVC: &cdiv1.DataVolumeSourcePVC{Namespace: "golden", Name: "base"}}
	sizeless := func(dv *cdiv1.DataVolume) *cdiv1.DataVolume {
		dv.Spec.Storage = &cdiv1.StorageSpec{StorageClassName: ptr.To("hostpath-csi")}
		return dv
	}
	sizelessPVC := func(dv *cdiv1.DataVolume) *cdiv1.DataVolume {
		dv.Spec.PVC = &corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}}
		return dv
	}
	for _, tc := range []struct {
		name     string
		dv       *cdiv1.DataVolume
		source   *corev1.PersistentVolumeClaim
		wantSize string // "": an error naming wantErr
		wantErr  string
	}{
		{"bound source: its capacity", sizeless(dvWith(clone, "")), source("30Mi", "32Mi"), "32Mi", ""},
		{"unbound source: its request", sizeless(dvWith(clone, "")), source("30Mi", ""), "30Mi", ""},
		{"a size given wins", dvWith(clone, "64Mi"), source("30Mi", "32Mi"), "64Mi", ""},
		{"source without a size", sizeless(dvWith(clone, "")), source("", ""), "",
			"spec.storage.resources.requests.storage: Required value: the size of the disk: the source claim golden/base has neither"},
		{"spec.pvc must give one", sizelessPVC(dvWith(clone, "")), source("30Mi", "32Mi"), "",
			"spec.pvc.resources.requests.storage: Required"},
		{"not a clone", sizeless(dvWith(&cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}}, "")), nil, "",
			"spec.storage.resources.requests.storage: Required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind := sourcePVC
			if tc.dv.Spec.Source.Blank != nil {
				kind = sourceBlank
			}
			before := tc.dv.DeepCopy()
			pvc, err := claimFor(tc.dv, kind, tc.source)
			if tc.wantSize == "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := pvc.Spec.Resources.Requests[corev1.ResourceStorage], resource.MustParse(tc.wantSize); got.Cmp(want) != 0 {
				t.Errorf("claim requests %s, want %s", got.String(), tc.wantSize)
			}
			if !equality.Semantic.DeepEqual(before.Spec, tc.dv.Spec) {
				t.Errorf("the DataVolume's spec changed: %+v", tc.dv.Spec.Storage)
			}
			if ptr.Deref(pvc.Spec.StorageClassName, "") != ptr.Deref(tc.dv.Spec.Storage.StorageClassName, "") {
				t.Errorf("claim class %v, want the DataVolume's", pvc.Spec.StorageClassName)
			}
		})
	}
}
