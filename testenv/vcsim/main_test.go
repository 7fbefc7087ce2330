package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/cns"
	cnstypes "github.com/vmware/govmomi/cns/types"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vslm"
)

const (
	user     = `csi-migrate@vsphere.local`
	password = "testenv-Passw0rd!"
)

type env struct {
	t    *testing.T
	ctx  context.Context
	c    *govmomi.Client
	cns  *cns.Client
	vsom *vslm.ObjectManager
	dc   *object.Datacenter
	ds   *object.Datastore
	home string   // LocalDS_0's folder
	u    *url.URL // the SDK with the test user's credentials
}

func setup(t *testing.T, args ...string) *env {
	t.Setenv("TMPDIR", t.TempDir())
	args = append([]string{"-l", "127.0.0.1:0", "-username", user, "-password", password}, args...)
	model, s, err := start(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); model.Remove() })

	ctx := context.Background()
	u := &url.URL{Scheme: "https", Host: s.URL.Host, Path: "/sdk", User: url.UserPassword(user, password)}
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		t.Fatalf("login as %s: %v", user, err)
	}
	bad := *u
	bad.User = url.UserPassword(user, "wrong")
	if _, err := govmomi.NewClient(ctx, &bad, true); err == nil {
		t.Fatal("login with a wrong password succeeded")
	}
	// The other spelling of the same domain user, as vCenter accepts it.
	alt := *u
	alt.User = url.UserPassword(`VSPHERE.LOCAL\csi-migrate`, password)
	if _, err := govmomi.NewClient(ctx, &alt, true); err != nil {
		t.Fatalf("login as VSPHERE.LOCAL\\csi-migrate: %v", err)
	}
	e := &env{t: t, ctx: ctx, c: c, vsom: vslm.NewObjectManager(c.Client), u: u}
	if e.cns, err = cns.NewClient(ctx, c.Client); err != nil {
		t.Fatal(err)
	}
	finder := find.NewFinder(c.Client)
	if e.dc, err = finder.Datacenter(ctx, "DC0"); err != nil {
		t.Fatal(err)
	}
	finder.SetDatacenter(e.dc)
	if e.ds, err = finder.Datastore(ctx, "LocalDS_0"); err != nil {
		t.Fatal(err)
	}
	var ds mo.Datastore
	e.must(e.ds.Properties(ctx, e.ds.Reference(), []string{"info"}, &ds))
	e.home = ds.Info.GetDatastoreInfo().Url
	return e
}

func (e *env) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) vm(name string) *object.VirtualMachine {
	e.t.Helper()
	finder := find.NewFinder(e.c.Client)
	finder.SetDatacenter(e.dc)
	vm, err := finder.VirtualMachine(e.ctx, name)
	e.must(err)
	return vm
}

// vmdk creates [LocalDS_0] kubevols/<name>.vmdk with VirtualDiskManager, as the in-tree provisioner did.
func (e *env) vmdk(name string, mb int64) string {
	e.t.Helper()
	_ = object.NewFileManager(e.c.Client).MakeDirectory(e.ctx, "[LocalDS_0] kubevols", e.dc, true)
	path := fmt.Sprintf("[LocalDS_0] kubevols/%s.vmdk", name)
	task, err := object.NewVirtualDiskManager(e.c.Client).CreateVirtualDisk(e.ctx, path, e.dc, &types.FileBackedVirtualDiskSpec{
		VirtualDiskSpec: types.VirtualDiskSpec{DiskType: string(types.VirtualDiskTypeThin), AdapterType: string(types.VirtualDiskAdapterTypeLsiLogic)},
		CapacityKb:      mb * 1024,
	})
	e.must(err)
	e.must(task.Wait(e.ctx))
	return path
}

// register calls CnsCreateVolume with BackingDiskUrlPath, as the syncer registers an in-tree volume.
func (e *env) register(name string) cnstypes.BaseCnsVolumeOperationResult {
	e.t.Helper()
	u := fmt.Sprintf("https://127.0.0.1/folder/kubevols/%s.vmdk?dcPath=%s&dsName=%s", name, url.PathEscape("/DC0"), "LocalDS_0")
	return e.cnsTask(e.cns.CreateVolume(e.ctx, []cnstypes.CnsVolumeCreateSpec{{
		Name:       "pvc-" + name,
		VolumeType: "BLOCK",
		Metadata: cnstypes.CnsVolumeMetadata{ContainerCluster: cnstypes.CnsContainerCluster{
			ClusterType: "KUBERNETES", ClusterId: "user-cluster-1", VSphereUser: user, ClusterFlavor: "VANILLA",
		}},
		BackingObjectDetails: &cnstypes.CnsBlockBackingDetails{BackingDiskUrlPath: u},
	}}))
}

func (e *env) cnsTask(task *object.Task, err error) cnstypes.BaseCnsVolumeOperationResult {
	e.t.Helper()
	e.must(err)
	info, err := cns.GetTaskInfo(e.ctx, task)
	e.must(err)
	res, err := cns.GetTaskResult(e.ctx, info)
	e.must(err)
	return res
}

func (e *env) ok(res cnstypes.BaseCnsVolumeOperationResult) {
	e.t.Helper()
	if f := res.GetCnsVolumeOperationResult().Fault; f != nil {
		e.t.Fatalf("volume fault: %T %s", f.Fault, f.LocalizedMessage)
	}
}

func (e *env) fcd(id string) *types.VStorageObject {
	e.t.Helper()
	obj, err := e.vsom.Retrieve(e.ctx, e.ds, id)
	e.must(err)
	return obj
}

// disks returns the FCD ids (vDiskId) of the VM's disks, and how many disks it has.
func (e *env) disks(vm *object.VirtualMachine) (map[string]types.VirtualDisk, int) {
	e.t.Helper()
	devices, err := vm.Device(e.ctx)
	e.must(err)
	ids := map[string]types.VirtualDisk{}
	all := devices.SelectByType((*types.VirtualDisk)(nil))
	for _, d := range all {
		if disk := d.(*types.VirtualDisk); disk.VDiskId != nil {
			ids[disk.VDiskId.Id] = *disk
		}
	}
	return ids, len(all)
}

func (e *env) attach(id string, vm *object.VirtualMachine) *cnstypes.CnsVolumeAttachResult {
	e.t.Helper()
	return e.cnsTask(e.cns.AttachVolume(e.ctx, []cnstypes.CnsVolumeAttachDetachSpec{{VolumeId: cnstypes.CnsVolumeId{Id: id}, Vm: vm.Reference()}})).(*cnstypes.CnsVolumeAttachResult)
}

func (e *env) detach(id string, vm *object.VirtualMachine) cnstypes.BaseCnsVolumeOperationResult {
	e.t.Helper()
	return e.cnsTask(e.cns.DetachVolume(e.ctx, []cnstypes.CnsVolumeAttachDetachSpec{{VolumeId: cnstypes.CnsVolumeId{Id: id}, Vm: vm.Reference()}}))
}

func TestAboutAndInventory(t *testing.T) {
	e := setup(t, "-dc", "2")
	about := e.c.ServiceContent.About
	if about.ApiVersion != "8.0.3.0" || about.Version != "8.0.3" {
		t.Fatalf("about: %s / %s", about.ApiVersion, about.Version)
	}
	finder := find.NewFinder(e.c.Client)
	for i := 0; i < 2; i++ {
		dc, err := finder.Datacenter(e.ctx, fmt.Sprintf("DC%d", i))
		e.must(err)
		finder.SetDatacenter(dc)
		dss, err := finder.DatastoreList(e.ctx, "*")
		e.must(err)
		vms, err := finder.VirtualMachineList(e.ctx, "*")
		e.must(err)
		hosts, err := finder.HostSystemList(e.ctx, "*")
		e.must(err)
		if len(dss) != 1 || dss[0].Name() != fmt.Sprintf("LocalDS_%d", i) || len(vms) != 3 || len(hosts) != 1 {
			t.Fatalf("DC%d: %d datastores (%s), %d VMs, %d hosts", i, len(dss), dss[0].Name(), len(vms), len(hosts))
		}
		for _, vm := range vms {
			devices, err := vm.Device(e.ctx)
			e.must(err)
			if n := len(devices.SelectByType((*types.ParaVirtualSCSIController)(nil))); n != 4 {
				t.Fatalf("%s: %d pvscsi controllers", vm.Name(), n)
			}
		}
	}
}

func TestRegisterAttachDetach(t *testing.T) {
	e := setup(t)
	path := e.vmdk("disk-a", 64)
	res := e.register("disk-a")
	e.ok(res)
	id := res.GetCnsVolumeOperationResult().VolumeId.Id
	if _, ok := res.(*cnstypes.CnsVolumeCreateResult); !ok || id == "" {
		t.Fatalf("create result %T %q", res, id)
	}
	obj := e.fcd(id)
	if got := obj.Config.Backing.(*types.BaseConfigInfoDiskFileBackingInfo).FilePath; got != path {
		t.Fatalf("FCD backing %q, want %q", got, path)
	}
	if obj.Config.CapacityInMB != 64 || obj.Config.KeepAfterDeleteVm == nil || !*obj.Config.KeepAfterDeleteVm {
		t.Fatalf("FCD capacity %d keepAfterDeleteVm %v", obj.Config.CapacityInMB, obj.Config.KeepAfterDeleteVm)
	}
	// Registering it again: CnsAlreadyRegisteredFault carrying the same id, as vCenter answers.
	again := e.register("disk-a").GetCnsVolumeOperationResult()
	if f, ok := again.Fault.Fault.(*cnstypes.CnsAlreadyRegisteredFault); !ok || f.VolumeId.Id != id {
		t.Fatalf("second registration: %#v", again.Fault)
	}
	// A path that does not exist fails per volume.
	if f := e.register("missing").GetCnsVolumeOperationResult().Fault; f == nil {
		t.Fatal("registering a missing VMDK succeeded")
	}
	q, err := e.cns.QueryVolume(e.ctx, &cnstypes.CnsQueryFilter{VolumeIds: []cnstypes.CnsVolumeId{{Id: id}}})
	e.must(err)
	if len(q.Volumes) != 1 || q.Volumes[0].BackingObjectDetails.(*cnstypes.CnsBlockBackingDetails).BackingDiskPath != path {
		t.Fatalf("query: %+v", q.Volumes)
	}

	all, err := e.cns.QueryAllVolume(e.ctx, cnstypes.CnsQueryFilter{}, cnstypes.CnsQuerySelection{})
	e.must(err)
	if len(all.Volumes) != 1 || all.Volumes[0].BackingObjectDetails.(*cnstypes.CnsBlockBackingDetails).BackingDiskId != id {
		t.Fatalf("query all: %+v", all.Volumes)
	}

	vm := e.vm("DC0_C0_RP0_VM0")
	other := e.vm("DC0_C0_RP0_VM1")
	_, before := e.disks(vm)
	att := e.attach(id, vm)
	e.ok(att)
	ids, n := e.disks(vm)
	disk, ok := ids[id]
	if !ok || n != before+1 || att.DiskUUID == "" || disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).Uuid != att.DiskUUID ||
		disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName != path {
		t.Fatalf("after attach: %d disks (was %d), diskUUID %q, disk %+v", n, before, att.DiskUUID, disk)
	}
	if obj := e.fcd(id); len(obj.Config.ConsumerId) != 1 {
		t.Fatalf("consumerId %v", obj.Config.ConsumerId)
	}
	// Attached elsewhere: ResourceInUse, which the driver resolves by looking at the VM.
	if f := e.attach(id, other).Fault; f == nil {
		t.Fatal("attach to a second VM succeeded")
	} else if _, ok := f.Fault.(*types.ResourceInUse); !ok {
		t.Fatalf("attach to a second VM: %T", f.Fault)
	}

	e.ok(e.detach(id, vm))
	if ids, n := e.disks(vm); n != before || len(ids) != 0 {
		t.Fatalf("after detach: %d disks", n)
	}
	if _, err := os.Stat(filepath.Join(e.home, "kubevols", "disk-a.vmdk")); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.detach(id, vm).GetCnsVolumeOperationResult().Fault.Fault.(*types.NotFound); !ok {
		t.Fatal("second detach: want NotFound")
	}

	// deleteDisk=false keeps the FCD and its file.
	e.ok(e.cnsTask(e.cns.DeleteVolume(e.ctx, []cnstypes.CnsVolumeId{{Id: id}}, false)))
	if e.fcd(id).Config.Id.Id != id {
		t.Fatal("FCD lost")
	}
}

func TestAttach59(t *testing.T) {
	e := setup(t)
	vm := e.vm("DC0_C0_RP0_VM2")
	units := map[[2]int32]bool{}
	for i := 0; i < 59; i++ {
		name := fmt.Sprintf("d%02d", i)
		e.vmdk(name, 1)
		res := e.register(name)
		e.ok(res)
		att := e.attach(res.GetCnsVolumeOperationResult().VolumeId.Id, vm)
		e.ok(att)
	}
	ids, n := e.disks(vm)
	if len(ids) != 59 || n != 60 { // + the VM's own disk1.vmdk
		t.Fatalf("%d FCD disks, %d disks", len(ids), n)
	}
	for _, d := range ids {
		k := [2]int32{d.ControllerKey, *d.UnitNumber}
		if units[k] || *d.UnitNumber == 7 {
			t.Fatalf("unit %v used twice or the controller's", k)
		}
		units[k] = true
	}
	// The 60th does not fit (4 x 15 units, one holds disk1.vmdk).
	e.vmdk("d59", 1)
	res := e.register("d59")
	if f := e.attach(res.GetCnsVolumeOperationResult().VolumeId.Id, vm).Fault; f == nil {
		t.Fatal("a 61st disk attached")
	}
}

func TestControlFlagsExtendSnapshot(t *testing.T) {
	e := setup(t)
	e.vmdk("disk-b", 100)
	// A disk registered with RegisterDisk (as the tool does), then made a CNS volume by id.
	obj, err := e.vsom.RegisterDisk(e.ctx, "https://127.0.0.1/folder/kubevols/disk-b.vmdk?dcPath=DC0&dsName=LocalDS_0", "disk-b")
	e.must(err)
	id := obj.Config.Id.Id
	if obj.Config.CapacityInMB != 100 {
		t.Fatalf("RegisterDisk capacity %d", obj.Config.CapacityInMB)
	}
	if k := obj.Config.KeepAfterDeleteVm; k != nil && *k {
		t.Fatal("keepAfterDeleteVm set by RegisterDisk")
	}
	_, err = methods.SetVStorageObjectControlFlags(e.ctx, e.c.Client, &types.SetVStorageObjectControlFlags{
		This: *e.c.ServiceContent.VStorageObjectManager, Id: types.ID{Id: id}, Datastore: e.ds.Reference(),
		ControlFlags: []string{string(types.VslmVStorageObjectControlFlagKeepAfterDeleteVm)},
	})
	e.must(err)
	if k := e.fcd(id).Config.KeepAfterDeleteVm; k == nil || !*k {
		t.Fatal("keepAfterDeleteVm not set")
	}
	_, err = methods.ClearVStorageObjectControlFlags(e.ctx, e.c.Client, &types.ClearVStorageObjectControlFlags{
		This: *e.c.ServiceContent.VStorageObjectManager, Id: types.ID{Id: id}, Datastore: e.ds.Reference(),
		ControlFlags: []string{string(types.VslmVStorageObjectControlFlagKeepAfterDeleteVm)},
	})
	e.must(err)
	if k := e.fcd(id).Config.KeepAfterDeleteVm; k == nil || *k {
		t.Fatal("keepAfterDeleteVm not cleared")
	}

	// The same through VSLM's GlobalObjectManager (/vslm/sdk), which the driver uses below 8.0u3.
	vc, err := vslm.NewClient(e.ctx, e.c.Client)
	e.must(err)
	gom := vslm.NewGlobalObjectManager(vc)
	e.must(gom.SetControlFlags(e.ctx, types.ID{Id: id}, []string{string(types.VslmVStorageObjectControlFlagDisableRelocation)}))
	if r := e.fcd(id).Config.RelocationDisabled; r == nil || !*r {
		t.Fatal("relocationDisabled not set through VSLM")
	}

	e.ok(e.cnsTask(e.cns.CreateVolume(e.ctx, []cnstypes.CnsVolumeCreateSpec{{
		Name: "static", VolumeType: "BLOCK",
		BackingObjectDetails: &cnstypes.CnsBlockBackingDetails{BackingDiskId: id},
	}})))
	// Registering by id protects the disk from VM deletion, as vCenter 8.0u3 does.
	if k := e.fcd(id).Config.KeepAfterDeleteVm; k == nil || !*k {
		t.Fatal("keepAfterDeleteVm not set by CNS registration")
	}
	vm := e.vm("DC0_C0_RP0_VM0")
	e.ok(e.attach(id, vm))

	e.ok(e.cnsTask(e.cns.ExtendVolume(e.ctx, []cnstypes.CnsVolumeExtendSpec{{VolumeId: cnstypes.CnsVolumeId{Id: id}, CapacityInMb: 300}})))
	if c := e.fcd(id).Config.CapacityInMB; c != 300 {
		t.Fatalf("FCD capacity %d after extend", c)
	}
	desc, err := os.ReadFile(filepath.Join(e.home, "kubevols", "disk-b.vmdk"))
	e.must(err)
	if want := fmt.Sprintf("RW %d ", 300*1024*1024/512); !strings.Contains(string(desc), want) {
		t.Fatalf("descriptor has no %q:\n%s", want, desc)
	}
	if ids, _ := e.disks(vm); ids[id].CapacityInKB != 300*1024 {
		t.Fatalf("VM disk capacity %d KB", ids[id].CapacityInKB)
	}
	q, err := e.cns.QueryVolume(e.ctx, &cnstypes.CnsQueryFilter{VolumeIds: []cnstypes.CnsVolumeId{{Id: id}}})
	e.must(err)
	if c := q.Volumes[0].BackingObjectDetails.GetCnsBackingObjectDetails().CapacityInMb; c != 300 {
		t.Fatalf("CNS capacity %d", c)
	}
	if f := e.cnsTask(e.cns.ExtendVolume(e.ctx, []cnstypes.CnsVolumeExtendSpec{{VolumeId: cnstypes.CnsVolumeId{Id: id}, CapacityInMb: 200}})).GetCnsVolumeOperationResult().Fault; f == nil {
		t.Fatal("shrinking succeeded")
	}

	snap := e.cnsTask(e.cns.CreateSnapshots(e.ctx, []cnstypes.CnsSnapshotCreateSpec{{VolumeId: cnstypes.CnsVolumeId{Id: id}, Description: "s1"}})).(*cnstypes.CnsSnapshotCreateResult)
	info, err := e.vsom.RetrieveSnapshotInfo(e.ctx, e.ds, id)
	e.must(err)
	if len(info.Snapshots) != 1 || info.Snapshots[0].Id.Id != snap.Snapshot.SnapshotId.Id {
		t.Fatalf("FCD snapshots %+v", info.Snapshots)
	}
	e.ok(e.cnsTask(e.cns.DeleteSnapshots(e.ctx, []cnstypes.CnsSnapshotDeleteSpec{{VolumeId: cnstypes.CnsVolumeId{Id: id}, SnapshotId: snap.Snapshot.SnapshotId}})))
	info, err = e.vsom.RetrieveSnapshotInfo(e.ctx, e.ds, id)
	e.must(err)
	if len(info.Snapshots) != 0 {
		t.Fatalf("FCD snapshots after delete %+v", info.Snapshots)
	}

	// VStorageObjectManager.AttachDisk_Task / DetachDisk_Task change the VM's hardware too.
	e.ok(e.detach(id, vm))
	other := e.vm("DC0_C0_RP0_VM1")
	e.must(other.AttachDisk(e.ctx, id, e.ds, 0, nil))
	if ids, _ := e.disks(other); len(ids) != 1 {
		t.Fatal("AttachDisk_Task added no disk")
	}
	e.must(other.DetachDisk(e.ctx, id))
	if ids, _ := e.disks(other); len(ids) != 0 {
		t.Fatal("DetachDisk_Task left the disk")
	}
}

func TestPrivileges(t *testing.T) {
	e := setup(t)
	e.vmdk("disk-p", 10)
	auth := object.NewAuthorizationManager(e.c.Client)
	has := func(priv string) bool {
		res, err := methods.HasPrivilegeOnEntities(e.ctx, e.c.Client, &types.HasPrivilegeOnEntities{
			This: auth.Reference(), Entity: []types.ManagedObjectReference{e.ds.Reference()}, PrivId: []string{priv},
		})
		e.must(err)
		if len(res.Returnval) != 1 || len(res.Returnval[0].PrivAvailability) != 1 {
			t.Fatalf("HasPrivilegeOnEntities answered %#v", res)
		}
		return res.Returnval[0].PrivAvailability[0].IsGranted
	}
	if !has(fileManagement) {
		t.Fatal("a user without permissions lacks a privilege (upstream grants everything)")
	}
	// ReadOnly (-2) on the datastore: the nearest permission wins.
	perm := types.Permission{Principal: `VSPHERE.LOCAL\csi-migrate`, RoleId: -2, Propagate: true}
	e.must(auth.SetEntityPermissions(e.ctx, e.ds.Reference(), []types.Permission{perm}))
	if has(fileManagement) || !has("System.Read") {
		t.Fatal("ReadOnly on the datastore: want no Datastore.FileManagement, System.Read")
	}
	_, err := e.vsom.RegisterDisk(e.ctx, "https://127.0.0.1/folder/kubevols/disk-p.vmdk?dcPath=DC0&dsName=LocalDS_0", "disk-p")
	if !strings.Contains(fmt.Sprint(err), "NoPermission") && !strings.Contains(fmt.Sprint(err), "permission") {
		t.Fatalf("RegisterDisk without Datastore.FileManagement: %v", err)
	}
	e.must(auth.RemoveEntityPermission(e.ctx, e.ds.Reference(), perm.Principal, false))
	if !has(fileManagement) {
		t.Fatal("permission removed: the privilege is back")
	}
	if _, err := e.vsom.RegisterDisk(e.ctx, "https://127.0.0.1/folder/kubevols/disk-p.vmdk?dcPath=DC0&dsName=LocalDS_0", "disk-p"); err != nil {
		t.Fatal(err)
	}
}

// listViewWaiter does what the CSI driver up to v3.3 does for every CNS task
// (pkg/common/cns-lib/volume/listview.go): one ListView per process, created empty on its session;
// a goroutine runs property.WaitForUpdatesEx on the session's *default* PropertyCollector
// (CreateFilter there with ReportMissingObjectsInResults, WaitForUpdatesEx with no options and the
// version strings the collector returns, CancelWaitForUpdates and DestroyPropertyFilter when its
// context ends, a new ListView after an error); each operation adds its task to the view after
// starting it (ModifyListView), waits for the ListView's waiter to hand it the task's final
// TaskInfo, and removes the task from the view (ModifyListView again).
type listViewWaiter struct {
	t      *testing.T
	c      *govmomi.Client
	lv     *view.ListView
	mu     sync.Mutex
	tasks  map[types.ManagedObjectReference]chan types.TaskInfo
	errs   chan error
	done   chan struct{}
	cancel context.CancelFunc
}

func newListViewWaiter(t *testing.T, ctx context.Context, c *govmomi.Client) *listViewWaiter {
	t.Helper()
	w := &listViewWaiter{t: t, c: c, tasks: map[types.ManagedObjectReference]chan types.TaskInfo{},
		errs: make(chan error, 100), done: make(chan struct{})}
	var err error
	if w.lv, err = view.NewManager(c.Client).CreateListView(ctx, nil); err != nil {
		t.Fatal(err)
	}
	ctx, w.cancel = context.WithCancel(ctx)
	t.Cleanup(w.cancel) // before the simulator closes, which waits for open requests
	go w.listen(ctx)
	return w
}

func (w *listViewWaiter) listen(ctx context.Context) {
	defer close(w.done)
	for ctx.Err() == nil {
		filter := new(property.WaitFilter)
		filter.Add(w.lv.Reference(), "Task", []string{"info"}, &types.TraversalSpec{Type: "ListView", Path: "view", Skip: types.NewBool(false)})
		filter.Spec.ReportMissingObjectsInResults = types.NewBool(true)
		pc := property.DefaultCollector(w.c.Client)
		err := property.WaitForUpdatesEx(ctx, pc, filter, func(updates []types.ObjectUpdate) bool {
			for _, u := range updates {
				for _, c := range u.ChangeSet {
					info, ok := c.Val.(types.TaskInfo)
					if !ok || info.State == types.TaskInfoStateQueued || info.State == types.TaskInfoStateRunning {
						continue
					}
					w.mu.Lock()
					ch := w.tasks[info.Task]
					w.mu.Unlock()
					if ch != nil {
						select {
						case ch <- info:
						default:
						}
					}
				}
			}
			return false
		})
		if ctx.Err() != nil {
			return
		}
		// The driver reports the error to every pending task and starts over with a new view.
		w.errs <- fmt.Errorf("WaitForUpdatesEx on the default collector: %v", err)
		lv, lvErr := view.NewManager(w.c.Client).CreateListView(ctx, nil)
		if lvErr != nil {
			w.errs <- lvErr
			return
		}
		w.mu.Lock()
		w.lv = lv
		w.mu.Unlock()
	}
}

// wait adds the started task to the view and returns its final TaskInfo as the ListView's waiter
// reports it (nil after timeout).
func (w *listViewWaiter) wait(ctx context.Context, task *object.Task) *types.TaskInfo {
	w.t.Helper()
	ch := make(chan types.TaskInfo, 1)
	ref := task.Reference()
	w.mu.Lock()
	w.tasks[ref] = ch
	lv := w.lv
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.tasks, ref)
		w.mu.Unlock()
		_, _ = lv.Remove(context.Background(), []types.ManagedObjectReference{ref})
	}()
	if unresolved, err := lv.Add(ctx, []types.ManagedObjectReference{ref}); err != nil || len(unresolved) != 0 {
		w.t.Fatalf("adding %v to the ListView: %v %v", ref, unresolved, err)
	}
	select {
	case info := <-ch:
		return &info
	case err := <-w.errs:
		w.t.Errorf("the ListView's waiter: %v", err)
	case <-ctx.Done():
	}
	return nil
}

// stop cancels the waiter as the driver's context would, and checks it ended without error.
func (w *listViewWaiter) stop() {
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		w.t.Error("the ListView's waiter did not end after its context was canceled")
	}
	select {
	case err := <-w.errs:
		w.t.Errorf("the ListView's waiter: %v", err)
	default:
	}
}

// TestListViewOnDefaultCollector: the CSI driver up to v3.3 waits for its CNS tasks through a
// ListView watched by WaitForUpdatesEx on the session's default PropertyCollector (v3.4 on create
// a collector of their own). Its controller and its syncer are two processes, two sessions, each
// with such a waiter on its own session's default collector (every session's default collector
// has the same reference, "propertyCollector"); other clients wait on a session's default
// collector beside it (Task.WaitForResultEx). vCenter answers each of these waits; each waiter
// must see its tasks end.
func TestListViewOnDefaultCollector(t *testing.T) {
	for _, beside := range []string{"alone", "a task wait", "another session"} {
		t.Run(beside, func(t *testing.T) {
			e := setup(t)
			ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
			defer cancel()
			clients := []*govmomi.Client{e.c}
			if beside == "another session" {
				// The controller and the syncer: the one started first must keep hearing its
				// tasks after the other started waiting.
				other, err := govmomi.NewClient(ctx, e.u, true)
				e.must(err)
				defer func() { _ = other.Logout(context.Background()) }()
				clients = append(clients, other)
			}
			var waiters []*listViewWaiter
			for _, c := range clients {
				w := newListViewWaiter(t, ctx, c)
				waiters = append(waiters, w)
				time.Sleep(100 * time.Millisecond) // its first (initial) wait is in
			}
			vm := e.vm("DC0_C0_RP0_VM0")
			var others []chan error
			for i := 0; i < 3; i++ {
				for j, w := range waiters {
					c, err := cns.NewClient(ctx, w.c.Client)
					e.must(err)
					name := fmt.Sprintf("disk-%d-%d", i, j)
					e.vmdk(name, 16)
					if beside == "a task wait" {
						// Another waiter on the same default collector, as Task.WaitForResultEx is.
						task, err := object.NewVirtualDiskManager(w.c.Client).CreateVirtualDisk(ctx, fmt.Sprintf("[LocalDS_0] kubevols/other-%d.vmdk", i), e.dc,
							&types.FileBackedVirtualDiskSpec{VirtualDiskSpec: types.VirtualDiskSpec{DiskType: "thin", AdapterType: "lsiLogic"}, CapacityKb: 1024})
						e.must(err)
						waited := make(chan error, 1)
						go func() { _, err := task.WaitForResultEx(ctx); waited <- err }()
						others = append(others, waited)
					}
					task, err := c.CreateVolume(ctx, []cnstypes.CnsVolumeCreateSpec{{
						Name: "pvc-" + name, VolumeType: "BLOCK",
						Metadata: cnstypes.CnsVolumeMetadata{ContainerCluster: cnstypes.CnsContainerCluster{
							ClusterType: "KUBERNETES", ClusterId: "user-cluster-1", VSphereUser: user, ClusterFlavor: "VANILLA",
						}},
						BackingObjectDetails: &cnstypes.CnsBlockBackingDetails{BackingDiskUrlPath: fmt.Sprintf(
							"https://127.0.0.1/folder/kubevols/%s.vmdk?dcPath=%s&dsName=LocalDS_0", name, url.PathEscape("/DC0"))},
					}})
					e.must(err)
					info := w.wait(ctx, task)
					if info == nil {
						t.Fatalf("session %d, volume %d (%v): the ListView's waiter never saw the task end", j, i, task.Reference())
					}
					res, err := cns.GetTaskResult(ctx, info)
					e.must(err)
					e.ok(res)
					id := res.GetCnsVolumeOperationResult().VolumeId.Id
					// Then attach it, as ControllerPublishVolume does after the in-tree volume's
					// registration.
					task, err = c.AttachVolume(ctx, []cnstypes.CnsVolumeAttachDetachSpec{{VolumeId: cnstypes.CnsVolumeId{Id: id}, Vm: vm.Reference()}})
					e.must(err)
					if info = w.wait(ctx, task); info == nil {
						t.Fatalf("session %d, attach %d (%v): the ListView's waiter never saw the task end", j, i, task.Reference())
					}
					res, err = cns.GetTaskResult(ctx, info)
					e.must(err)
					e.ok(res)
				}
			}
			for i, waited := range others {
				select {
				case err := <-waited:
					if err != nil {
						t.Errorf("Task.WaitForResultEx %d beside the ListView's wait: %v", i, err)
					}
				case <-time.After(10 * time.Second):
					t.Errorf("Task.WaitForResultEx %d, beside the ListView's wait, never saw its task end", i)
				}
			}
			for _, w := range waiters {
				w.stop()
			}
		})
	}
}

// TestDefaultCollectorConcurrentWaits: waits at different versions on one session's default
// collector each get every change after their version (of every filter of the collector), a
// wait without a version gets the current state even after other waits were told of it, a filter
// destroyed while waits are in progress just stops being reported, and one CancelWaitForUpdates
// ends every wait in progress (vcsim v0.53 gave queued changes to whichever wait took them first,
// kept what a filter reported per filter, could panic a wait whose filter went, and cancelled
// only the latest wait).
func TestDefaultCollectorConcurrentWaits(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	pc := property.DefaultCollector(e.c.Client)
	vms := []*object.VirtualMachine{e.vm("DC0_C0_RP0_VM0"), e.vm("DC0_C0_RP0_VM1")}
	var filters []types.ManagedObjectReference
	for _, vm := range vms {
		f, err := pc.CreateFilter(ctx, types.CreateFilter{Spec: types.PropertyFilterSpec{
			ObjectSet: []types.ObjectSpec{{Obj: vm.Reference()}},
			PropSet:   []types.PropertySpec{{Type: "VirtualMachine", PathSet: []string{"name"}}},
		}})
		e.must(err)
		filters = append(filters, f.Reference())
	}
	wait := func(version string) (*types.UpdateSet, error) {
		res, err := methods.WaitForUpdatesEx(ctx, e.c.Client, &types.WaitForUpdatesEx{This: pc.Reference(), Version: version})
		if err != nil {
			return nil, err
		}
		return res.Returnval, nil
	}
	names := func(set *types.UpdateSet) map[string]string { // VM -> name
		m := map[string]string{}
		for _, fu := range set.FilterSet {
			for _, ou := range fu.ObjectSet {
				for _, c := range ou.ChangeSet {
					if c.Name == "name" {
						m[ou.Obj.Value] = c.Val.(string)
					}
				}
			}
		}
		return m
	}
	rename := func(vm *object.VirtualMachine, name string) {
		task, err := vm.Rename(ctx, name)
		e.must(err)
		e.must(task.Wait(ctx))
	}

	first, err := wait("")
	e.must(err)
	if got := names(first); len(got) != 2 {
		t.Fatalf("initial wait: %v", got)
	}
	// Two waits in progress at the same version: each gets both renames.
	type answer struct {
		set *types.UpdateSet
		err error
	}
	waits := make([]chan answer, 2)
	for i := range waits {
		waits[i] = make(chan answer, 1)
		go func(ch chan answer) {
			set, err := wait(first.Version)
			ch <- answer{set, err}
		}(waits[i])
	}
	time.Sleep(100 * time.Millisecond)
	rename(vms[0], "renamed-0")
	rename(vms[1], "renamed-1")
	time.Sleep(100 * time.Millisecond)
	for i, ch := range waits {
		a := <-ch
		e.must(a.err)
		got := names(a.set)
		// The two renames may come in two versions: wait again from the one answered.
		for version := a.set.Version; got[vms[1].Reference().Value] != "renamed-1"; {
			set, err := wait(version)
			e.must(err)
			for k, v := range names(set) {
				got[k] = v
			}
			version = set.Version
		}
		if got[vms[0].Reference().Value] != "renamed-0" || got[vms[1].Reference().Value] != "renamed-1" {
			t.Fatalf("wait %d at version %s: %v", i, first.Version, got)
		}
	}
	// A new initial wait still gets every object, with its current value.
	again, err := wait("")
	e.must(err)
	if got := names(again); got[vms[0].Reference().Value] != "renamed-0" || got[vms[1].Reference().Value] != "renamed-1" {
		t.Fatalf("second initial wait: %v", got)
	}

	// A filter destroyed while waits are in progress: the waits go on, without its object.
	for i := range waits {
		go func(ch chan answer) {
			set, err := wait(again.Version)
			ch <- answer{set, err}
		}(waits[i])
	}
	time.Sleep(100 * time.Millisecond)
	_, err = methods.DestroyPropertyFilter(ctx, e.c.Client, &types.DestroyPropertyFilter{This: filters[1]})
	e.must(err)
	rename(vms[1], "renamed-1b")
	rename(vms[0], "renamed-0b")
	for i, ch := range waits {
		a := <-ch
		e.must(a.err)
		got := names(a.set)
		if got[vms[0].Reference().Value] != "renamed-0b" || got[vms[1].Reference().Value] != "" {
			t.Fatalf("wait %d after the filter of %s was destroyed: %v", i, vms[1].Reference().Value, got)
		}
		for _, fu := range a.set.FilterSet {
			if fu.Filter == filters[1] {
				t.Fatalf("wait %d reported the destroyed filter", i)
			}
		}
	}

	// One CancelWaitForUpdates ends every wait in progress.
	latest, err := wait("")
	e.must(err)
	for i := range waits {
		go func(ch chan answer) {
			set, err := wait(latest.Version)
			ch <- answer{set, err}
		}(waits[i])
	}
	time.Sleep(200 * time.Millisecond)
	e.must(pc.CancelWaitForUpdates(ctx))
	for i, ch := range waits {
		select {
		case a := <-ch:
			if a.err == nil || !strings.Contains(a.err.Error(), "RequestCanceled") && !strings.Contains(a.err.Error(), "canceled") {
				t.Fatalf("wait %d after CancelWaitForUpdates: %v %v", i, a.set, a.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("wait %d not ended by CancelWaitForUpdates", i)
		}
	}
	_, err = methods.DestroyPropertyFilter(ctx, e.c.Client, &types.DestroyPropertyFilter{This: filters[0]})
	e.must(err)
}

// TestDelays: -method-delay answers a SOAP method later; -task-delay makes a task take longer
// without holding a lock, so two attaches of different volumes to different VMs overlap.
func TestDelays(t *testing.T) {
	t.Cleanup(func() { simulator.TaskDelay = simulator.DelayConfig{} })
	e := setup(t, "-method-delay", "RegisterDisk=300", "-task-delay", "CnsAttachVolume=500")
	e.vmdk("disk-d", 16)
	started := time.Now()
	_, err := e.vsom.RegisterDisk(e.ctx, "https://127.0.0.1/folder/kubevols/disk-d.vmdk?dcPath=DC0&dsName=LocalDS_0", "disk-d")
	e.must(err)
	if took := time.Since(started); took < 300*time.Millisecond {
		t.Fatalf("RegisterDisk took %v, want at least 300ms", took)
	}
	var ids []string
	for _, name := range []string{"disk-e", "disk-f"} {
		e.vmdk(name, 16)
		res := e.register(name)
		e.ok(res)
		ids = append(ids, res.GetCnsVolumeOperationResult().VolumeId.Id)
	}
	vms := []*object.VirtualMachine{e.vm("DC0_C0_RP0_VM0"), e.vm("DC0_C0_RP0_VM1")}
	started = time.Now()
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func(i int) { defer wg.Done(); e.ok(e.attach(ids[i], vms[i])) }(i)
	}
	wg.Wait()
	if took := time.Since(started); took < 500*time.Millisecond || took > 950*time.Millisecond {
		t.Fatalf("two attaches took %v: want each 500ms, side by side", took)
	}
	if _, err := parseDelays("CnsAttachVolume"); err == nil {
		t.Fatal("a delay without milliseconds was accepted")
	}
}

// TestConcurrentCreateAndQuery: the syncer queries all volumes while the driver registers new
// ones. Upstream's CnsCreateVolume task changes the volume map outside the CNS manager's lock,
// which was a fatal concurrent map iteration and write (it stopped vcsim in an e2e run).
func TestConcurrentCreateAndQuery(t *testing.T) {
	e := setup(t)
	var names []string
	for i := 0; i < 40; i++ {
		names = append(names, fmt.Sprintf("disk-c%d", i))
		e.vmdk(names[i], 1)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := e.cns.QueryAllVolume(e.ctx, cnstypes.CnsQueryFilter{}, cnstypes.CnsQuerySelection{}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for _, name := range names {
		e.ok(e.register(name))
	}
	close(done)
	wg.Wait()
	all, err := e.cns.QueryAllVolume(e.ctx, cnstypes.CnsQueryFilter{}, cnstypes.CnsQuerySelection{})
	e.must(err)
	if len(all.Volumes) != len(names) {
		t.Fatalf("%d volumes, want %d", len(all.Volumes), len(names))
	}
}

// TestUpdateMetadataKeepsOtherEntities: as CNS does, an update adds or replaces the entities it
// names and removes those it flags deleted; the volume's other entities stay (upstream replaced
// them all: a PV's update after its claim's dropped the claim, as driver 3.3.1's syncer sends them).
func TestUpdateMetadataKeepsOtherEntities(t *testing.T) {
	e := setup(t)
	e.vmdk("disk-m", 1)
	res := e.register("disk-m").GetCnsVolumeOperationResult()
	if res.Fault != nil {
		t.Fatal(res.Fault.LocalizedMessage)
	}
	id := res.VolumeId
	cluster := cnstypes.CnsContainerCluster{ClusterType: "KUBERNETES", ClusterId: "user-cluster-1", VSphereUser: user, ClusterFlavor: "VANILLA"}
	entity := func(kind, ns, name string, del bool) cnstypes.BaseCnsEntityMetadata {
		return &cnstypes.CnsKubernetesEntityMetadata{
			CnsEntityMetadata: cnstypes.CnsEntityMetadata{EntityName: name, ClusterID: "user-cluster-1", Delete: del},
			EntityType:        kind, Namespace: ns,
		}
	}
	update := func(entities ...cnstypes.BaseCnsEntityMetadata) {
		e.t.Helper()
		e.ok(e.cnsTask(e.cns.UpdateVolumeMetadata(e.ctx, []cnstypes.CnsVolumeMetadataUpdateSpec{{
			VolumeId: id, Metadata: cnstypes.CnsVolumeMetadata{ContainerCluster: cluster, EntityMetadata: entities},
		}})))
	}
	names := func() []string {
		e.t.Helper()
		found, err := e.cns.QueryVolume(e.ctx, &cnstypes.CnsQueryFilter{VolumeIds: []cnstypes.CnsVolumeId{id}})
		e.must(err)
		var out []string
		for _, v := range found.Volumes {
			for _, m := range v.Metadata.EntityMetadata {
				k := m.(*cnstypes.CnsKubernetesEntityMetadata)
				out = append(out, k.EntityType+":"+k.Namespace+"/"+k.EntityName)
			}
		}
		sort.Strings(out)
		return out
	}
	update(entity("PERSISTENT_VOLUME_CLAIM", "ns", "data-db-0", false))
	update(entity("PERSISTENT_VOLUME", "", "pvc-1", false))
	if got, want := names(), []string{"PERSISTENT_VOLUME:/pvc-1", "PERSISTENT_VOLUME_CLAIM:ns/data-db-0"}; !slices.Equal(got, want) {
		t.Fatalf("entities %v, want %v", got, want)
	}
	update(entity("POD", "ns", "db-0", false), entity("PERSISTENT_VOLUME_CLAIM", "ns", "data-db-0", true))
	if got, want := names(), []string{"PERSISTENT_VOLUME:/pvc-1", "POD:ns/db-0"}; !slices.Equal(got, want) {
		t.Fatalf("entities %v, want %v", got, want)
	}
}
