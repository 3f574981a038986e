package webhook

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/yaml"

	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// dataVolume reads a DataVolume from YAML, as a user writes it.
func dataVolume(t *testing.T, spec string) *cdiv1.DataVolume {
	t.Helper()
	dv := &cdiv1.DataVolume{}
	if err := yaml.UnmarshalStrict([]byte("metadata: {name: disk, namespace: a}\nspec:\n"+spec), dv); err != nil {
		t.Fatal(err)
	}
	return dv
}

func TestValidateDataVolume(t *testing.T) {
	const size = "  pvc: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n"
	for _, tc := range []struct {
		name, spec string
		want       []string // field paths and words of each error; none: valid
	}{
		{"blank", "  source: {blank: {}}\n" + size, nil},
		{"http", "  source: {http: {url: 'https://example.com/disk.qcow2'}}\n" + size, nil},
		{"registry", "  source: {registry: {url: 'docker://quay.io/containerdisks/fedora:latest'}}\n" + size, nil},
		{"oci archive", "  source: {registry: {url: 'oci-archive:///images/disk.tar'}}\n" + size, nil},
		{"upload into storage", "  source: {upload: {}}\n  storage: {resources: {requests: {storage: 64Mi}}}\n", nil},
		{"clone", "  source: {pvc: {namespace: b, name: golden}}\n" + size, nil},
		{"sizeless clone into storage", "  source: {pvc: {namespace: b, name: golden}}\n  storage: {}\n", nil},
		{"sourceRef", "  sourceRef: {kind: DataSource, name: fedora}\n" + size, nil},

		{"no source", size, []string{"spec.source: Required"}},
		{"empty source", "  source: {}\n" + size, []string{"spec.source: Required"}},
		{"two sources", "  source: {blank: {}, http: {url: 'http://example.com/d.img'}}\n" + size,
			[]string{"spec.source: Invalid", "blank, http", "exactly one"}},
		{"source and sourceRef", "  source: {blank: {}}\n  sourceRef: {kind: DataSource, name: x}\n" + size,
			[]string{"spec.sourceRef: Invalid", "not both"}},
		{"sourceRef kind", "  sourceRef: {kind: PersistentVolumeClaim, name: x}\n" + size,
			[]string{"spec.sourceRef.kind: Unsupported value", `"DataSource"`}},
		{"no target", "  source: {blank: {}}\n", []string{"spec.pvc: Required", "spec.storage"}},
		{"pvc and storage", "  source: {blank: {}}\n" + size + "  storage: {resources: {requests: {storage: 1Gi}}}\n",
			[]string{"spec.storage: Invalid", "only one of spec.pvc and spec.storage"}},
		{"pvc without size", "  source: {blank: {}}\n  pvc: {accessModes: [ReadWriteOnce]}\n",
			[]string{"spec.pvc.resources.requests.storage: Required"}},
		{"storage without size", "  source: {http: {url: 'http://example.com/d.img'}}\n  storage: {}\n",
			[]string{"spec.storage.resources.requests.storage: Required"}},
		{"clone into pvc without size", "  source: {pvc: {namespace: b, name: golden}}\n  pvc: {}\n",
			[]string{"spec.pvc.resources.requests.storage: Required"}},
		{"zero size", "  source: {blank: {}}\n  storage: {resources: {requests: {storage: '0'}}}\n",
			[]string{"spec.storage.resources.requests.storage: Invalid", "greater than zero"}},
		{"access mode", "  source: {blank: {}}\n  pvc: {accessModes: [ReadWriteOncePod], resources: {requests: {storage: 1Gi}}}\n",
			[]string{"spec.pvc.accessModes[0]: Unsupported value", `"ReadWriteOnce"`}},
		{"http url not a url", "  source: {http: {url: 'disk.qcow2'}}\n" + size,
			[]string{"spec.source.http.url: Invalid", "http://"}},
		{"http url scheme", "  source: {http: {url: 'ftp://example.com/disk.qcow2'}}\n" + size,
			[]string{"spec.source.http.url: Invalid", `"ftp"`}},
		{"registry url scheme", "  source: {registry: {url: 'quay.io/containerdisks/fedora'}}\n" + size,
			[]string{"spec.source.registry.url: Invalid", "docker://", "oci-archive://"}},
		{"registry http", "  source: {registry: {url: 'https://quay.io/containerdisks/fedora'}}\n" + size,
			[]string{"spec.source.registry.url: Invalid"}},
		{"registry without url", "  source: {registry: {}}\n" + size, []string{"spec.source.registry.url: Required"}},
		{"registry pull method", "  source: {registry: {url: 'docker://x/y', pullMethod: cache}}\n" + size,
			[]string{"spec.source.registry.pullMethod: Unsupported value", `"node"`}},
		{"registry archive", "  source: {registry: {url: 'docker://x/y'}}\n  contentType: archive\n" + size,
			[]string{"spec.contentType: Unsupported value"}},
		{"clone without name", "  source: {pvc: {namespace: b, name: ''}}\n" + size, []string{"spec.source.pvc.name: Required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := ValidateDataVolume(dataVolume(t, tc.spec))
			got := errs.ToAggregate()
			if len(tc.want) == 0 {
				if got != nil {
					t.Fatalf("refused: %v", got)
				}
				return
			}
			if got == nil {
				t.Fatalf("admitted, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(got.Error(), w) {
					t.Errorf("error %q does not say %q", got, w)
				}
			}
		})
	}
}

func TestValidateDataVolumeUpdate(t *testing.T) {
	old := dataVolume(t, "  source: {http: {url: 'http://example.com/a.img'}}\n  storage: {resources: {requests: {storage: 1Gi}}}\n")
	same := old.DeepCopy()
	same.Labels = map[string]string{"changed": "metadata"}
	if errs := ValidateDataVolumeUpdate(old, same); len(errs) > 0 {
		t.Errorf("a metadata change is refused: %v", errs)
	}
	moved := old.DeepCopy()
	moved.Spec.Source.HTTP.URL = "http://example.com/b.img"
	errs := ValidateDataVolumeUpdate(old, moved)
	if len(errs) != 1 || errs[0].Field != "spec.source" || !strings.Contains(errs[0].Error(), "cannot change") {
		t.Errorf("a new source gives %v, want one Forbidden on spec.source", errs)
	}

	vddk := dataVolume(t, "  source: {vddk: {url: 'https://vc', uuid: u, backingFile: f, thumbprint: t, secretRef: s}}\n"+
		"  checkpoints: [{previous: '', current: c1}]\n  storage: {resources: {requests: {storage: 1Gi}}}\n")
	next := vddk.DeepCopy()
	next.Spec.Checkpoints = append(next.Spec.Checkpoints, cdiv1.DataVolumeCheckpoint{Previous: "c1", Current: "c2"})
	next.Spec.FinalCheckpoint = true
	if errs := ValidateDataVolumeUpdate(vddk, next); len(errs) > 0 {
		t.Errorf("a multi-stage import cannot add a checkpoint: %v", errs)
	}
}

// reviewer is an AccessReviewer that allows what allow lists (as
// "verb group/resource/subresource ns") and records what it was asked.
type reviewer struct {
	allow []string
	asked []authorizationv1.SubjectAccessReviewSpec
	err   error
}

func (r *reviewer) review(_ context.Context, spec authorizationv1.SubjectAccessReviewSpec) (bool, error) {
	r.asked = append(r.asked, spec)
	if r.err != nil {
		return false, r.err
	}
	a := spec.ResourceAttributes
	key := a.Verb + " " + a.Group + "/" + a.Resource + "/" + a.Subresource + " " + a.Namespace
	for _, k := range r.allow {
		if k == key {
			return true, nil
		}
	}
	return false, nil
}

func TestAuthorizeClone(t *testing.T) {
	bob := authenticationv1.UserInfo{Username: "bob", Groups: []string{"system:authenticated"},
		Extra: map[string]authenticationv1.ExtraValue{"scopes": {"x"}}}
	const size = "  storage: {resources: {requests: {storage: 1Gi}}}\n"
	for _, tc := range []struct {
		name, spec string
		allow      []string
		wantAsked  int
		refused    bool
	}{
		{"not a clone", "  source: {blank: {}}\n" + size, nil, 0, false},
		{"same namespace", "  source: {pvc: {namespace: a, name: golden}}\n" + size, nil, 0, false},
		{"namespace left empty is the DataVolume's", "  source: {pvc: {namespace: '', name: golden}}\n" + size, nil, 0, false},
		{"other namespace, no permission", "  source: {pvc: {namespace: b, name: golden}}\n" + size, nil, 2, true},
		{"other namespace, datavolumes/source", "  source: {pvc: {namespace: b, name: golden}}\n" + size,
			[]string{"create cdi.kubevirt.io/datavolumes/source b"}, 1, false},
		{"other namespace, pods", "  source: {pvc: {namespace: b, name: golden}}\n" + size,
			[]string{"create /pods/ b"}, 2, false},
		{"permission in the wrong namespace", "  source: {pvc: {namespace: b, name: golden}}\n" + size,
			[]string{"create cdi.kubevirt.io/datavolumes/source a"}, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &reviewer{allow: tc.allow}
			ferr, err := AuthorizeClone(context.Background(), dataVolume(t, tc.spec), "a", bob, r.review)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.asked) != tc.wantAsked {
				t.Errorf("asked %d reviews, want %d", len(r.asked), tc.wantAsked)
			}
			for _, s := range r.asked {
				if s.User != "bob" || len(s.Groups) != 1 || s.Extra["scopes"][0] != "x" || s.ResourceAttributes.Name != "golden" {
					t.Errorf("review asked about %+v, want bob's groups and extra, for claim golden", s)
				}
			}
			if (ferr != nil) != tc.refused {
				t.Fatalf("refused: %v, want %v", ferr, tc.refused)
			}
			if ferr == nil {
				return
			}
			for _, w := range []string{"spec.source.pvc: Forbidden", "User bob", "clone source namespace b", "create datavolumes/source"} {
				if !strings.Contains(ferr.Error(), w) {
					t.Errorf("error %q does not say %q", ferr, w)
				}
			}
		})
	}

	r := &reviewer{err: errors.New("apiserver down")}
	if _, err := AuthorizeClone(context.Background(), dataVolume(t, "  source: {pvc: {namespace: b, name: golden}}\n"+size), "a", bob, r.review); err == nil {
		t.Error("a failed review let the clone through")
	}
}

// vmWithTemplates reads a VM in namespace a from YAML, its
// spec.dataVolumeTemplates as given.
func vmWithTemplates(t *testing.T, templates string) *virtv1.VirtualMachine {
	t.Helper()
	vm := &virtv1.VirtualMachine{}
	if err := yaml.UnmarshalStrict([]byte("metadata: {name: vm, namespace: a}\nspec:\n  dataVolumeTemplates:\n"+templates), vm); err != nil {
		t.Fatal(err)
	}
	return vm
}

func TestAuthorizeDataVolumeTemplates(t *testing.T) {
	const (
		blank     = "  - {metadata: {name: scratch}, spec: {source: {blank: {}}, storage: {resources: {requests: {storage: 1Gi}}}}}\n"
		withinA   = "  - {metadata: {name: copy}, spec: {source: {pvc: {namespace: a, name: golden}}, storage: {}}}\n"
		fromB     = "  - {metadata: {name: root}, spec: {source: {pvc: {namespace: b, name: golden}}, storage: {}}}\n"
		fromBToo  = "  - {metadata: {name: root}, spec: {source: {pvc: {namespace: b, name: other}}, storage: {}}}\n"
		fromC     = "  - {metadata: {name: data}, spec: {source: {pvc: {namespace: c, name: golden}}, storage: {}}}\n"
		elsewhere = "  - {metadata: {name: root, namespace: b}, spec: {source: {blank: {}}, storage: {}}}\n"
		sourceB   = "create cdi.kubevirt.io/datavolumes/source b"
	)
	for _, tc := range []struct {
		name           string
		templates, old string // old "": a create
		allow          []string
		wantAsked      int
		want           []string // the field paths refused, in order
	}{
		{"no clone", blank, "", nil, 0, nil},
		{"clone within the namespace", withinA, "", nil, 0, nil},
		{"clone from b, no permission", blank + fromB, "", nil, 2,
			[]string{"spec.dataVolumeTemplates[1].spec.source.pvc"}},
		{"clone from b, datavolumes/source there", fromB, "", []string{sourceB}, 1, nil},
		{"two clones, one allowed", fromB + fromC, "", []string{sourceB}, 3,
			[]string{"spec.dataVolumeTemplates[1].spec.source.pvc"}},
		{"template in another namespace", elsewhere, "", nil, 0,
			[]string{"spec.dataVolumeTemplates[0].metadata.namespace"}},
		{"update keeping the template", fromB, fromB, nil, 0, nil},
		{"update adding a clone", blank + fromB, blank, nil, 2,
			[]string{"spec.dataVolumeTemplates[1].spec.source.pvc"}},
		{"update changing the source", fromBToo, fromB, nil, 2,
			[]string{"spec.dataVolumeTemplates[0].spec.source.pvc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &reviewer{allow: tc.allow}
			vm := vmWithTemplates(t, tc.templates)
			var old *virtv1.VirtualMachine
			if tc.old != "" {
				old = vmWithTemplates(t, tc.old)
			}
			errs, err := AuthorizeDataVolumeTemplates(context.Background(), vm, old, "a", r.review)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.asked) != tc.wantAsked {
				t.Errorf("asked %d reviews, want %d", len(r.asked), tc.wantAsked)
			}
			for _, s := range r.asked {
				if s.User != "system:serviceaccount:a:default" || !slices.Contains(s.Groups, "system:serviceaccounts:a") || s.ResourceAttributes.Namespace == "a" {
					t.Errorf("review asked about %+v, want the VM's ServiceAccount a/default, in the source's namespace", s)
				}
			}
			var got []string
			for _, e := range errs {
				got = append(got, e.Field)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("refused %q (%v), want %q", got, errs.ToAggregate(), tc.want)
			}
			for _, e := range errs {
				if e.Type == field.ErrorTypeForbidden && !strings.Contains(e.Error(), "User system:serviceaccount:a:default has insufficient permissions in clone source namespace") {
					t.Errorf("error %q does not say whose permission is missing", e)
				}
				if e.Type == field.ErrorTypeInvalid && !strings.Contains(e.Error(), "VirtualMachine's namespace a") {
					t.Errorf("error %q does not name the VM's namespace", e)
				}
			}
		})
	}

	r := &reviewer{err: errors.New("apiserver down")}
	if _, err := AuthorizeDataVolumeTemplates(context.Background(), vmWithTemplates(t, fromB), nil, "a", r.review); err == nil {
		t.Error("a failed review let the VM through")
	}

	// A serviceAccount volume names the identity the VM acts as.
	vm := vmWithTemplates(t, fromB)
	vm.Spec.Template = &virtv1.VirtualMachineInstanceTemplateSpec{Spec: virtv1.VirtualMachineInstanceSpec{Volumes: []virtv1.Volume{
		{Name: "sa", VolumeSource: virtv1.VolumeSource{ServiceAccount: &virtv1.ServiceAccountVolumeSource{ServiceAccountName: "builder"}}}}}}
	r = &reviewer{}
	if _, err := AuthorizeDataVolumeTemplates(context.Background(), vm, nil, "a", r.review); err != nil || len(r.asked) == 0 || r.asked[0].User != "system:serviceaccount:a:builder" {
		t.Errorf("reviews %+v (%v); want them asked as system:serviceaccount:a:builder", r.asked, err)
	}
}
