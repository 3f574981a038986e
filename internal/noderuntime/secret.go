package noderuntime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/virtkube/virtkube/internal/atomicfile"
)

// secretDir is where Secret volume name of the pod is written.
func (w *podWorker) secretDir(name string) string {
	return filepath.Join(w.dir, "volumes", "kubernetes.io~secret", name)
}

// writeSecret puts the Secret of volume v into its directory, one file per
// key (or per item), as kubelet projects it. It is written once, when the
// pod starts: later changes of the Secret do not reach a running pod.
func (w *podWorker) writeSecret(ctx context.Context, pod *corev1.Pod, v corev1.Volume) error {
	src := v.Secret
	optional := ptr.Deref(src.Optional, false)
	secret, err := w.r.cfg.Client.CoreV1().Secrets(pod.Namespace).Get(ctx, src.SecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && optional:
		secret = &corev1.Secret{}
	case apierrors.IsNotFound(err):
		return fmt.Errorf("MountVolume.SetUp failed for volume %q: secret %q not found", v.Name, src.SecretName)
	case err != nil:
		return fmt.Errorf("MountVolume.SetUp failed for volume %q: get secret %q: %w", v.Name, src.SecretName, err)
	}
	files, err := secretFiles(secret, src)
	if err != nil {
		return fmt.Errorf("MountVolume.SetUp failed for volume %q: %w", v.Name, err)
	}
	dir := w.secretDir(v.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for rel, f := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(p, f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

type projectedFile struct {
	data []byte
	mode os.FileMode
}

// secretFiles are the files of a Secret volume, by path within it: every
// key, or only the items, with the volume's default mode (0644) unless an
// item has its own.
func secretFiles(secret *corev1.Secret, src *corev1.SecretVolumeSource) (map[string]projectedFile, error) {
	mode := os.FileMode(ptr.Deref(src.DefaultMode, corev1.SecretVolumeSourceDefaultMode))
	files := map[string]projectedFile{}
	if len(src.Items) == 0 {
		for k, data := range secret.Data {
			files[k] = projectedFile{data: data, mode: mode}
		}
		return files, nil
	}
	for _, item := range src.Items {
		data, ok := secret.Data[item.Key]
		if !ok {
			if ptr.Deref(src.Optional, false) {
				continue
			}
			return nil, fmt.Errorf("secret %q has no key %q", src.SecretName, item.Key)
		}
		if !filepath.IsLocal(item.Path) {
			return nil, fmt.Errorf("item %q: path %q must be relative, within the volume", item.Key, item.Path)
		}
		m := mode
		if item.Mode != nil {
			m = os.FileMode(*item.Mode)
		}
		files[item.Path] = projectedFile{data: data, mode: m}
	}
	return files, nil
}
