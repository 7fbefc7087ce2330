package main

// Wrappers around govmomi v0.53.0 simulator objects, for what the vSphere CSI driver calls that
// the simulator lacks or only books. Each wrapper embeds the upstream object, so every method it
// does not define is the upstream one; where it can, a wrapper does its part and then delegates.
//
// How they are put in place:
//   - CNS and VSLM live in registries of their own; a second endpoint (registered in init, so it
//     runs after the upstream ones) adds a registry whose manager has the same reference, and
//     Service.RegisterSDK merges it over the upstream manager.
//   - The vim25 VStorageObjectManager cannot be replaced in the registry: upstream code reaches it
//     through Registry.VStorageObjectManager(), which asserts its concrete type. Registry.Handler
//     (the simulator's per-call hook) puts a wrapper into the calling session instead (see
//     install), for SOAP calls only. The same hook wraps a VirtualMachine for AttachDisk_Task
//     and DetachDisk_Task.

import (
	"context"
	"fmt"
	"log"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/vmware/govmomi/cns"
	cnsmethods "github.com/vmware/govmomi/cns/methods"
	cnssim "github.com/vmware/govmomi/cns/simulator"
	cnstypes "github.com/vmware/govmomi/cns/types"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/units"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vslm"
	vslmmethods "github.com/vmware/govmomi/vslm/methods"
	vslmsim "github.com/vmware/govmomi/vslm/simulator"
	vslmtypes "github.com/vmware/govmomi/vslm/types"
)

func init() {
	simulator.RegisterEndpoint(func(s *simulator.Service, r *simulator.Registry) {
		if !r.IsVPX() {
			return
		}
		// The ssoadmin endpoint takes over login checks (SessionManager.ValidLogin) and files the
		// -username "user@domain" as the principal {user@domain, vsphere.local} but looks a login
		// up as {user, domain}: no "@" name could log in (the stock vcsim failure). Check the
		// configured credentials instead, accepting both spellings of a domain user, as vCenter
		// does.
		if u := s.Listen.User; u != nil && u != simulator.DefaultLogin {
			want, _ := u.Password()
			r.SessionManager().ValidLogin = func(req *types.Login) bool {
				return principal(req.UserName) == principal(u.Username()) && req.Password == want
			}
		}
		cr := cnssim.New()
		cr.Put(&cnsManager{cr.Get(cns.CnsVolumeManagerInstance).(*cnssim.CnsVolumeManager)})
		s.RegisterSDK(cr)

		vr := vslmsim.New()
		ref := vr.Get(vslm.ServiceInstance).(*vslmsim.ServiceInstance).Content.VStorageObjectManager
		vr.Put(&vslmManager{vr.Get(ref).(*vslmsim.VStorageObjectManager)})
		s.RegisterSDK(vr)
	})
}

// principal returns `domain\user` for "user@domain" and `DOMAIN\user` (domain in lower case).
func principal(name string) string {
	if user, domain, ok := strings.Cut(name, "@"); ok {
		return strings.ToLower(domain) + `\` + user
	}
	if domain, user, ok := strings.Cut(name, `\`); ok {
		return strings.ToLower(domain) + `\` + user
	}
	return name
}

// install hooks the vim25 wrappers into the model's registry. The dispatcher asks
// Registry.Handler first, but then prefers what the caller's session resolves the reference to,
// and a session falls back to the registry's own object; so the hook puts the wrapper into the
// session's registry, where it is found first (and, for the property collector, unwrapped to the
// embedded object).
func install(model *simulator.Model) {
	r := model.Map()
	vsom := r.VStorageObjectManager().Self
	defaultCollector := model.ServiceContent.PropertyCollector
	r.Handler = func(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
		var w mo.Reference
		switch {
		case m.This == defaultCollector && ctx.Map == r:
			// The session's default collector (collector.go), made on the session's first call.
			if c, ok := sessionObject(ctx, m.This).(*collector); ok {
				return c, nil
			}
			if ctx.Session != nil {
				w = newCollector(ctx, m.This)
			}
		case m.This == vsom:
			if _, ok := sessionObject(ctx, m.This).(*vsomWrapper); !ok {
				w = &vsomWrapper{ctx.Map.VStorageObjectManager()}
			}
		case m.This == authorizationManager && m.Name == "HasPrivilegeOnEntities":
			if _, ok := sessionObject(ctx, m.This).(*authWrapper); !ok {
				if auth, ok := ctx.Map.Get(m.This).(*simulator.AuthorizationManager); ok {
					w = &authWrapper{auth}
				}
			}
		case m.This.Type == "ListView" && (m.Name == "ModifyListView" || m.Name == "ResetListView"):
			if lv, ok := sessionObject(ctx, m.This).(*simulator.ListView); ok {
				w = &listView{lv}
			}
		case m.This.Type == "VirtualMachine" && (m.Name == "AttachDisk_Task" || m.Name == "DetachDisk_Task"):
			if _, ok := sessionObject(ctx, m.This).(*vmWrapper); !ok {
				if vm, ok := ctx.Map.Get(m.This).(*simulator.VirtualMachine); ok {
					w = &vmWrapper{vm}
				}
			}
		}
		if w != nil && ctx.Session != nil {
			ctx.Session.Registry.Put(w)
		}
		return w, nil
	}
}

func sessionObject(ctx *simulator.Context, ref types.ManagedObjectReference) mo.Reference {
	if ctx.Session == nil {
		return nil
	}
	return ctx.Session.Registry.Get(ref)
}

// ---- ListView ----------------------------------------------------------------------------------

// listView: upstream's ModifyListView tells the property filters that the view changed while the
// call still holds the view's lock (view -> filter), and WaitForUpdatesEx collects a filter's
// objects, the view among them, while it holds that filter's lock (filter -> view). The CSI
// driver waits on every CNS task through one WaitForUpdatesEx on a ListView and adds each task to
// that view as it starts, so the two meet and vcsim deadlocks (seen with v0.53: the syncer hung
// in ModifyListView, every later CNS call queued behind it). The wrapper changes the view under
// its lock as upstream does, but tells the filters (which only mark themselves for a re-sync on
// their next wait) after the call has returned its lock.
type listView struct{ *simulator.ListView }

func (v *listView) ModifyListView(ctx *simulator.Context, req *types.ModifyListView) soap.HasFault {
	unresolved := v.add(ctx, req.Add)
	for _, ref := range req.Remove {
		simulator.RemoveReference(&v.View, ref)
	}
	if len(req.Add)+len(req.Remove) != 0 {
		v.changed(ctx)
	}
	return &methods.ModifyListViewBody{Res: &types.ModifyListViewResponse{Returnval: unresolved}}
}

func (v *listView) ResetListView(ctx *simulator.Context, req *types.ResetListView) soap.HasFault {
	v.View = nil
	unresolved := v.add(ctx, req.Obj)
	v.changed(ctx)
	return &methods.ResetListViewBody{Res: &types.ResetListViewResponse{Returnval: unresolved}}
}

// add appends refs to the view, as upstream does, and returns those no object answers to.
func (v *listView) add(ctx *simulator.Context, refs []types.ManagedObjectReference) []types.ManagedObjectReference {
	var unresolved []types.ManagedObjectReference
	for _, ref := range refs {
		if ctx.Session.Get(ref) == nil {
			unresolved = append(unresolved, ref)
		}
		v.View = append(v.View, ref)
	}
	return unresolved
}

// changed notifies the filters (no property change to apply: the view is already changed) from
// a goroutine, so not under the view's lock.
func (v *listView) changed(ctx *simulator.Context) {
	go ctx.Map.Update(ctx, v.ListView, nil)
}

// ---- CNS ---------------------------------------------------------------------------------------

// cnsManager: upstream v0.53 keeps CNS volumes as real FCDs (create, delete, query, metadata,
// extend bookkeeping), but CnsCreateVolume ignores BackingDiskUrlPath (the syncer's registration
// of in-tree VMDKs: its task has no result), attach/detach only record a map entry with a
// constant disk UUID, extend does not grow the FCD or its VMDK, and snapshots are not FCD
// snapshots.
type cnsManager struct {
	*cnssim.CnsVolumeManager
}

// CnsCreateVolume registers the disk named by BackingDiskUrlPath as an FCD (RegisterDisk, or the
// FCD it already is) and then lets upstream create the volume by BackingDiskId, as upstream does
// for a static FCD. Like vCenter it answers CnsAlreadyRegisteredFault (with the id) for a disk
// that already is a CNS volume, and from 8.0u3 registering sets keepAfterDeleteVm (the driver
// relies on that: it then skips ProtectVolumeFromVMDeletion, or calls it as a re-registration).
func (m *cnsManager) CnsCreateVolume(ctx *simulator.Context, req *cnstypes.CnsCreateVolume) soap.HasFault {
	if len(req.CreateSpecs) == 1 {
		spec := &req.CreateSpecs[0]
		if d, ok := spec.BackingObjectDetails.(*cnstypes.CnsBlockBackingDetails); ok && (d.BackingDiskId != "" || d.BackingDiskUrlPath != "") {
			vctx := ctx.For(vim25.Path)
			if id, fault := m.register(vctx, spec.Name, d); fault != nil {
				res := &cnstypes.CnsVolumeCreateResult{CnsVolumeOperationResult: opResult(id, fault)}
				return &cnsmethods.CnsCreateVolumeBody{Res: &cnstypes.CnsCreateVolumeResponse{Returnval: m.answer(vctx, "CnsCreateVolume", res)}}
			}
		}
	}
	return settled(ctx, m.CnsVolumeManager.CnsCreateVolume(ctx, req))
}

// settled waits for the task a CNS method answered before the method returns, so while the
// request still holds the CNS manager's lock. Upstream runs the tasks of CnsCreateVolume,
// CnsDeleteVolume, CnsUpdateVolumeMetadata, CnsQueryVolumeInfo and CnsQueryAsync on the vim25
// registry's context, whose lock is not the CNS manager's: their reads and writes of the volume
// map raced with every other CNS call (a concurrent map iteration and write, which is fatal: it
// stopped vcsim in the middle of an e2e run while the syncer queried all volumes and the driver
// registered new ones). Their modelled latency is a method delay (-method-delay), taken before
// the lock.
func settled(ctx *simulator.Context, body soap.HasFault) soap.HasFault {
	if ref := taskOf(body); ref != nil {
		if task, ok := ctx.For(vim25.Path).Map.Get(*ref).(*simulator.Task); ok {
			task.Wait()
		}
	}
	return body
}

func taskOf(body soap.HasFault) *types.ManagedObjectReference {
	switch b := body.(type) {
	case *cnsmethods.CnsCreateVolumeBody:
		if b.Res != nil {
			return &b.Res.Returnval
		}
	case *cnsmethods.CnsDeleteVolumeBody:
		if b.Res != nil {
			return &b.Res.Returnval
		}
	case *cnsmethods.CnsUpdateVolumeBody:
		if b.Res != nil {
			return &b.Res.Returnval
		}
	case *cnsmethods.CnsQueryVolumeInfoBody:
		if b.Res != nil {
			return &b.Res.Returnval
		}
	case *cnsmethods.CnsQueryAsyncBody:
		if b.Res != nil {
			return &b.Res.Returnval
		}
	}
	return nil
}

func (m *cnsManager) CnsDeleteVolume(ctx *simulator.Context, req *cnstypes.CnsDeleteVolume) soap.HasFault {
	return settled(ctx, m.CnsVolumeManager.CnsDeleteVolume(ctx, req))
}

// CnsUpdateVolumeMetadata updates a volume's entities as CNS does: each entity of the update is
// added, or replaces the volume's entity of the same type, namespace, name and cluster, or (its
// delete flag set) removes it; the volume's other entities stay. Upstream sets the volume's
// entities to the update's alone, so a PV's update after its claim's dropped the claim: driver
// 3.3.1's syncer sends them apart, and the claim was missing from CNS after a migration (suite
// run 6, `TestUpdateMetadataKeepsOtherEntities`).
func (m *cnsManager) CnsUpdateVolumeMetadata(ctx *simulator.Context, req *cnstypes.CnsUpdateVolumeMetadata) soap.HasFault {
	for i := range req.UpdateSpecs {
		spec := &req.UpdateSpecs[i]
		spec.Metadata.EntityMetadata = mergeEntities(m.entities(spec.VolumeId), spec.Metadata.EntityMetadata)
	}
	return settled(ctx, m.CnsVolumeManager.CnsUpdateVolumeMetadata(ctx, req))
}

// entities: the volume's entity metadata as upstream keeps it.
func (m *cnsManager) entities(id cnstypes.CnsVolumeId) []cnstypes.BaseCnsEntityMetadata {
	body := m.CnsVolumeManager.CnsQueryVolume(context.Background(), &cnstypes.CnsQueryVolume{
		Filter: &cnstypes.CnsQueryFilter{VolumeIds: []cnstypes.CnsVolumeId{id}},
	}).(*cnsmethods.CnsQueryVolumeBody)
	if body.Res == nil {
		return nil
	}
	for _, v := range body.Res.Returnval.Volumes {
		if v.VolumeId.Id == id.Id {
			return v.Metadata.EntityMetadata
		}
	}
	return nil
}

func entityKey(e cnstypes.BaseCnsEntityMetadata) string {
	base := e.GetCnsEntityMetadata()
	if k, ok := e.(*cnstypes.CnsKubernetesEntityMetadata); ok {
		return strings.Join([]string{k.EntityType, k.Namespace, base.EntityName, base.ClusterID}, "\x00")
	}
	return base.EntityName + "\x00" + base.ClusterID
}

func mergeEntities(current, update []cnstypes.BaseCnsEntityMetadata) []cnstypes.BaseCnsEntityMetadata {
	merged := slices.Clone(current)
	for _, e := range update {
		key := entityKey(e)
		merged = slices.DeleteFunc(merged, func(c cnstypes.BaseCnsEntityMetadata) bool { return entityKey(c) == key })
		if !e.GetCnsEntityMetadata().Delete {
			merged = append(merged, e)
		}
	}
	return merged
}

func (m *cnsManager) CnsQueryVolumeInfo(ctx *simulator.Context, req *cnstypes.CnsQueryVolumeInfo) soap.HasFault {
	return settled(ctx, m.CnsVolumeManager.CnsQueryVolumeInfo(ctx, req))
}

func (m *cnsManager) CnsQueryAsync(ctx *simulator.Context, req *cnstypes.CnsQueryAsync) soap.HasFault {
	return settled(ctx, m.CnsVolumeManager.CnsQueryAsync(ctx, req))
}

func (m *cnsManager) register(vctx *simulator.Context, name string, d *cnstypes.CnsBlockBackingDetails) (cnstypes.CnsVolumeId, types.BaseMethodFault) {
	var obj *simulator.VStorageObject
	if d.BackingDiskId == "" {
		var fault types.BaseMethodFault
		if obj, fault = registerURL(vctx, d.BackingDiskUrlPath, name); fault != nil {
			log.Printf("CnsCreateVolume %s: %T", d.BackingDiskUrlPath, fault)
			return cnstypes.CnsVolumeId{}, fault
		}
		d.BackingDiskId = obj.Config.Id.Id
	} else if obj = findFCD(vctx, d.BackingDiskId); obj == nil {
		return cnstypes.CnsVolumeId{}, nil // upstream answers (InvalidArgument)
	}
	if versionAtLeast(vctx, 803) {
		obj.Config.KeepAfterDeleteVm = types.NewBool(true)
	}
	id := cnstypes.CnsVolumeId{Id: obj.Config.Id.Id}
	if m.isVolume(id) {
		return id, &cnstypes.CnsAlreadyRegisteredFault{VolumeId: id}
	}
	log.Printf("CnsCreateVolume: registering FCD %s (%s) %s", id.Id, fcdPath(obj), d.BackingDiskUrlPath)
	return id, nil
}

// CnsAttachVolume really attaches the FCD to the VM (a VirtualDisk with vDiskId on a free SCSI
// unit), answering the disk's backing UUID as diskUUID. The driver reads diskUUID, and on a
// ResourceInUse fault looks for a disk whose vDiskId is the volume id on the VM's hardware.
func (m *cnsManager) CnsAttachVolume(ctx *simulator.Context, req *cnstypes.CnsAttachVolume) soap.HasFault {
	vctx := ctx.For(vim25.Path)
	task := simulator.CreateTask(m, "CnsAttachVolume", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		if len(req.AttachSpecs) == 0 {
			return nil, &types.InvalidArgument{InvalidProperty: "CnsAttachVolumeSpec"}
		}
		batch := new(cnstypes.CnsVolumeOperationBatchResult)
		for _, spec := range req.AttachSpecs {
			uuid, fault := m.attach(vctx, spec)
			batch.VolumeResults = append(batch.VolumeResults, &cnstypes.CnsVolumeAttachResult{
				CnsVolumeOperationResult: opResult(spec.VolumeId, fault),
				DiskUUID:                 uuid,
			})
		}
		return batch, nil
	})
	return &cnsmethods.CnsAttachVolumeBody{Res: &cnstypes.CnsAttachVolumeResponse{Returnval: task.Run(vctx)}}
}

func (m *cnsManager) attach(vctx *simulator.Context, spec cnstypes.CnsVolumeAttachDetachSpec) (string, types.BaseMethodFault) {
	vm, ok := vctx.Map.Get(spec.Vm).(*simulator.VirtualMachine)
	if !ok {
		return "", &types.ManagedObjectNotFound{Obj: spec.Vm}
	}
	obj := findFCD(vctx, spec.VolumeId.Id)
	if obj == nil || !m.isVolume(spec.VolumeId) {
		return "", &cnstypes.CnsVolumeNotFoundFault{VolumeId: spec.VolumeId}
	}
	if owner, _ := attachedTo(vctx, obj); owner != nil {
		return "", &types.ResourceInUse{Type: "VirtualMachine", Name: owner.Name}
	}
	var uuid string
	var fault types.BaseMethodFault
	vctx.WithLock(vm, func() { uuid, fault = attachFCD(vctx, vm, obj, nil, nil) })
	log.Printf("CnsAttachVolume %s -> %s: %s %v", spec.VolumeId.Id, vm.Name, uuid, fault)
	return uuid, fault
}

// CnsDetachVolume really removes the disk from the VM (the VMDK and the FCD stay). A volume that
// is not on that VM answers NotFound, which the driver takes as "already detached" after
// checking the VM's hardware; a VM that no longer exists answers ManagedObjectNotFound.
func (m *cnsManager) CnsDetachVolume(ctx *simulator.Context, req *cnstypes.CnsDetachVolume) soap.HasFault {
	vctx := ctx.For(vim25.Path)
	task := simulator.CreateTask(m, "CnsDetachVolume", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		if len(req.DetachSpecs) == 0 {
			return nil, &types.InvalidArgument{InvalidProperty: "CnsDetachVolumeSpec"}
		}
		batch := new(cnstypes.CnsVolumeOperationBatchResult)
		for _, spec := range req.DetachSpecs {
			res := opResult(spec.VolumeId, m.detach(vctx, spec))
			batch.VolumeResults = append(batch.VolumeResults, &res)
		}
		return batch, nil
	})
	return &cnsmethods.CnsDetachVolumeBody{Res: &cnstypes.CnsDetachVolumeResponse{Returnval: task.Run(vctx)}}
}

func (m *cnsManager) detach(vctx *simulator.Context, spec cnstypes.CnsVolumeAttachDetachSpec) types.BaseMethodFault {
	vm, ok := vctx.Map.Get(spec.Vm).(*simulator.VirtualMachine)
	if !ok {
		return &types.ManagedObjectNotFound{Obj: spec.Vm}
	}
	obj := findFCD(vctx, spec.VolumeId.Id)
	if obj == nil || !m.isVolume(spec.VolumeId) {
		return new(types.NotFound)
	}
	var fault types.BaseMethodFault
	vctx.WithLock(vm, func() { fault = detachFCD(vctx, vm, obj) })
	log.Printf("CnsDetachVolume %s <- %s: %v", spec.VolumeId.Id, vm.Name, fault)
	return fault
}

// CnsExtendVolume grows the FCD and its VMDK (and the disk on the VM it is attached to), then
// lets upstream update the CNS volume.
func (m *cnsManager) CnsExtendVolume(ctx *simulator.Context, req *cnstypes.CnsExtendVolume) soap.HasFault {
	if len(req.ExtendSpecs) == 1 {
		vctx := ctx.For(vim25.Path)
		spec := req.ExtendSpecs[0]
		if obj := findFCD(vctx, spec.VolumeId.Id); obj != nil && m.isVolume(spec.VolumeId) {
			if fault := extendFCD(vctx, obj, spec.CapacityInMb); fault != nil {
				res := opResult(spec.VolumeId, fault)
				return &cnsmethods.CnsExtendVolumeBody{Res: &cnstypes.CnsExtendVolumeResponse{Returnval: m.answer(vctx, "CnsExtendVolume", &res)}}
			}
		}
	}
	return m.CnsVolumeManager.CnsExtendVolume(ctx, req)
}

// CnsCreateSnapshots: upstream books the snapshot; vCenter takes it as an FCD snapshot, so the
// same id is added to the FCD's snapshots (RetrieveSnapshotInfo).
func (m *cnsManager) CnsCreateSnapshots(ctx *simulator.Context, req *cnstypes.CnsCreateSnapshots) soap.HasFault {
	body := m.CnsVolumeManager.CnsCreateSnapshots(ctx, req).(*cnsmethods.CnsCreateSnapshotsBody)
	vctx := ctx.For(vim25.Path)
	for _, r := range results(vctx, body.Res.Returnval) {
		if s, ok := r.(*cnstypes.CnsSnapshotCreateResult); ok && s.Fault == nil {
			if obj := findFCD(vctx, s.Snapshot.VolumeId.Id); obj != nil {
				obj.Snapshots = append(obj.Snapshots, types.VStorageObjectSnapshotInfoVStorageObjectSnapshot{
					Id:              &types.ID{Id: s.Snapshot.SnapshotId.Id},
					BackingObjectId: uuid.New().String(),
					CreateTime:      s.Snapshot.CreateTime,
					Description:     s.Snapshot.Description,
				})
			}
		}
	}
	return body
}

// CnsDeleteSnapshots removes the FCD snapshot CnsCreateSnapshots added.
func (m *cnsManager) CnsDeleteSnapshots(ctx *simulator.Context, req *cnstypes.CnsDeleteSnapshots) soap.HasFault {
	body := m.CnsVolumeManager.CnsDeleteSnapshots(ctx, req).(*cnsmethods.CnsDeleteSnapshotBody)
	vctx := ctx.For(vim25.Path)
	for _, r := range results(vctx, body.Res.Returnval) {
		if s, ok := r.(*cnstypes.CnsSnapshotDeleteResult); ok && s.Fault == nil {
			if obj := findFCD(vctx, s.VolumeId.Id); obj != nil {
				obj.Snapshots = slices.DeleteFunc(obj.Snapshots, func(x types.VStorageObjectSnapshotInfoVStorageObjectSnapshot) bool {
					return x.Id != nil && x.Id.Id == s.SnapshotId.Id
				})
			}
		}
	}
	return body
}

// CnsQueryVolume and CnsQueryAllVolume answer what upstream answers, but with the volumes'
// backingObjectDetails typed (xsi:type): the upstream CnsVolume field tag lacks "typeattr", so
// clients decode the base CnsBackingObjectDetails and the driver's type assertions to
// CnsBlockBackingDetails (backing disk path, BackingDiskObjectId) fail. vCenter sends the type.
// Not done for CnsQueryAsync: its result travels as a task property, which the simulator copies
// through the registered (untyped) types; the driver's vanilla paths only call the interface's
// GetCnsBackingObjectDetails() on those.
func (m *cnsManager) CnsQueryVolume(ctx context.Context, req *cnstypes.CnsQueryVolume) soap.HasFault {
	if req.Filter == nil {
		// Upstream dereferences the filter and panics while holding the manager's lock, which
		// wedges every later CNS call: a filter sent without its xsi:type decodes to nil.
		return &cnsmethods.CnsQueryVolumeBody{Fault_: simulator.Fault("filter is required", &types.InvalidArgument{InvalidProperty: "filter"})}
	}
	body := m.CnsVolumeManager.CnsQueryVolume(ctx, req).(*cnsmethods.CnsQueryVolumeBody)
	return &cnsQueryVolumeBody{Res: &CnsQueryVolumeResponse{Returnval: typed(body.Res.Returnval)}}
}

func (m *cnsManager) CnsQueryAllVolume(ctx context.Context, req *cnstypes.CnsQueryAllVolume) soap.HasFault {
	body := m.CnsVolumeManager.CnsQueryAllVolume(ctx, req).(*cnsmethods.CnsQueryAllVolumeBody)
	return &cnsQueryAllVolumeBody{Res: &CnsQueryAllVolumeResponse{Returnval: typed(body.Res.Returnval)}}
}

type cnsVolume struct {
	cnstypes.CnsVolume
	BackingObjectDetails cnstypes.BaseCnsBackingObjectDetails `xml:"backingObjectDetails,omitempty,typeattr"`
}

type cnsQueryResult struct {
	cnstypes.CnsQueryResult
	Volumes []cnsVolume `xml:"volumes,omitempty"`
}

// The simulator names the response element after the Go type of Res.
type CnsQueryVolumeResponse struct {
	Returnval cnsQueryResult `xml:"returnval"`
}

type CnsQueryAllVolumeResponse struct {
	Returnval cnsQueryResult `xml:"returnval"`
}

type cnsQueryVolumeBody struct {
	Res    *CnsQueryVolumeResponse `xml:"urn:vsan CnsQueryVolumeResponse,omitempty"`
	Fault_ *soap.Fault             `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault,omitempty"`
}

func (b *cnsQueryVolumeBody) Fault() *soap.Fault { return b.Fault_ }

type cnsQueryAllVolumeBody struct {
	Res    *CnsQueryAllVolumeResponse `xml:"urn:vsan CnsQueryAllVolumeResponse,omitempty"`
	Fault_ *soap.Fault                `xml:"http://schemas.xmlsoap.org/soap/envelope/ Fault,omitempty"`
}

func (b *cnsQueryAllVolumeBody) Fault() *soap.Fault { return b.Fault_ }

func typed(r cnstypes.CnsQueryResult) cnsQueryResult {
	out := cnsQueryResult{CnsQueryResult: r}
	for _, v := range r.Volumes {
		out.Volumes = append(out.Volumes, cnsVolume{CnsVolume: v, BackingObjectDetails: v.BackingObjectDetails})
	}
	out.CnsQueryResult.Volumes = nil
	return out
}

// isVolume asks upstream whether id is a CNS volume.
func (m *cnsManager) isVolume(id cnstypes.CnsVolumeId) bool {
	body := m.CnsVolumeManager.CnsQueryVolume(context.Background(), &cnstypes.CnsQueryVolume{
		Filter: &cnstypes.CnsQueryFilter{VolumeIds: []cnstypes.CnsVolumeId{id}},
	}).(*cnsmethods.CnsQueryVolumeBody)
	return len(body.Res.Returnval.Volumes) != 0
}

// answer runs a task that only returns res, as CNS reports a per-volume failure: a successful
// task whose volume result carries the fault.
func (m *cnsManager) answer(vctx *simulator.Context, name string, res cnstypes.BaseCnsVolumeOperationResult) types.ManagedObjectReference {
	return simulator.CreateTask(m, name, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return &cnstypes.CnsVolumeOperationBatchResult{VolumeResults: []cnstypes.BaseCnsVolumeOperationResult{res}}, nil
	}).Run(vctx)
}

func opResult(id cnstypes.CnsVolumeId, fault types.BaseMethodFault) cnstypes.CnsVolumeOperationResult {
	res := cnstypes.CnsVolumeOperationResult{VolumeId: id}
	if fault != nil {
		res.Fault = &types.LocalizedMethodFault{Fault: fault, LocalizedMessage: fmt.Sprintf("%T", fault)}
	}
	return res
}

// results waits for a CNS task and returns its volume results.
func results(vctx *simulator.Context, ref types.ManagedObjectReference) []cnstypes.BaseCnsVolumeOperationResult {
	if wait(vctx, ref) == nil {
		if b, ok := vctx.Map.Get(ref).(*simulator.Task).Info.Result.(*cnstypes.CnsVolumeOperationBatchResult); ok {
			return b.VolumeResults
		}
	}
	return nil
}

// ---- VSLM (/vslm/sdk) --------------------------------------------------------------------------

// vslmManager adds VslmSetVStorageObjectControlFlags / VslmClearVStorageObjectControlFlags, which
// the driver calls below vCenter 8.0u3 (-api-version older than 8.0.3) to protect a migrated
// volume from VM deletion. The upstream VSLM simulator has neither.
type vslmManager struct {
	*vslmsim.VStorageObjectManager
}

func (m *vslmManager) VslmSetVStorageObjectControlFlags(ctx *simulator.Context, req *vslmtypes.VslmSetVStorageObjectControlFlags) soap.HasFault {
	body := new(vslmmethods.VslmSetVStorageObjectControlFlagsBody)
	if fault := setControlFlags(findFCD(ctx.For(vim25.Path), req.Id.Id), req.ControlFlags, true); fault != nil {
		body.Fault_ = simulator.Fault("", fault)
	} else {
		body.Res = new(vslmtypes.VslmSetVStorageObjectControlFlagsResponse)
	}
	return body
}

func (m *vslmManager) VslmClearVStorageObjectControlFlags(ctx *simulator.Context, req *vslmtypes.VslmClearVStorageObjectControlFlags) soap.HasFault {
	body := new(vslmmethods.VslmClearVStorageObjectControlFlagsBody)
	if fault := setControlFlags(findFCD(ctx.For(vim25.Path), req.Id.Id), req.ControlFlags, false); fault != nil {
		body.Fault_ = simulator.Fault("", fault)
	} else {
		body.Res = new(vslmtypes.VslmClearVStorageObjectControlFlagsResponse)
	}
	return body
}

// ---- vim25 VStorageObjectManager ----------------------------------------------------------------

// vsomWrapper adds SetVStorageObjectControlFlags / ClearVStorageObjectControlFlags (missing
// upstream), makes ExtendDisk_Task grow the VMDK too (upstream changes capacityInMB only) and
// fills in capacityInMB after RegisterDisk from the VMDK (upstream leaves it 0).
type vsomWrapper struct {
	*simulator.VcenterVStorageObjectManager
}

func (m *vsomWrapper) SetVStorageObjectControlFlags(ctx *simulator.Context, req *types.SetVStorageObjectControlFlags) soap.HasFault {
	body := new(methods.SetVStorageObjectControlFlagsBody)
	if fault := requireFileManagement(ctx, req.Datastore); fault != nil {
		body.Fault_ = fault
	} else if fault := setControlFlags(m.Catalog()[req.Datastore][req.Id], req.ControlFlags, true); fault != nil {
		body.Fault_ = simulator.Fault("", fault)
	} else {
		body.Res = new(types.SetVStorageObjectControlFlagsResponse)
	}
	return body
}

func (m *vsomWrapper) ClearVStorageObjectControlFlags(ctx *simulator.Context, req *types.ClearVStorageObjectControlFlags) soap.HasFault {
	body := new(methods.ClearVStorageObjectControlFlagsBody)
	if fault := requireFileManagement(ctx, req.Datastore); fault != nil {
		body.Fault_ = fault
	} else if fault := setControlFlags(m.Catalog()[req.Datastore][req.Id], req.ControlFlags, false); fault != nil {
		body.Fault_ = simulator.Fault("", fault)
	} else {
		body.Res = new(types.ClearVStorageObjectControlFlagsResponse)
	}
	return body
}

func (m *vsomWrapper) ExtendDiskTask(ctx *simulator.Context, req *types.ExtendDisk_Task) soap.HasFault {
	task := simulator.CreateTask(m, "extendDisk", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		obj := m.Catalog()[req.Datastore][req.Id]
		if obj == nil {
			return nil, new(types.InvalidArgument)
		}
		return nil, extendFCD(ctx, obj, req.NewCapacityInMB)
	})
	return &methods.ExtendDisk_TaskBody{Res: &types.ExtendDisk_TaskResponse{Returnval: task.Run(ctx)}}
}

func (m *vsomWrapper) RegisterDisk(ctx *simulator.Context, req *types.RegisterDisk) soap.HasFault {
	if ds := datastoreOfURL(ctx, req.Path); ds != nil {
		if fault := requireFileManagement(ctx, *ds); fault != nil {
			return &methods.RegisterDiskBody{Fault_: fault}
		}
	}
	body := m.VcenterVStorageObjectManager.RegisterDisk(ctx, req).(*methods.RegisterDiskBody)
	if body.Res != nil {
		cfg := &body.Res.Returnval.Config
		if obj := m.Catalog()[cfg.Backing.GetBaseConfigInfoBackingInfo().Datastore][cfg.Id]; obj != nil {
			if obj.Config.CapacityInMB == 0 {
				dc := datacenterOf(ctx.Map, cfg.Backing.GetBaseConfigInfoBackingInfo().Datastore)
				if desc, _, fault := ctx.Map.FileManager().DiskDescriptor(ctx, &dc.Self, fcdPath(obj)); fault == nil {
					obj.Config.CapacityInMB = desc.Capacity() / units.MB
				}
			}
			body.Res.Returnval = obj.VStorageObject
		}
	}
	return body
}

// ---- VirtualMachine -----------------------------------------------------------------------------

// vmWrapper: upstream AttachDisk_Task / DetachDisk_Task only set the FCD's consumerId ("TODO: add
// device"); these add and remove the VirtualDisk as vCenter does.
type vmWrapper struct {
	*simulator.VirtualMachine
}

func (vm *vmWrapper) AttachDiskTask(ctx *simulator.Context, req *types.AttachDisk_Task) soap.HasFault {
	task := simulator.CreateTask(vm, "attachDisk", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		obj := findFCD(ctx, req.DiskId.Id)
		if obj == nil {
			return nil, new(types.InvalidArgument)
		}
		if owner, _ := attachedTo(ctx, obj); owner != nil {
			return nil, &types.ResourceInUse{Type: "VirtualMachine", Name: owner.Name}
		}
		var ckey *int32 // 0: any controller
		if req.ControllerKey != 0 {
			ckey = &req.ControllerKey
		}
		_, fault := attachFCD(ctx, vm.VirtualMachine, obj, ckey, req.UnitNumber)
		return nil, fault
	})
	return &methods.AttachDisk_TaskBody{Res: &types.AttachDisk_TaskResponse{Returnval: task.Run(ctx)}}
}

func (vm *vmWrapper) DetachDiskTask(ctx *simulator.Context, req *types.DetachDisk_Task) soap.HasFault {
	task := simulator.CreateTask(vm, "detachDisk", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		obj := findFCD(ctx, req.DiskId.Id)
		if obj == nil {
			return nil, new(types.InvalidArgument)
		}
		return nil, detachFCD(ctx, vm.VirtualMachine, obj)
	})
	return &methods.DetachDisk_TaskBody{Res: &types.DetachDisk_TaskResponse{Returnval: task.Run(ctx)}}
}

// ---- FCD helpers (vim25 context) ----------------------------------------------------------------

func findFCD(ctx *simulator.Context, id string) *simulator.VStorageObject {
	for _, objs := range ctx.Map.VStorageObjectManager().Catalog() {
		if obj, ok := objs[types.ID{Id: id}]; ok {
			return obj
		}
	}
	return nil
}

func fcdPath(obj *simulator.VStorageObject) string {
	return obj.Config.Backing.(*types.BaseConfigInfoDiskFileBackingInfo).FilePath
}

// registerURL returns the FCD of the VMDK at a datastore URL
// (https://host/folder/<path>?dcPath=<dc>&dsName=<ds>), registering it if it is not one yet.
func registerURL(ctx *simulator.Context, raw, name string) (*simulator.VStorageObject, types.BaseMethodFault) {
	u, err := url.Parse(raw)
	if err != nil || !strings.HasPrefix(u.Path, "/folder/") {
		return nil, &types.InvalidArgument{InvalidProperty: "backingDiskUrlPath"}
	}
	q := u.Query()
	file := fmt.Sprintf("[%s] %s", q.Get("dsName"), strings.TrimPrefix(u.Path, "/folder/"))
	vsom := ctx.Map.VStorageObjectManager()
	for ds, objs := range vsom.Catalog() {
		if dc := datacenterOf(ctx.Map, ds); dc == nil || dc.Name != path.Base(q.Get("dcPath")) {
			continue
		}
		for _, obj := range objs {
			if fcdPath(obj) == file {
				return obj, nil
			}
		}
	}
	body := (&vsomWrapper{vsom}).RegisterDisk(ctx, &types.RegisterDisk{This: vsom.Self, Path: raw, Name: name}).(*methods.RegisterDiskBody)
	if body.Fault_ != nil {
		if f, ok := body.Fault_.VimFault().(types.BaseMethodFault); ok {
			return nil, f
		}
		return nil, new(types.NotFound)
	}
	cfg := body.Res.Returnval.Config
	return vsom.Catalog()[cfg.Backing.GetBaseConfigInfoBackingInfo().Datastore][cfg.Id], nil
}

// setControlFlags maps the vslmVStorageObjectControlFlag values onto the BaseConfigInfo fields
// RetrieveVStorageObject reports them in (keepAfterDeleteVm, relocationDisabled,
// changedBlockTrackingEnabled); the API has no separate list of flags.
func setControlFlags(obj *simulator.VStorageObject, flags []string, value bool) types.BaseMethodFault {
	if obj == nil {
		return new(types.NotFound)
	}
	var fields []**bool
	for _, f := range flags {
		switch types.VslmVStorageObjectControlFlag(f) {
		case types.VslmVStorageObjectControlFlagKeepAfterDeleteVm:
			fields = append(fields, &obj.Config.KeepAfterDeleteVm)
		case types.VslmVStorageObjectControlFlagDisableRelocation:
			fields = append(fields, &obj.Config.RelocationDisabled)
		case types.VslmVStorageObjectControlFlagEnableChangedBlockTracking:
			fields = append(fields, &obj.Config.ChangedBlockTrackingEnabled)
		default:
			return &types.InvalidArgument{InvalidProperty: "controlFlags"}
		}
	}
	for _, p := range fields {
		*p = types.NewBool(value)
	}
	log.Printf("control flags %v=%v on FCD %s", flags, value, obj.Config.Id.Id)
	return nil
}

// attachedTo finds the VM whose hardware holds the FCD's disk (by vDiskId, or by file for a disk
// added with ReconfigVM).
func attachedTo(ctx *simulator.Context, obj *simulator.VStorageObject) (*simulator.VirtualMachine, *types.VirtualDisk) {
	for _, e := range ctx.Map.All("VirtualMachine") {
		if vm, ok := e.(*simulator.VirtualMachine); ok {
			if disk := diskOf(vm, obj); disk != nil {
				return vm, disk
			}
		}
	}
	return nil, nil
}

func diskOf(vm *simulator.VirtualMachine, obj *simulator.VStorageObject) *types.VirtualDisk {
	for _, d := range vm.Config.Hardware.Device {
		if disk, ok := d.(*types.VirtualDisk); ok {
			if disk.VDiskId != nil && disk.VDiskId.Id == obj.Config.Id.Id {
				return disk
			}
			if b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok && b.GetVirtualDeviceFileBackingInfo().FileName == fcdPath(obj) {
				return disk
			}
		}
	}
	return nil
}

// attachFCD adds the FCD's disk to the VM on a free SCSI unit, or on the given one, and returns
// the disk's UUID. The caller holds the VM's lock, so no other attach picks the same unit.
// The simulator's own choice of a unit (when none is given) stays on the first controller, so
// the unit is chosen here: the controllers by bus number, units 0-15 but the controller's own.
func attachFCD(ctx *simulator.Context, vm *simulator.VirtualMachine, obj *simulator.VStorageObject, ckey, unit *int32) (string, types.BaseMethodFault) {
	devices := object.VirtualDeviceList(vm.Config.Hardware.Device)
	used := map[[2]int32]bool{}
	for _, d := range devices {
		if v := d.GetVirtualDevice(); v.UnitNumber != nil {
			used[[2]int32{v.ControllerKey, *v.UnitNumber}] = true
		}
	}
	ctrls := devices.SelectByType((*types.VirtualSCSIController)(nil))
	sort.Slice(ctrls, func(i, j int) bool {
		return ctrls[i].(types.BaseVirtualSCSIController).GetVirtualSCSIController().BusNumber <
			ctrls[j].(types.BaseVirtualSCSIController).GetVirtualSCSIController().BusNumber
	})
	var key, number int32 = 0, -1
	for _, c := range ctrls {
		sc := c.(types.BaseVirtualSCSIController).GetVirtualSCSIController()
		if ckey != nil && *ckey != sc.Key {
			continue
		}
		for u := int32(0); u < 16 && number < 0; u++ {
			if u != sc.ScsiCtlrUnitNumber && !used[[2]int32{sc.Key, u}] && (unit == nil || *unit == u) {
				key, number = sc.Key, u
			}
		}
		if number >= 0 {
			break
		}
	}
	if number < 0 {
		return "", &types.TooManyDevices{}
	}

	backing := obj.Config.Backing.(*types.BaseConfigInfoDiskFileBackingInfo)
	disk := &types.VirtualDisk{
		VirtualDevice: types.VirtualDevice{
			ControllerKey: key,
			UnitNumber:    &number,
			Backing: &types.VirtualDiskFlatVer2BackingInfo{
				VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: backing.FilePath, Datastore: &backing.Datastore},
				DiskMode:                     string(types.VirtualDiskModePersistent),
				ThinProvisioned:              types.NewBool(true),
			},
		},
		CapacityInKB:    obj.Config.CapacityInMB * 1024,
		CapacityInBytes: obj.Config.CapacityInMB * units.MB,
		VDiskId:         &types.ID{Id: obj.Config.Id.Id},
	}
	if fault := reconfigure(ctx, vm, types.VirtualDeviceConfigSpecOperationAdd, disk); fault != nil {
		return "", fault
	}
	obj.Config.ConsumerId = []types.ID{{Id: vm.Config.Uuid}}
	if disk := diskOf(vm, obj); disk != nil {
		return disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).Uuid, nil
	}
	return "", nil
}

// detachFCD removes the FCD's disk from the VM, keeping the file. The caller holds the VM's lock.
func detachFCD(ctx *simulator.Context, vm *simulator.VirtualMachine, obj *simulator.VStorageObject) types.BaseMethodFault {
	disk := diskOf(vm, obj)
	if disk == nil {
		return new(types.NotFound)
	}
	if fault := reconfigure(ctx, vm, types.VirtualDeviceConfigSpecOperationRemove, disk); fault != nil {
		return fault
	}
	obj.Config.ConsumerId = nil
	return nil
}

// extendFCD grows the VMDK (VirtualDiskManager.ExtendVirtualDisk_Task), the FCD's capacityInMB
// and the disk of the VM it is attached to. Shrinking is refused, as vCenter does.
func extendFCD(ctx *simulator.Context, obj *simulator.VStorageObject, mb int64) types.BaseMethodFault {
	if mb < obj.Config.CapacityInMB {
		return &types.InvalidArgument{InvalidProperty: "capacityInMB"}
	}
	if mb == obj.Config.CapacityInMB {
		return nil
	}
	ds := obj.Config.Backing.GetBaseConfigInfoBackingInfo().Datastore
	vdm, ok := ctx.Map.VirtualDiskManager().(interface {
		ExtendVirtualDiskTask(*simulator.Context, *types.ExtendVirtualDisk_Task) soap.HasFault
	})
	if !ok {
		return new(types.NotSupported)
	}
	body := vdm.ExtendVirtualDiskTask(ctx, &types.ExtendVirtualDisk_Task{
		This:          ctx.Map.VirtualDiskManager().Reference(),
		Name:          fcdPath(obj),
		Datacenter:    &datacenterOf(ctx.Map, ds).Self,
		NewCapacityKb: mb * 1024,
	}).(*methods.ExtendVirtualDisk_TaskBody)
	if fault := wait(ctx, body.Res.Returnval); fault != nil {
		return fault
	}
	obj.Config.CapacityInMB = mb
	if vm, disk := attachedTo(ctx, obj); vm != nil {
		grown := *disk
		grown.CapacityInKB, grown.CapacityInBytes = mb*1024, mb*units.MB
		var fault types.BaseMethodFault
		ctx.WithLock(vm, func() { fault = reconfigure(ctx, vm, types.VirtualDeviceConfigSpecOperationEdit, &grown) })
		return fault
	}
	return nil
}

// reconfigure runs the VM's own ReconfigVM_Task for one device change (no file operation).
func reconfigure(ctx *simulator.Context, vm *simulator.VirtualMachine, op types.VirtualDeviceConfigSpecOperation, dev types.BaseVirtualDevice) types.BaseMethodFault {
	spec := types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
		&types.VirtualDeviceConfigSpec{Operation: op, Device: dev},
	}}
	body := vm.ReconfigVMTask(ctx, &types.ReconfigVM_Task{This: vm.Self, Spec: spec}).(*methods.ReconfigVM_TaskBody)
	return wait(ctx, body.Res.Returnval)
}

func wait(ctx *simulator.Context, ref types.ManagedObjectReference) types.BaseMethodFault {
	task := ctx.Map.Get(ref).(*simulator.Task)
	task.Wait()
	if task.Info.Error != nil {
		return task.Info.Error.Fault
	}
	return nil
}

func datacenterOf(r *simulator.Registry, ref types.ManagedObjectReference) *simulator.Datacenter {
	for obj := r.Get(ref); obj != nil; {
		if dc, ok := obj.(*simulator.Datacenter); ok {
			return dc
		}
		e, ok := obj.(mo.Entity)
		if !ok || e.Entity().Parent == nil {
			return nil
		}
		obj = r.Get(*e.Entity().Parent)
	}
	return nil
}

// versionAtLeast compares About.Version the way the driver does ("8.0.3" -> 803).
func versionAtLeast(ctx *simulator.Context, want int) bool {
	si := ctx.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance)
	v := strings.ReplaceAll(si.Content.About.Version, ".", "") + "000"
	n, _ := strconv.Atoi(v[:3])
	return n >= want
}
