package bootstrap

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	virtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/virtkube/virtkube/internal/version"
)

// Namespace and name of the KubeVirt CR, as KubeVirt's installation makes it.
const (
	KubeVirtNamespace = "kubevirt"
	KubeVirtName      = "kubevirt"
)

// KubeVirtKey finds the KubeVirt CR with a controller-runtime client.
var KubeVirtKey = client.ObjectKey{Namespace: KubeVirtNamespace, Name: KubeVirtName}

// Scheme knows the Kubernetes and kubevirt.io types.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := virtv1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// KubeVirt makes sure the namespace kubevirt and the KubeVirt CR
// kubevirt/kubevirt exist, and reports the CR deployed the way KubeVirt's
// operator does, so `kubectl wait kv kubevirt --for condition=Available`
// works. An existing CR keeps its spec: it is the user's configuration.
func KubeVirt(ctx context.Context, cfg *rest.Config) error {
	scheme, err := Scheme()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: KubeVirtNamespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", KubeVirtNamespace, err)
	}

	kv := &virtv1.KubeVirt{ObjectMeta: metav1.ObjectMeta{Namespace: KubeVirtNamespace, Name: KubeVirtName}}
	if err := c.Create(ctx, kv); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create KubeVirt %s/%s: %w", KubeVirtNamespace, KubeVirtName, err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(kv), kv); err != nil {
		return err
	}
	return ReportDeployed(ctx, c, kv)
}

// ReportDeployed writes the status an operator writes once every component
// runs, for the current generation of kv's spec: virt-controller calls it on
// every change of the CR, as KubeVirt's operator observes each generation
// (`kubectl wait --for=condition=Available` ignores conditions of an older
// generation).
func ReportDeployed(ctx context.Context, c client.Client, kv *virtv1.KubeVirt) error {
	if kv.Status.Phase == virtv1.KubeVirtPhaseDeployed && kv.Status.ObservedKubeVirtVersion == version.Version &&
		kv.Status.ObservedGeneration != nil && *kv.Status.ObservedGeneration == kv.Generation {
		return nil
	}
	now := metav1.NewTime(time.Now())
	condition := func(t virtv1.KubeVirtConditionType, s corev1.ConditionStatus, reason, msg string) virtv1.KubeVirtCondition {
		return virtv1.KubeVirtCondition{Type: t, Status: s, Reason: reason, Message: msg, LastProbeTime: now, LastTransitionTime: now}
	}
	const reason = "AllComponentsReady"
	generation := kv.Generation
	kv.Status = virtv1.KubeVirtStatus{
		Phase: virtv1.KubeVirtPhaseDeployed,
		Conditions: []virtv1.KubeVirtCondition{
			condition(virtv1.KubeVirtConditionAvailable, corev1.ConditionTrue, reason, "All components are ready."),
			condition(virtv1.KubeVirtConditionProgressing, corev1.ConditionFalse, reason, "All components are ready."),
			condition(virtv1.KubeVirtConditionDegraded, corev1.ConditionFalse, reason, "All components are ready."),
			condition(virtv1.KubeVirtConditionCreated, corev1.ConditionTrue, "AllResourcesCreated", "All resources were created."),
		},
		OperatorVersion:         version.Version,
		TargetKubeVirtVersion:   version.Version,
		ObservedKubeVirtVersion: version.Version,
		ObservedGeneration:      &generation,
		DefaultArchitecture:     "amd64",
	}
	if err := c.Status().Update(ctx, kv); err != nil {
		return fmt.Errorf("report KubeVirt %s/%s deployed: %w", KubeVirtNamespace, KubeVirtName, err)
	}
	return nil
}
