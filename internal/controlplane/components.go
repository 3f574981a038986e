package controlplane

import (
	"context"
	"fmt"
	"sort"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	cliflag "k8s.io/component-base/cli/flag"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedulerapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// An upstream component is prepared from an argument map exactly as its own
// binary would parse its command line (k3s's executor idea), and then run
// with a context we own, so that it stops when we say and never installs
// signal handlers of its own.
//
// Preparation happens for every component before any of them runs: the
// upstream option constructors share process-wide registries (feature gates,
// component versions) that must be settled before the first one is used.

// flagArgs renders an argument map as sorted --key=value flags.
func flagArgs(args map[string]string) []string {
	out := make([]string, 0, len(args))
	for k, v := range args {
		out = append(out, fmt.Sprintf("--%s=%s", k, v))
	}
	sort.Strings(out)
	return out
}

func parseFlags(name string, sets cliflag.NamedFlagSets, args map[string]string) error {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	for _, set := range sets.FlagSets {
		fs.AddFlagSet(set)
	}
	if err := fs.Parse(flagArgs(args)); err != nil {
		return fmt.Errorf("%s flags: %w", name, err)
	}
	return nil
}

// apiServer is a prepared kube-apiserver.
type apiServer struct {
	opts *apiserveroptions.ServerRunOptions
}

func prepareAPIServer(args map[string]string) (*apiServer, error) {
	opts := apiserveroptions.NewServerRunOptions()
	if err := parseFlags("kube-apiserver", opts.Flags(), args); err != nil {
		return nil, err
	}
	return &apiServer{opts: opts}, nil
}

// Run serves until ctx is done, then shuts down gracefully.
func (a *apiServer) Run(ctx context.Context) error {
	completed, err := a.opts.Complete(ctx)
	if err != nil {
		return fmt.Errorf("kube-apiserver options: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return fmt.Errorf("kube-apiserver options: %w", utilerrors.NewAggregate(errs))
	}
	return apiserverapp.Run(ctx, completed)
}

// controllerManager is a prepared kube-controller-manager.
type controllerManager struct {
	opts *kcmoptions.KubeControllerManagerOptions
}

func prepareControllerManager(args map[string]string) (*controllerManager, error) {
	opts, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return nil, err
	}
	sets := opts.Flags(kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases())
	opts.ParsedFlags = &sets
	if err := parseFlags("kube-controller-manager", sets, args); err != nil {
		return nil, err
	}
	return &controllerManager{opts: opts}, nil
}

func (c *controllerManager) Run(ctx context.Context) error {
	cfg, err := c.opts.Config(ctx, kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases())
	if err != nil {
		return fmt.Errorf("kube-controller-manager options: %w", err)
	}
	return kcmapp.Run(ctx, cfg.Complete())
}

// scheduler is a prepared kube-scheduler.
type scheduler struct{ opts *scheduleroptions.Options }

func prepareScheduler(args map[string]string) (*scheduler, error) {
	opts := scheduleroptions.NewOptions()
	if err := parseFlags("kube-scheduler", *opts.Flags, args); err != nil {
		return nil, err
	}
	return &scheduler{opts: opts}, nil
}

func (s *scheduler) Run(ctx context.Context) error {
	cc, sched, err := schedulerapp.Setup(ctx, s.opts)
	if err != nil {
		return fmt.Errorf("kube-scheduler setup: %w", err)
	}
	return schedulerapp.Run(ctx, cc, sched)
}
