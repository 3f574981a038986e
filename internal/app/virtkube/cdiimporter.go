package virtkube

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/virtkube/virtkube/internal/cdi/importer"
)

// newCDIImporterCommand is `virtkube cdi-importer`, the program of the
// DataVolume controller's importer, upload and clone source pods. Its flags
// are its own (see importer.Main), and so is its exit status: on failure the
// last line it prints is "cdi-importer: <error>", the pod's termination
// message.
func newCDIImporterCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cdi-importer --mode import|upload|clone-source [flags]",
		Short: "Fill a DataVolume's claim: the program of CDI's importer, upload server and clone source pods",
		Long: `Fill a DataVolume's claim, as the DataVolume controller's pods run it with the
claim mounted at --dest:
  --mode import --source http --endpoint URL
  --mode import --source blank
  --mode import --source registry --endpoint docker://IMAGE | --disk-socket PATH
  --mode upload --token-file FILE
  --mode clone-source --source-dir DIR --upload-url URL --token-file FILE
Progress is served as a Prometheus gauge on --listen (default :8443, /metrics).
Run with --help for every flag.`,
		DisableFlagParsing: true,
		Run: func(cmd *cobra.Command, args []string) {
			os.Exit(importer.Main(args, cmd.ErrOrStderr()))
		},
	}
}
