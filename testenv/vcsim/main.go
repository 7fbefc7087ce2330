// Command vcsim is the vCenter Simulator of the test environment: govmomi's `simulator` (with its
// CNS, PBM, VSLM, lookup/STS and vAPI endpoints) built from govmomi v0.53.0, plus the few things
// the real vSphere CSI driver (v3.7.3) needs from a vCenter that the upstream simulator lacks.
// Nothing upstream is copied: the simulator's objects are Go values found by reference and
// dispatched by method name, so cns.go registers wrappers that embed the upstream objects and
// add or replace single methods.
//
// What differs from the stock vcsim binary, and why:
//   - -username may hold a domain ("user@vsphere.local", `VSPHERE.LOCAL\user`): the CSI driver
//     refuses user names without one. The credentials are set on Service.Listen directly, no
//     URL is parsed from them.
//   - About reports vCenter 8.0.3 (-api-version, default 8.0.3.0): the driver refuses 6.5, the
//     simulator's default. At 8.0.3 or newer the driver registers in-tree disks with
//     CnsCreateVolume(BackingDiskUrlPath) and expects the registration itself to protect the
//     disk from VM deletion (keepAfterDeleteVm), as vCenter 8.0u3 does.
//   - Each node VM has 4 ParaVirtual SCSI controllers (-scsi), so the 59 volumes per node the
//     driver allows really fit (4 x 15 units, unit 7 is the controller's own).
//   - With -dc 2 (or more) every further datacenter DC<i> gets its own cluster, host, datastore
//     LocalDS_<i> and VMs (the stock model would name every datacenter's datastore LocalDS_0).
//   - Each session's default PropertyCollector answers concurrent waits, and waits of several
//     sessions, as vCenter does (collector.go): the driver up to v3.3 waits for its CNS tasks
//     on it from two processes. VCSIM_COLLECTOR_TRACE=1 logs its calls and versions.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net/url"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/units"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"

	// The optional endpoints the stock vcsim binary registers (those present in v0.53.0).
	_ "github.com/vmware/govmomi/cns/simulator"
	_ "github.com/vmware/govmomi/eam/simulator"
	_ "github.com/vmware/govmomi/lookup/simulator"
	_ "github.com/vmware/govmomi/pbm/simulator"
	_ "github.com/vmware/govmomi/ssoadmin/simulator"
	_ "github.com/vmware/govmomi/sts/simulator"
	_ "github.com/vmware/govmomi/vapi/appliance/simulator"
	_ "github.com/vmware/govmomi/vapi/cis/tasks/simulator"
	_ "github.com/vmware/govmomi/vapi/cluster/simulator"
	_ "github.com/vmware/govmomi/vapi/crypto/simulator"
	_ "github.com/vmware/govmomi/vapi/esx/settings/simulator"
	_ "github.com/vmware/govmomi/vapi/namespace/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator"
	_ "github.com/vmware/govmomi/vapi/vcenter/consumptiondomains/simulator"
	_ "github.com/vmware/govmomi/vapi/vm/simulator"
	_ "github.com/vmware/govmomi/vsan/simulator"
	_ "github.com/vmware/govmomi/vslm/simulator"
)

type config struct {
	listen, username, password, apiVersion string
	datacenters, scsiControllers           int
	methodDelay, taskDelay                 string
}

// parseDelays reads "Name=ms,Name=ms" (empty: none).
func parseDelays(text string) (map[string]int, error) {
	delays := map[string]int{}
	for _, item := range strings.Split(text, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, ms, ok := strings.Cut(item, "=")
		n, err := strconv.Atoi(ms)
		if !ok || err != nil || n < 0 || name == "" {
			return nil, fmt.Errorf("delay %q: want Name=milliseconds", item)
		}
		delays[name] = n
	}
	return delays, nil
}

// start parses args, builds the inventory and serves it. The caller must call model.Remove().
func start(args []string, stderr io.Writer) (*simulator.Model, *simulator.Server, error) {
	model := simulator.VPX()
	// Today's test environment layout: one cluster with one host, one datastore, 3 node VMs.
	model.Datacenter, model.Cluster, model.ClusterHost, model.Host = 1, 1, 1, 0
	model.Datastore, model.Machine, model.Portgroup = 1, 3, 0

	var cfg config
	fs := flag.NewFlagSet("vcsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.listen, "l", "127.0.0.1:8989", "listen address (TLS, self-signed)")
	fs.StringVar(&cfg.username, "username", "", "login user name, may hold a domain (empty: any)")
	fs.StringVar(&cfg.password, "password", "", "login password")
	fs.StringVar(&cfg.apiVersion, "api-version", "8.0.3.0", "About.ApiVersion (About.Version is its first 3 parts)")
	fs.IntVar(&cfg.datacenters, "dc", 1, "datacenters: DC0 per the flags below, DC1.. with 1 host, LocalDS_<i> and -vm VMs each")
	fs.IntVar(&cfg.scsiControllers, "scsi", 4, "ParaVirtual SCSI controllers per VM (1-4)")
	fs.IntVar(&model.Machine, "vm", model.Machine, "VMs per resource pool")
	// Stock vcsim flags, kept so the existing command line still works (they shape DC0 only).
	fs.IntVar(&model.Cluster, "cluster", model.Cluster, "clusters in DC0")
	fs.IntVar(&model.ClusterHost, "host", model.ClusterHost, "hosts per cluster")
	fs.IntVar(&model.Host, "standalone-host", model.Host, "standalone hosts in DC0")
	fs.IntVar(&model.Datastore, "ds", model.Datastore, "local datastores in DC0")
	fs.IntVar(&model.Pool, "pool", model.Pool, "resource pools per cluster")
	fs.IntVar(&model.App, "app", model.App, "virtual apps per cluster")
	fs.IntVar(&model.Pod, "pod", model.Pod, "storage pods")
	fs.IntVar(&model.Portgroup, "pg", model.Portgroup, "port groups")
	fs.IntVar(&model.Folder, "folder", model.Folder, "folders")
	fs.BoolVar(&model.Autostart, "autostart", model.Autostart, "power on the VMs")
	fs.BoolVar(&simulator.Trace, "trace", false, "trace SOAP to stderr")
	// A real vCenter's latencies, modelled: a SOAP method answered that much later (RegisterDisk),
	// or a task that runs that much longer (CnsAttachVolume), without holding any object's lock
	// meanwhile, so tasks on different volumes overlap as on vCenter.
	fs.StringVar(&cfg.methodDelay, "method-delay", "", "Method=ms,...: answer these SOAP methods that much later")
	fs.StringVar(&cfg.taskDelay, "task-delay", "", "Task=ms,...: these tasks (by task name) take that much longer")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if cfg.scsiControllers < 1 || cfg.scsiControllers > 4 {
		return nil, nil, fmt.Errorf("-scsi must be 1 to 4")
	}
	methodDelay, err := parseDelays(cfg.methodDelay)
	if err != nil {
		return nil, nil, err
	}
	taskDelay, err := parseDelays(cfg.taskDelay)
	if err != nil {
		return nil, nil, err
	}
	model.DelayConfig.MethodDelay = methodDelay
	if len(taskDelay) > 0 {
		taskDelay["LockHandoff"] = 0 // sleep without the task's lock: tasks on other volumes go on
		simulator.TaskDelay.MethodDelay = taskDelay
	}

	about := &model.ServiceContent.About
	about.ApiVersion = cfg.apiVersion
	about.Version = strings.Join(strings.SplitN(cfg.apiVersion+".0.0", ".", 4)[:3], ".")
	about.Build = "24022515"
	about.FullName = fmt.Sprintf("VMware vCenter Server %s build-%s (govmomi simulator)", about.Version, about.Build)
	about.LicenseProductVersion = strings.SplitN(about.Version, ".", 2)[0] + ".0"
	about.OsType = runtime.GOOS + "-" + runtime.GOARCH

	if err := model.Create(); err != nil {
		return nil, nil, err
	}
	ctx := context.Background()
	c, err := vim25.NewClient(ctx, model.Service) // in-process client, before anyone can connect
	if err == nil {
		err = addDatacenters(ctx, c, model, cfg.datacenters)
	}
	if err == nil {
		err = addSCSIControllers(ctx, c, model, cfg.scsiControllers)
	}
	if err != nil {
		model.Remove()
		return nil, nil, err
	}
	setRuntimeEnums(model)
	install(model)

	model.Service.RegisterEndpoints = true
	model.Service.TLS = new(tls.Config)
	// Set the credentials directly: stock vcsim puts them into a URL it parses, which breaks
	// on "user@domain".
	model.Service.Listen = &url.URL{Host: cfg.listen}
	if cfg.username != "" {
		model.Service.Listen.User = url.UserPassword(cfg.username, cfg.password)
	}
	return model, model.Service.NewServer(), nil
}

// addDatacenters creates DC1..DC<n-1>, each with one cluster holding one host, a datastore
// LocalDS_<i> (a folder under the simulator's home, like the model's own) and model.Machine VMs
// named like the model names them.
func addDatacenters(ctx context.Context, c *vim25.Client, model *simulator.Model, n int) error {
	var home string // the model's temporary folder, removed by model.Remove()
	for _, o := range model.Map().OptionManager().Setting {
		if v := o.GetOptionValue(); v.Key == "vcsim.home" {
			home = v.Value.(string)
		}
	}
	for i := 1; i < n; i++ {
		dcName := fmt.Sprintf("DC%d", i)
		dc, err := object.NewRootFolder(c).CreateDatacenter(ctx, dcName)
		if err != nil {
			return err
		}
		folders, err := dc.Folders(ctx)
		if err != nil {
			return err
		}
		cluster, err := folders.HostFolder.CreateCluster(ctx, dcName+"_C0", types.ClusterConfigSpecEx{})
		if err != nil {
			return err
		}
		task, err := cluster.AddHost(ctx, types.HostConnectSpec{HostName: dcName + "_C0_H0"}, true, nil, nil)
		if err != nil {
			return err
		}
		info, err := task.WaitForResult(ctx)
		if err != nil {
			return err
		}
		host := object.NewHostSystem(c, info.Result.(types.ManagedObjectReference))
		dsName := fmt.Sprintf("LocalDS_%d", i)
		dir := filepath.Join(home, dcName+"-"+dsName)
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		dss, err := host.ConfigManager().DatastoreSystem(ctx)
		if err != nil {
			return err
		}
		if _, err := dss.CreateLocalDatastore(ctx, dsName, dir); err != nil {
			return err
		}
		pool, err := cluster.ResourcePool(ctx)
		if err != nil {
			return err
		}
		for j := 0; j < model.Machine; j++ {
			name := fmt.Sprintf("%s_C0_RP0_VM%d", dcName, j)
			var devices object.VirtualDeviceList
			scsi, _ := devices.CreateSCSIController("pvscsi")
			ide, _ := devices.CreateIDEController()
			cdrom, _ := devices.CreateCdrom(ide.(*types.VirtualIDEController))
			disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{},
				fmt.Sprintf("[%s] %s", dsName, path.Join(name, "disk1.vmdk")))
			disk.CapacityInKB = int64(10*units.GB) / units.KB
			nic := esx.EthernetCard
			devices = append(devices, scsi, ide, cdrom, disk, &nic)
			spec := types.VirtualMachineConfigSpec{
				Name:    name,
				GuestId: string(types.VirtualMachineGuestOsIdentifierOtherGuest),
				Files:   &types.VirtualMachineFileInfo{VmPathName: "[" + dsName + "]"},
			}
			spec.DeviceChange, _ = devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
			task, err := folders.VmFolder.CreateVM(ctx, spec, pool, host)
			if err != nil {
				return err
			}
			info, err := task.WaitForResult(ctx)
			if err != nil {
				return fmt.Errorf("create %s: %w", name, err)
			}
			if model.Autostart {
				vm := object.NewVirtualMachine(c, info.Result.(types.ManagedObjectReference))
				if task, err = vm.PowerOn(ctx); err == nil {
					_, err = task.WaitForResult(ctx)
				}
				if err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// addSCSIControllers gives every VM n ParaVirtual SCSI controllers (the model creates one).
func addSCSIControllers(ctx context.Context, c *vim25.Client, model *simulator.Model, n int) error {
	for _, e := range model.Map().All("VirtualMachine") {
		vm := object.NewVirtualMachine(c, e.Reference())
		devices, err := vm.Device(ctx)
		if err != nil {
			return err
		}
		var add []types.BaseVirtualDevice
		for have := len(devices.SelectByType((*types.VirtualSCSIController)(nil))); have < n; have++ {
			ctrl, err := devices.CreateSCSIController("pvscsi")
			if err != nil {
				return err
			}
			devices = append(devices, ctrl)
			add = append(add, ctrl)
		}
		if len(add) != 0 {
			if err := vm.AddDevice(ctx, add...); err != nil {
				return fmt.Errorf("%s: %w", e.Entity().Name, err)
			}
		}
	}
	return nil
}

// setRuntimeEnums gives each VM's runtime.faultToleranceState and recordReplayState the values a
// vCenter reports for a plain VM. The v0.53 simulator leaves them "", and since v0.53 sends empty
// enum elements, which pyVmomi cannot parse: vm.runtime and vm.summary then fail in Python
// (AttributeError), while they worked with vcsim v0.46.
func setRuntimeEnums(model *simulator.Model) {
	for _, e := range model.Map().All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		for _, rt := range []*types.VirtualMachineRuntimeInfo{&vm.Runtime, &vm.Summary.Runtime} {
			if rt.FaultToleranceState == "" {
				rt.FaultToleranceState = types.VirtualMachineFaultToleranceStateNotConfigured
			}
			if rt.RecordReplayState == "" {
				rt.RecordReplayState = types.VirtualMachineRecordReplayStateInactive
			}
		}
	}
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	model, s, err := start(os.Args[1:], os.Stderr)
	if err == flag.ErrHelp {
		os.Exit(0)
	}
	if err != nil {
		log.Fatal(err)
	}
	// Same line as stock vcsim prints, without the credentials.
	u := *s.URL
	u.User = nil
	fmt.Printf("export GOVC_URL=%s GOVC_SIM_PID=%d\n", u.String(), os.Getpid())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	s.Close()
	model.Remove()
}
