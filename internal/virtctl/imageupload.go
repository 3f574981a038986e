package virtctl

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	uploadv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/upload/v1beta1"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/cdi"
)

// uploadOptions are image-upload's flags.
type uploadOptions struct {
	imagePath    string
	size         string
	storageClass string
	pvcName      string
	proxyURL     string
	insecure     bool
	waitSecs     uint
	noCreate     bool
	accessMode   string
	volumeMode   string
	blockVolume  bool
	forceBind    bool
}

// uploadAccessModes are the values of --access-mode: the access modes a
// DataVolume may ask for (CDI refuses others).
var uploadAccessModes = []string{
	string(corev1.ReadWriteOnce), string(corev1.ReadOnlyMany), string(corev1.ReadWriteMany),
}

// annBindImmediate is CDI's annotation asking for a claim to be bound
// before a consumer pod exists (--force-bind).
const annBindImmediate = "cdi.kubevirt.io/storage.bind.immediate.requested"

// uploadPoll is how often image-upload looks whether the claim takes the
// upload, and whether it holds it. (KubeVirt's virtctl looks every 2 s.)
const uploadPoll = 200 * time.Millisecond

// unsupportedUploadFlags are flags of KubeVirt's image-upload that virtkube
// does not serve, with why: they are accepted by name so that a command
// copied from KubeVirt's docs says what is missing, not "unknown flag".
var unsupportedUploadFlags = []struct{ name, why string }{
	{"archive-path", "uploading a tar archive (contentType archive) is not supported; upload a disk image with --image-path"},
	{"datasource", "virtkube serves no DataSources; reference the DataVolume from the VM"},
	{"default-instancetype", "virtkube serves no instance types"},
	{"default-instancetype-kind", "virtkube serves no instance types"},
	{"default-preference", "virtkube serves no preferences"},
	{"default-preference-kind", "virtkube serves no preferences"},
}

// validate checks the flags before anything is created: each names the
// flag and what it may be.
func (o *uploadOptions) validate(f *pflag.FlagSet) error {
	for _, u := range unsupportedUploadFlags {
		if f.Changed(u.name) {
			return fmt.Errorf("--%s is not supported by virtkube: %s", u.name, u.why)
		}
	}
	if o.imagePath == "" {
		return errors.New("--image-path is required: the local disk image (raw, qcow2 or ISO, optionally gz or xz compressed) to upload")
	}
	if o.accessMode != "" && !slices.Contains(uploadAccessModes, o.accessMode) {
		return fmt.Errorf("--access-mode %q: want one of %s", o.accessMode, strings.Join(uploadAccessModes, ", "))
	}
	switch o.volumeMode {
	case "", "filesystem":
	case "block":
		return errors.New("--volume-mode block is not supported by virtkube: uploads are written as disk.img on a filesystem claim; use --volume-mode filesystem")
	default:
		return fmt.Errorf("--volume-mode %q: want filesystem or block", o.volumeMode)
	}
	if o.blockVolume {
		return errors.New("--block-volume is not supported by virtkube: uploads are written as disk.img on a filesystem claim; leave it out")
	}
	return nil
}

func newImageUploadCommand(cc clientcmd.ClientConfig) *cobra.Command {
	o := &uploadOptions{}
	cmd := &cobra.Command{
		Use:   "image-upload [dv|pvc NAME]",
		Short: "Upload a VM image to a DataVolume or PersistentVolumeClaim.",
		Long: `image-upload creates an upload DataVolume (or claim) of --size, waits until
the upload proxy can take it, sends --image-path (raw or qcow2, optionally gzip
or xz compressed) and waits until it is converted into the claim's disk.img.`,
		Example: `  # Upload a local disk image to a new DataVolume:
  virtctl image-upload dv dv-name --size=10Gi --image-path=/images/fedora.qcow2

  # As CDI's older form, a claim named by --pvc-name:
  virtctl image-upload --pvc-name=iso-win10 --pvc-size=10Gi --image-path=win10.iso --insecure`,
		Args: cobra.RangeArgs(0, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.validate(cmd.Flags()); err != nil {
				return err
			}
			kind, name, err := uploadTarget(args, o.pvcName)
			if err != nil {
				return err
			}
			c, err := newClient(cc)
			if err != nil {
				return fmt.Errorf("Cannot obtain KubeVirt client: %v", err)
			}
			return o.run(cmd.Context(), c, kind, name, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.imagePath, "image-path", "", "path to the local VM image")
	f.StringVar(&o.size, "size", "", "size of the DataVolume or claim to create (e.g. 10Gi)")
	f.StringVar(&o.size, "pvc-size", "", "deprecated: use --size")
	f.StringVar(&o.storageClass, "storage-class", "", "StorageClass of the claim; empty is the cluster's default")
	f.StringVar(&o.pvcName, "pvc-name", "", "deprecated: use 'pvc NAME'")
	f.StringVar(&o.proxyURL, "uploadproxy-url", "", "URL of the upload proxy; empty reads it from CDIConfig config's status.uploadProxyURL")
	f.BoolVar(&o.insecure, "insecure", false, "do not verify the upload proxy's certificate")
	f.UintVar(&o.waitSecs, "wait-secs", 300, "seconds to wait for the claim to be ready for upload")
	f.BoolVar(&o.noCreate, "no-create", false, "upload to an existing DataVolume or claim instead of creating one")
	f.StringVar(&o.accessMode, "access-mode", "", "access mode of the claim to create: "+strings.Join(uploadAccessModes, ", ")+" (default ReadWriteOnce)")
	f.StringVar(&o.volumeMode, "volume-mode", "", "volume mode of the claim to create: filesystem (block is not supported by virtkube)")
	f.BoolVar(&o.blockVolume, "block-volume", false, "create a block-mode claim (not supported by virtkube)")
	f.BoolVar(&o.forceBind, "force-bind", false, "ask for the claim to be bound without waiting for a consumer pod (virtkube binds upload claims at once anyway)")
	for _, u := range unsupportedUploadFlags {
		f.String(u.name, "", "not supported by virtkube: "+u.why)
	}
	return cmd
}

// uploadTarget is what args (or the old --pvc-name) name: kind dv or pvc,
// and a name.
func uploadTarget(args []string, pvcName string) (kind, name string, err error) {
	switch {
	case len(args) == 2:
		kind = strings.ToLower(args[0])
		if kind != "dv" && kind != "pvc" {
			return "", "", fmt.Errorf("first argument %q: want dv or pvc", args[0])
		}
		return kind, args[1], nil
	case len(args) == 0 && pvcName != "":
		return "pvc", pvcName, nil
	}
	return "", "", fmt.Errorf("want 'dv NAME', 'pvc NAME' or --pvc-name")
}

func (o *uploadOptions) run(ctx context.Context, c *client, kind, name string, out io.Writer) error {
	image, err := os.Open(o.imagePath)
	if err != nil {
		return fmt.Errorf("--image-path: %w", err)
	}
	defer image.Close()
	fi, err := image.Stat()
	if err != nil {
		return fmt.Errorf("--image-path: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := cdi.AddToScheme(scheme); err != nil {
		return err
	}
	kc, err := crclient.New(c.config, crclient.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	key := crclient.ObjectKey{Namespace: c.namespace, Name: name}
	if !o.noCreate {
		if err := o.create(ctx, kc, kind, key, out); err != nil {
			return err
		}
	}
	proxy := o.proxyURL
	if proxy == "" {
		config := &cdiv1.CDIConfig{}
		if err := kc.Get(ctx, crclient.ObjectKey{Name: cdi.ConfigName}, config); err != nil || config.Status.UploadProxyURL == nil {
			return fmt.Errorf("no --uploadproxy-url and none in CDIConfig %s status.uploadProxyURL (%v)", cdi.ConfigName, err)
		}
		proxy = *config.Status.UploadProxyURL
	}

	fmt.Fprintf(out, "Waiting for PVC %s upload pod to be ready...\n", name)
	if err := wait.PollUntilContextTimeout(ctx, uploadPoll, time.Duration(o.waitSecs)*time.Second, true, func(ctx context.Context) (bool, error) {
		return uploadReady(ctx, kc, kind, key)
	}); err != nil {
		return fmt.Errorf("PVC %s not ready for upload after --wait-secs %d: %w", name, o.waitSecs, err)
	}
	fmt.Fprintln(out, "Pod now ready")
	token, err := uploadToken(ctx, kc, key)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Uploading data to %s\n\n", proxy)
	if err := o.send(ctx, strings.TrimSuffix(proxy, "/")+"/v1beta1/upload", token, image, fi.Size(), out); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nUploading data completed successfully, waiting for processing to complete, you can hit ctrl-c without interrupting the progress")
	if err := wait.PollUntilContextTimeout(ctx, uploadPoll, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		return uploadDone(ctx, kc, kind, key)
	}); err != nil {
		return fmt.Errorf("waiting for processing of %s: %w", name, err)
	}
	fmt.Fprintln(out, "Processing completed successfully")
	fmt.Fprintf(out, "Uploading %s completed successfully\n", filepath.Base(o.imagePath))
	return nil
}

// create makes the upload DataVolume (or annotated claim) of --size.
func (o *uploadOptions) create(ctx context.Context, kc crclient.Client, kind string, key crclient.ObjectKey, out io.Writer) error {
	size, err := resource.ParseQuantity(o.size)
	if err != nil || size.Sign() <= 0 {
		return fmt.Errorf("--size %q: want a positive quantity such as 10Gi (or --no-create)", o.size)
	}
	var class *string
	if o.storageClass != "" {
		class = &o.storageClass
	}
	res := corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}}
	modes := []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	if o.accessMode != "" {
		modes = []corev1.PersistentVolumeAccessMode{corev1.PersistentVolumeAccessMode(o.accessMode)}
	}
	var volumeMode *corev1.PersistentVolumeMode
	if o.volumeMode == "filesystem" {
		fs := corev1.PersistentVolumeFilesystem
		volumeMode = &fs
	}
	var annotations map[string]string
	if o.forceBind {
		annotations = map[string]string{annBindImmediate: "true"}
	}
	var obj crclient.Object
	if kind == "dv" {
		obj = &cdiv1.DataVolume{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Annotations: annotations},
			Spec: cdiv1.DataVolumeSpec{
				Source:  &cdiv1.DataVolumeSource{Upload: &cdiv1.DataVolumeSourceUpload{}},
				Storage: &cdiv1.StorageSpec{AccessModes: modes, Resources: res, StorageClassName: class, VolumeMode: volumeMode},
			},
		}
	} else {
		pvc := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Annotations: map[string]string{cdi.AnnUploadRequest: ""}},
			Spec:       corev1.PersistentVolumeClaimSpec{AccessModes: modes, Resources: res, StorageClassName: class, VolumeMode: volumeMode},
		}
		for k, v := range annotations {
			pvc.Annotations[k] = v
		}
		obj = pvc
	}
	if err := kc.Create(ctx, obj); err != nil {
		return fmt.Errorf("create %s %s: %w", kind, key.Name, err)
	}
	if kind == "dv" {
		fmt.Fprintf(out, "DataVolume %s/%s created\n", key.Namespace, key.Name)
	} else {
		fmt.Fprintf(out, "PersistentVolumeClaim %s/%s created\n", key.Namespace, key.Name)
	}
	return nil
}

// uploadReady: a DataVolume in UploadReady, or an upload claim whose upload
// pod takes data.
func uploadReady(ctx context.Context, kc crclient.Client, kind string, key crclient.ObjectKey) (bool, error) {
	if kind == "dv" {
		dv := &cdiv1.DataVolume{}
		if err := kc.Get(ctx, key, dv); err != nil {
			return false, err
		}
		switch dv.Status.Phase {
		case cdiv1.Failed:
			return false, fmt.Errorf("DataVolume %s failed", key.Name)
		case cdiv1.Succeeded:
			return false, fmt.Errorf("DataVolume %s already holds its data", key.Name)
		}
		return dv.Status.Phase == cdiv1.UploadReady, nil
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := kc.Get(ctx, key, pvc); err != nil {
		return false, err
	}
	if _, ok := pvc.Annotations[cdi.AnnUploadRequest]; !ok {
		return false, fmt.Errorf("PVC %s is not an upload claim (no %s annotation)", key.Name, cdi.AnnUploadRequest)
	}
	return pvc.Annotations[cdi.AnnPodReady] == "true", nil
}

// uploadDone: the claim holds the upload.
func uploadDone(ctx context.Context, kc crclient.Client, kind string, key crclient.ObjectKey) (bool, error) {
	if kind == "dv" {
		dv := &cdiv1.DataVolume{}
		if err := kc.Get(ctx, key, dv); err != nil {
			return false, err
		}
		return dv.Status.Phase == cdiv1.Succeeded, nil
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := kc.Get(ctx, key, pvc); err != nil {
		return false, err
	}
	return pvc.Annotations[cdi.AnnPodPhase] == string(corev1.PodSucceeded), nil
}

// uploadToken asks for a token through an UploadTokenRequest. As with
// CDI, the create's answer carries it in status.token (virt-api signs it;
// nothing is stored).
func uploadToken(ctx context.Context, kc crclient.Client, key crclient.ObjectKey) (string, error) {
	utr := &uploadv1.UploadTokenRequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, GenerateName: "token-for-virtctl-"},
		Spec:       uploadv1.UploadTokenRequestSpec{PvcName: key.Name},
	}
	if err := kc.Create(ctx, utr); err != nil {
		return "", fmt.Errorf("create UploadTokenRequest: %w", err)
	}
	if utr.Status.Token == "" {
		return "", fmt.Errorf("UploadTokenRequest %s was answered without status.token", utr.Name)
	}
	return utr.Status.Token, nil
}

// send POSTs the image to url with a progress bar on out.
func (o *uploadOptions) send(ctx context.Context, url, token string, image io.Reader, size int64, out io.Writer) error {
	bar := &progressBar{out: out, total: size}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, io.TeeReader(image, bar))
	if err != nil {
		return fmt.Errorf("--uploadproxy-url: %w", err)
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{InsecureSkipVerify: o.insecure} //nolint:gosec // the user's --insecure
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return fmt.Errorf("upload to %s: %w", url, err)
	}
	defer resp.Body.Close()
	bar.finish()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("upload to %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// progressBar draws " 5.63 MiB / 10.00 MiB [=====>     ] 56.30% 3s" on
// one line, at most every 200ms.
type progressBar struct {
	out         io.Writer
	total, done int64
	start, last time.Time
}

const barWidth = 40

func (b *progressBar) Write(p []byte) (int, error) {
	now := time.Now()
	if b.start.IsZero() {
		b.start = now
	}
	b.done += int64(len(p))
	if now.Sub(b.last) >= 200*time.Millisecond {
		b.last = now
		b.draw(now)
	}
	return len(p), nil
}

func (b *progressBar) finish() { b.draw(time.Now()); fmt.Fprintln(b.out) }

func (b *progressBar) draw(now time.Time) {
	fmt.Fprintf(b.out, "\r%s", renderBar(b.done, b.total, now.Sub(b.start)))
}

// renderBar is one frame of the progress bar.
func renderBar(done, total int64, elapsed time.Duration) string {
	frac := 1.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	filled := int(frac * barWidth)
	bar := strings.Repeat("=", filled)
	if filled < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-filled-1)
	}
	return fmt.Sprintf(" %s / %s [%s] %.2f%% %s", byteSize(done), byteSize(total), bar, 100*frac, elapsed.Round(time.Second))
}

// byteSize renders n bytes in binary units.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.2f %ciB", v, "KMGT"[i])
}
