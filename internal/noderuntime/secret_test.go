package noderuntime

import (
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func TestSecretFiles(t *testing.T) {
	secret := &corev1.Secret{Data: map[string][]byte{"userdata": []byte("#cloud-config"), "other": []byte("x")}}
	tests := []struct {
		name string
		src  corev1.SecretVolumeSource
		want map[string]projectedFile
		err  string
	}{
		{name: "every key, mode 0644", src: corev1.SecretVolumeSource{SecretName: "s"},
			want: map[string]projectedFile{"userdata": {[]byte("#cloud-config"), 0o644}, "other": {[]byte("x"), 0o644}}},
		{name: "default mode", src: corev1.SecretVolumeSource{SecretName: "s", DefaultMode: ptr.To[int32](0o400)},
			want: map[string]projectedFile{"userdata": {[]byte("#cloud-config"), 0o400}, "other": {[]byte("x"), 0o400}}},
		{name: "items with paths and modes", src: corev1.SecretVolumeSource{SecretName: "s", Items: []corev1.KeyToPath{{Key: "userdata", Path: "a/ud", Mode: ptr.To[int32](0o600)}}},
			want: map[string]projectedFile{"a/ud": {[]byte("#cloud-config"), 0o600}}},
		{name: "missing item", src: corev1.SecretVolumeSource{SecretName: "s", Items: []corev1.KeyToPath{{Key: "nope", Path: "n"}}},
			err: `secret "s" has no key "nope"`},
		{name: "missing item of an optional secret", src: corev1.SecretVolumeSource{SecretName: "s", Optional: ptr.To(true), Items: []corev1.KeyToPath{{Key: "nope", Path: "n"}}},
			want: map[string]projectedFile{}},
		{name: "item path escaping the volume", src: corev1.SecretVolumeSource{SecretName: "s", Items: []corev1.KeyToPath{{Key: "other", Path: "../x"}}},
			err: `path "../x" must be relative`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := secretFiles(secret, &tt.src)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("secretFiles = %v, %v; want error with %q", got, err, tt.err)
				}
				return
			}
			if err != nil || len(got) != len(tt.want) {
				t.Fatalf("secretFiles = %v, %v; want %v", got, err, tt.want)
			}
			for p, f := range tt.want {
				if g, ok := got[p]; !ok || string(g.data) != string(f.data) || g.mode != os.FileMode(f.mode) {
					t.Errorf("%s = %+v, want %+v", p, g, f)
				}
			}
		})
	}
}
