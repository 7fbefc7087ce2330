package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/cns"
	cnstypes "github.com/vmware/govmomi/cns/types"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
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

// TestListViewOnDefaultCollector: the CSI driver up to v3.3 waits for its CNS tasks through a
// ListView watched by WaitForUpdatesEx on the session's default PropertyCollector (v3.4 on create
// a collector of their own), while govmomi's Task.WaitForResult waits on that same collector and
// the other driver process waits on its own session's default collector. Each waiter must still
// see its tasks end.
func TestListViewOnDefaultCollector(t *testing.T) {
	for _, beside := range []string{"alone", "a task wait", "another session"} {
		t.Run(beside, func(t *testing.T) {
			if beside != "alone" {
				// Known vcsim v0.53 defect, not yet worked around: with two waits on one collector,
				// a filter destroyed by one wait panics the other's WaitForUpdatesEx ("mo.Reference
				// is nil, not *simulator.PropertyFilter"), and a cancel reaches only the latest wait.
				// The driver up to v3.3 waits this way; README names the gdc-1.30 leg's attach hang.
				t.Skip("vcsim loses concurrent waits on one PropertyCollector (README, older legs)")
			}
			concurrent := beside == "a task wait"
			e := setup(t)
			ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
			defer cancel()
			if beside == "another session" {
				// The syncer and the controller each wait on their own session's default collector;
				// every session's default collector has the same reference.
				other, err := govmomi.NewClient(ctx, e.u, true)
				e.must(err)
				waited := make(chan struct{})
				defer func() { cancel(); <-waited; _ = other.Logout(context.Background()) }()
				go func() {
					defer close(waited)
					_ = property.Wait(ctx, property.DefaultCollector(other.Client), e.vm("DC0_C0_RP0_VM0").Reference(),
						[]string{"name"}, func([]types.PropertyChange) bool { return false })
				}()
				time.Sleep(200 * time.Millisecond)
			}
			lv, err := view.NewManager(e.c.Client).CreateListView(ctx, nil)
			e.must(err)
			pc := property.DefaultCollector(e.c.Client)
			filter := new(property.WaitFilter)
			filter.Add(lv.Reference(), "Task", []string{"info"}, &types.TraversalSpec{Type: "ListView", Path: "view", Skip: types.NewBool(false)})
			done := make(chan types.ManagedObjectReference, 16)
			onUpdates := func(updates []types.ObjectUpdate) bool {
				for _, u := range updates {
					for _, c := range u.ChangeSet {
						if info, ok := c.Val.(types.TaskInfo); ok && (info.State == types.TaskInfoStateSuccess || info.State == types.TaskInfoStateError) {
							select {
							case done <- info.Task:
							default:
							}
						}
					}
				}
				return false
			}
			// vcsim's CancelWaitForUpdates cancels only a collector's latest wait, so the waiter
			// polls (MaxWaitSeconds) to end with the test instead of holding its server open.
			filter.Options = &types.WaitOptions{MaxWaitSeconds: types.NewInt32(1)}
			go func() {
				for ctx.Err() == nil {
					_ = property.WaitForUpdatesEx(ctx, pc, filter, onUpdates)
				}
			}()
			time.Sleep(200 * time.Millisecond)
			var waiters []chan struct{}
			for i := 0; i < 3; i++ {
				name := fmt.Sprintf("disk-%d", i)
				e.vmdk(name, 16)
				if concurrent {
					// Another waiter on the same default collector, as Task.WaitForResult is.
					task, err := object.NewVirtualDiskManager(e.c.Client).CreateVirtualDisk(ctx, fmt.Sprintf("[LocalDS_0] kubevols/other-%d.vmdk", i), e.dc,
						&types.FileBackedVirtualDiskSpec{VirtualDiskSpec: types.VirtualDiskSpec{DiskType: "thin", AdapterType: "lsiLogic"}, CapacityKb: 1024})
					e.must(err)
					waited := make(chan struct{})
					go func() { _, _ = task.WaitForResultEx(ctx); close(waited) }()
					waiters = append(waiters, waited)
				}
				task, err := e.cns.CreateVolume(ctx, []cnstypes.CnsVolumeCreateSpec{{
					Name: "pvc-" + name, VolumeType: "BLOCK",
					Metadata: cnstypes.CnsVolumeMetadata{ContainerCluster: cnstypes.CnsContainerCluster{
						ClusterType: "KUBERNETES", ClusterId: "user-cluster-1", VSphereUser: user, ClusterFlavor: "VANILLA",
					}},
					BackingObjectDetails: &cnstypes.CnsBlockBackingDetails{BackingDiskUrlPath: fmt.Sprintf(
						"https://127.0.0.1/folder/kubevols/%s.vmdk?dcPath=%s&dsName=LocalDS_0", name, url.PathEscape("/DC0"))},
				}})
				e.must(err)
				_, err = lv.Add(ctx, []types.ManagedObjectReference{task.Reference()})
				e.must(err)
				// A wait on the collector sees every filter's updates (so other tasks too, which
				// the driver ignores); it must see this one.
				for seen := false; !seen; {
					select {
					case got := <-done:
						seen = got == task.Reference()
					case <-ctx.Done():
						t.Fatalf("task %d (%v): the ListView's waiter never saw it end", i, task.Reference())
					}
				}
			}
			for i, waited := range waiters {
				select {
				case <-waited:
				case <-time.After(10 * time.Second):
					t.Errorf("Task.WaitForResult %d, beside the ListView's wait, never saw its task end", i)
				}
			}
		})
	}
}
