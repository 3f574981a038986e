package bootstrap

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	virtapideploy "github.com/virtkube/virtkube/deploy/virt-api"
)

// ClusterRoles decodes KubeVirt's and CDI's user-facing ClusterRoles from
// deploy/virt-api/clusterroles.yaml.
func ClusterRoles() ([]*rbacv1.ClusterRole, error) {
	roles, _, err := rbacObjects()
	return roles, err
}

// ClusterRoleBindings decodes the ClusterRoleBindings of the same file
// (CDI's config reader, bound to every authenticated user).
func ClusterRoleBindings() ([]*rbacv1.ClusterRoleBinding, error) {
	_, bindings, err := rbacObjects()
	return bindings, err
}

// rbacObjects reads clusterroles.yaml, each document by its kind.
func rbacObjects() ([]*rbacv1.ClusterRole, []*rbacv1.ClusterRoleBinding, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(virtapideploy.ClusterRoles)))
	var (
		roles    []*rbacv1.ClusterRole
		bindings []*rbacv1.ClusterRoleBinding
	)
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return roles, bindings, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read clusterroles.yaml: %w", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, nil, fmt.Errorf("decode clusterroles.yaml: %w", err)
		}
		var into any
		switch meta.Kind {
		case "ClusterRole":
			role := &rbacv1.ClusterRole{}
			roles, into = append(roles, role), role
		case "ClusterRoleBinding":
			binding := &rbacv1.ClusterRoleBinding{}
			bindings, into = append(bindings, binding), binding
		default:
			return nil, nil, fmt.Errorf("clusterroles.yaml: kind %q is neither ClusterRole nor ClusterRoleBinding", meta.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			return nil, nil, fmt.Errorf("decode clusterroles.yaml: %w", err)
		}
	}
}

// RBAC creates or updates KubeVirt's ClusterRoles kubevirt.io:admin, edit
// and view, CDI's cdi.kubevirt.io:admin, edit, view and config-reader, and
// the binding of the config reader, as the operators install them.
func RBAC(ctx context.Context, cfg *rest.Config) error {
	roles, bindings, err := rbacObjects()
	if err != nil {
		return err
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	api := c.RbacV1().ClusterRoles()
	for _, want := range roles {
		got, err := api.Get(ctx, want.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			if _, err := api.Create(ctx, want, metav1.CreateOptions{FieldManager: fieldManager}); err != nil {
				return fmt.Errorf("create ClusterRole %s: %w", want.Name, err)
			}
		case err != nil:
			return fmt.Errorf("get ClusterRole %s: %w", want.Name, err)
		case !equality.Semantic.DeepEqual(got.Rules, want.Rules) || !equality.Semantic.DeepEqual(got.Labels, want.Labels):
			got.Rules, got.Labels = want.Rules, want.Labels
			if _, err := api.Update(ctx, got, metav1.UpdateOptions{FieldManager: fieldManager}); err != nil {
				return fmt.Errorf("update ClusterRole %s: %w", want.Name, err)
			}
			klog.FromContext(ctx).Info("ClusterRole updated", "clusterrole", want.Name)
		}
	}
	bapi := c.RbacV1().ClusterRoleBindings()
	for _, want := range bindings {
		got, err := bapi.Get(ctx, want.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			if _, err := bapi.Create(ctx, want, metav1.CreateOptions{FieldManager: fieldManager}); err != nil {
				return fmt.Errorf("create ClusterRoleBinding %s: %w", want.Name, err)
			}
		case err != nil:
			return fmt.Errorf("get ClusterRoleBinding %s: %w", want.Name, err)
		case got.RoleRef != want.RoleRef:
			// roleRef is immutable: replace the binding.
			if err := bapi.Delete(ctx, want.Name, metav1.DeleteOptions{}); err != nil {
				return fmt.Errorf("replace ClusterRoleBinding %s: %w", want.Name, err)
			}
			if _, err := bapi.Create(ctx, want, metav1.CreateOptions{FieldManager: fieldManager}); err != nil {
				return fmt.Errorf("create ClusterRoleBinding %s: %w", want.Name, err)
			}
		case !equality.Semantic.DeepEqual(got.Subjects, want.Subjects) || !equality.Semantic.DeepEqual(got.Labels, want.Labels):
			got.Subjects, got.Labels = want.Subjects, want.Labels
			if _, err := bapi.Update(ctx, got, metav1.UpdateOptions{FieldManager: fieldManager}); err != nil {
				return fmt.Errorf("update ClusterRoleBinding %s: %w", want.Name, err)
			}
			klog.FromContext(ctx).Info("ClusterRoleBinding updated", "clusterrolebinding", want.Name)
		}
	}
	return nil
}
