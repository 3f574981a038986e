package virtapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	virtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/bootstrap"
	"github.com/virtkube/virtkube/internal/webhook"
)

// Names of the webhook configurations, as KubeVirt's operator names them.
const (
	MutatorName   = "virt-api-mutator"
	ValidatorName = "virt-api-validator"
)

// hook is one admission webhook: KubeVirt's name and path for it, the
// resource and operations it sees.
type hook struct {
	name, path string
	resource   string
	ops        []admissionregv1.OperationType
	mutating   bool
}

var (
	onCreate = []admissionregv1.OperationType{admissionregv1.Create}
	onUpdate = []admissionregv1.OperationType{admissionregv1.Update}
	onWrite  = []admissionregv1.OperationType{admissionregv1.Create, admissionregv1.Update}
)

// hooks are virt-api's webhooks. VMIs are defaulted on create only (their
// spec is fixed afterwards, and controllers update VMIs often); VM and VMIRS
// templates on every write.
var hooks = []hook{
	{"virtualmachineinstances-mutator.kubevirt.io", "/virtualmachineinstances-mutate", webhook.VMIs, onCreate, true},
	{"virtualmachines-mutator.kubevirt.io", "/virtualmachines-mutate", webhook.VMs, onWrite, true},
	{"virtualmachinereplicasets-mutator.kubevirt.io", "/virtualmachinereplicasets-mutate", webhook.VMIRSs, onWrite, true},
	{"virtualmachineinstances-create-validator.kubevirt.io", "/virtualmachineinstances-validate-create", webhook.VMIs, onCreate, false},
	{"virtualmachineinstances-update-validator.kubevirt.io", "/virtualmachineinstances-validate-update", webhook.VMIs, onUpdate, false},
	{"virtualmachine-validator.kubevirt.io", "/virtualmachines-validate", webhook.VMs, onWrite, false},
	{"virtualmachinereplicaset-validator.kubevirt.io", "/virtualmachinereplicaset-validate", webhook.VMIRSs, onWrite, false},
	// CDI's (cdi-api-datavolume-validate on a cluster with CDI), served by
	// virt-api here as virtkube runs no CDI apiserver.
	{"datavolume-validate.cdi.kubevirt.io", "/datavolume-validate", webhook.DataVolumes, onWrite, false},
}

// groupVersion is the API group and version of the hook's resource.
func (h hook) groupVersion() schema.GroupVersion {
	if h.resource == webhook.DataVolumes {
		return cdiv1.SchemeGroupVersion
	}
	return virtv1.GroupVersion
}

// Target says how the API server reaches virt-api: by URL (embedded mode,
// on loopback) or through a Service (a real cluster). CABundle is the CA
// that signed virt-api's serving certificate.
type Target struct {
	// URL is the base URL, e.g. https://127.0.0.1:34567.
	URL string
	// Service is the Service in front of virt-api pods; its Path is unused.
	Service  *admissionregv1.ServiceReference
	CABundle []byte
}

func (t Target) clientConfig(path string) admissionregv1.WebhookClientConfig {
	cc := admissionregv1.WebhookClientConfig{CABundle: t.CABundle}
	if t.Service != nil {
		svc := *t.Service
		svc.Path = &path
		cc.Service = &svc
	} else {
		url := t.URL + path
		cc.URL = &url
	}
	return cc
}

// Register creates or updates virt-api-mutator and virt-api-validator so
// they point at t. Run again (a restart with a new port or CA), it
// rewrites the same two objects.
func Register(ctx context.Context, c kubernetes.Interface, t Target) error {
	if (t.URL == "") == (t.Service == nil) {
		return errors.New("register webhooks: set exactly one of URL and Service")
	}
	if len(t.CABundle) == 0 {
		return errors.New("register webhooks: no CA bundle")
	}
	mutator, validator := webhookConfigurations(t)
	mc := c.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if err := createOrUpdate(ctx, mutator, mc.Get, mc.Create, mc.Update,
		func(dst, src *admissionregv1.MutatingWebhookConfiguration) { dst.Webhooks = src.Webhooks }); err != nil {
		return err
	}
	vc := c.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	return createOrUpdate(ctx, validator, vc.Get, vc.Create, vc.Update,
		func(dst, src *admissionregv1.ValidatingWebhookConfiguration) { dst.Webhooks = src.Webhooks })
}

// webhookConfigurations builds the two objects Register writes: every
// webhook fails closed (a VMI that was not checked is not stored), has no
// side effects (so dry-run requests reach it) and speaks AdmissionReview v1.
func webhookConfigurations(t Target) (*admissionregv1.MutatingWebhookConfiguration, *admissionregv1.ValidatingWebhookConfiguration) {
	fail := admissionregv1.Fail
	none := admissionregv1.SideEffectClassNone
	equivalent := admissionregv1.Equivalent
	namespaced := admissionregv1.NamespacedScope
	timeout := int32(10)
	labels := map[string]string{"app.kubernetes.io/managed-by": "virt-api", "kubevirt.io": "virt-api"}
	mutator := &admissionregv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: MutatorName, Labels: labels}}
	validator := &admissionregv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: ValidatorName, Labels: labels}}
	for _, h := range hooks {
		rules := []admissionregv1.RuleWithOperations{{
			Operations: h.ops,
			Rule: admissionregv1.Rule{
				APIGroups: []string{h.groupVersion().Group}, APIVersions: []string{h.groupVersion().Version},
				Resources: []string{h.resource}, Scope: &namespaced,
			},
		}}
		cc := t.clientConfig(h.path)
		if h.mutating {
			mutator.Webhooks = append(mutator.Webhooks, admissionregv1.MutatingWebhook{
				Name: h.name, ClientConfig: cc, Rules: rules, FailurePolicy: &fail, SideEffects: &none,
				MatchPolicy: &equivalent, TimeoutSeconds: &timeout, AdmissionReviewVersions: []string{"v1"},
			})
		} else {
			validator.Webhooks = append(validator.Webhooks, admissionregv1.ValidatingWebhook{
				Name: h.name, ClientConfig: cc, Rules: rules, FailurePolicy: &fail, SideEffects: &none,
				MatchPolicy: &equivalent, TimeoutSeconds: &timeout, AdmissionReviewVersions: []string{"v1"},
			})
		}
	}
	return mutator, validator
}

// createOrUpdate writes want under its name: created when missing, else
// the stored object gets want's webhooks (keeping its other metadata) and
// is updated, retrying on a conflict.
func createOrUpdate[T metav1.Object](ctx context.Context, want T,
	get func(context.Context, string, metav1.GetOptions) (T, error),
	create func(context.Context, T, metav1.CreateOptions) (T, error),
	update func(context.Context, T, metav1.UpdateOptions) (T, error),
	copyWebhooks func(dst, src T),
) error {
	for {
		current, err := get(ctx, want.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = create(ctx, want, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue
			}
		} else if err == nil {
			copyWebhooks(current, want)
			current.SetLabels(want.GetLabels())
			_, err = update(ctx, current, metav1.UpdateOptions{})
			if apierrors.IsConflict(err) {
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("register webhook configuration %s: %w", want.GetName(), err)
		}
		return nil
	}
}

// WaitAnswering returns once the API server calls virt-api's webhooks: a
// server-side dry run of a bare VMI comes back defaulted (so the mutating
// webhook ran, and the validating one let it through). The API server picks
// up webhook configurations asynchronously, hence the polling.
func WaitAnswering(ctx context.Context, cfg *rest.Config, timeout time.Duration) error {
	scheme, err := bootstrap.Scheme()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		probe := &virtv1.VirtualMachineInstance{
			ObjectMeta: metav1.ObjectMeta{Namespace: bootstrap.KubeVirtNamespace, GenerateName: "virt-api-probe-"},
			Spec: virtv1.VirtualMachineInstanceSpec{Domain: virtv1.DomainSpec{
				Resources: virtv1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Mi")}},
			}},
		}
		err := c.Create(ctx, probe, client.DryRunAll)
		if err == nil && probe.Spec.Domain.Machine != nil && probe.Spec.Domain.Machine.Type != "" {
			return nil
		}
		if err == nil {
			err = errors.New("a dry-run VMI came back without defaults")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("virt-api webhooks not answering: %w", err)
		case <-tick.C:
		}
	}
}
