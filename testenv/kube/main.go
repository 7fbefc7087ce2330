// Command kube is a multi-call binary: it runs etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler or kubectl depending on the name it
// is called by (symlinks), or on its first argument. Linking the five into one
// binary compiles the code they share once, which halves a cold build.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	_ "time/tzdata"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

var commands = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args
	if _, known := commands[name]; !known && name != "etcd" && name != "kubectl" && len(args) > 1 {
		name, args = args[1], args[1:]
	}
	switch name {
	case "etcd":
		etcdmain.Main(args)
	case "kubectl":
		// As kubectl's own main up to 1.30 (1.31 added an early -v setter, which the older
		// legs' kubectl package does not have).
		os.Args = args
		if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
	default:
		newCommand, ok := commands[name]
		if !ok {
			fmt.Fprintf(os.Stderr, "usage: kube {etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kubectl} ARGS...\n")
			os.Exit(2)
		}
		os.Args = args
		os.Exit(cli.Run(newCommand()))
	}
}
