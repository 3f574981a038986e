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

// ClusterRoles decodes KubeVirt's user-facing ClusterRoles from
// deploy/virt-api/clusterroles.yaml.
func ClusterRoles() ([]*rbacv1.ClusterRole, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(virtapideploy.ClusterRoles)))
	var out []*rbacv1.ClusterRole
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read clusterroles.yaml: %w", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		role := &rbacv1.ClusterRole{}
		if err := yaml.UnmarshalStrict(doc, role); err != nil {
			return nil, fmt.Errorf("decode clusterroles.yaml: %w", err)
		}
		out = append(out, role)
	}
}

// RBAC creates or updates KubeVirt's ClusterRoles kubevirt.io:admin, edit
// and view, as KubeVirt's operator installs them.
func RBAC(ctx context.Context, cfg *rest.Config) error {
	roles, err := ClusterRoles()
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
	return nil
}
