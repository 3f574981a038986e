package virtctl

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/virtkube/virtkube/internal/version"
)

// serverVersionPath is where virt-api serves its version, as KubeVirt's does.
const serverVersionPath = "/apis/subresources.kubevirt.io/v1/version"

func newVersionCommand(clientConfig clientcmd.ClientConfig) *cobra.Command {
	clientOnly := false
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client and server version information.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "Client Version: %#v\n", version.Get())
			if clientOnly {
				return nil
			}
			info, err := serverVersion(cmd.Context(), clientConfig)
			if err != nil {
				return fmt.Errorf("could not get the server version: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Server Version: %#v\n", info)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&clientOnly, "client", "c", false, "Client version only (no server required).")
	return cmd
}

func serverVersion(ctx context.Context, clientConfig clientcmd.ClientConfig) (version.Info, error) {
	var info version.Info
	cfg, err := clientConfig.ClientConfig()
	if err != nil {
		return info, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return info, err
	}
	body, err := client.Discovery().RESTClient().Get().AbsPath(serverVersionPath).DoRaw(ctx)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return info, fmt.Errorf("decode %s: %w", serverVersionPath, err)
	}
	return info, nil
}
