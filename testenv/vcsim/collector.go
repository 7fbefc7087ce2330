package main

// ---- The session's default PropertyCollector -------------------------------------------------
//
// The CSI driver up to v3.3 waits for every CNS task through a ListView watched by
// WaitForUpdatesEx on its session's *default* PropertyCollector (3.4 on create a collector of
// their own), and its controller and syncer are two processes, two sessions, each waiting so.
// vCenter answers every such wait. The v0.53 simulator does not:
//   - its per-session copy of the default collector registers itself as the Map's change handler
//     under its reference, and every session's default collector has the same reference
//     ("propertyCollector"), so only the session whose first (initial) wait came last hears of
//     any change: the other process's ListView never learns that its tasks ended (the gdc-1.30
//     leg's attach hang; TestListViewOnDefaultCollector "another session");
//   - changes are queued in one list per collector that the first wait to tick drains, a
//     CancelWaitForUpdates reaches only the latest wait, which objects a filter has reported is
//     kept per filter (not per version), and a filter destroyed while another wait loops over
//     the collector's filters panics that wait.
//
// collector replaces the default collector in each session (install's Map.Handler puts one in
// the session's registry on the session's first call to it) and answers the way vCenter does:
//   - each version is a numbered set of changes; a wait with version V gets every change after V
//     (merged per filter), a wait without a version the current state of every filter; waits
//     at different versions on one collector each get what they have not seen;
//   - changes are found by comparing each filter's objects and property values with what it
//     last published, whenever the Map reported any change (a handler registered under a
//     reference of its own per collector), so nothing depends on which wait drains a queue;
//   - CancelWaitForUpdates ends every wait in progress on the collector; filters are ours
//     (DestroyPropertyFilter removes them under the collector's lock).
// Retrieval (RetrieveProperties(Ex), ContinueRetrievePropertiesEx, Fetch) and
// CreatePropertyCollector stay upstream's (embedded); collectors created by
// CreatePropertyCollector (what govmomi's Task.WaitForResult and driver 3.4+ use) stay upstream's.

import (
	"log"
	"net/http"
	"os"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// VCSIM_COLLECTOR_TRACE=1 logs each default-collector call and published version.
var collectorTrace = os.Getenv("VCSIM_COLLECTOR_TRACE") != ""

func tracePC(format string, args ...any) {
	if collectorTrace {
		log.Printf("collector: "+format, args...)
	}
}

const (
	pollInterval = 20 * time.Millisecond // as upstream: lets changes accumulate
	keepVersions = 4096                  // older versions are answered with the full state
)

type collector struct {
	simulator.PropertyCollector // retrieval, Fetch, CreatePropertyCollector

	session string // key of the session, for the trace
	dirty   atomic.Bool

	pub sync.Mutex // one publisher at a time; held while collecting (takes object locks)

	mu      sync.Mutex // leaf lock: never held while taking another
	filters []*filter
	events  *collectorEvents // registered with the Map while the collector has filters
	version int              // latest published version
	first   int              // oldest version still in log
	log     []published      // versions first+1 .. version
	cancel  chan struct{}    // closed by CancelWaitForUpdates, then replaced
}

type published struct {
	version int
	sets    []types.PropertyFilterUpdate
}

// filter is a PropertyFilter of a collector; state is what it last published (publisher only).
type filter struct {
	mo.PropertyFilter
	c     *collector
	state map[types.ManagedObjectReference]map[string]types.AnyType
}

func newCollector(ctx *simulator.Context, ref types.ManagedObjectReference) *collector {
	c := &collector{session: ctx.Session.Key, cancel: make(chan struct{})}
	c.Self = ref
	return c
}

// collectorEvents: the Map's change handler of one collector, under a reference of its own.
type collectorEvents struct {
	self types.ManagedObjectReference
	c    *collector
}

func (e *collectorEvents) Reference() types.ManagedObjectReference { return e.self }
func (e *collectorEvents) PutObject(*simulator.Context, mo.Reference) {
	e.c.dirty.Store(true)
}
func (e *collectorEvents) UpdateObject(*simulator.Context, mo.Reference, []types.PropertyChange) {
	e.c.dirty.Store(true)
}
func (e *collectorEvents) RemoveObject(*simulator.Context, types.ManagedObjectReference) {
	e.c.dirty.Store(true)
}

func (c *collector) CreateFilter(ctx *simulator.Context, req *types.CreateFilter) soap.HasFault {
	f := &filter{c: c, state: map[types.ManagedObjectReference]map[string]types.AnyType{}}
	f.Spec = req.Spec
	f.PartialUpdates = req.PartialUpdates
	f.Self = types.ManagedObjectReference{Type: "PropertyFilter"}
	ctx.Session.Put(f)

	c.mu.Lock()
	c.filters = append(c.filters, f)
	c.Filter = append(c.Filter, f.Self)
	if c.events == nil {
		c.events = &collectorEvents{self: types.ManagedObjectReference{Type: "PropertyCollector", Value: "events-" + uuid.NewString()}, c: c}
		ctx.Map.AddHandler(c.events)
	}
	c.mu.Unlock()
	c.dirty.Store(true)
	tracePC("%s: CreateFilter %s %s", c.session, f.Self.Value, describeSpec(&f.Spec))
	return &methods.CreateFilterBody{Res: &types.CreateFilterResponse{Returnval: f.Self}}
}

func (f *filter) DestroyPropertyFilter(ctx *simulator.Context, req *types.DestroyPropertyFilter) soap.HasFault {
	f.c.removeFilter(ctx, f)
	ctx.Session.Remove(ctx, f.Self)
	tracePC("%s: DestroyPropertyFilter %s", f.c.session, f.Self.Value)
	return &methods.DestroyPropertyFilterBody{Res: new(types.DestroyPropertyFilterResponse)}
}

func (c *collector) removeFilter(ctx *simulator.Context, f *filter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, g := range c.filters {
		if g == f {
			c.filters = append(c.filters[:i:i], c.filters[i+1:]...)
			break
		}
	}
	simulator.RemoveReference(&c.Filter, f.Self)
	if len(c.filters) == 0 && c.events != nil {
		ctx.Map.RemoveHandler(c.events)
		c.events = nil
	}
}

// DestroyPropertyCollector on the default collector: its waits end and its filters go.
func (c *collector) DestroyPropertyCollector(ctx *simulator.Context, req *types.DestroyPropertyCollector) soap.HasFault {
	c.CancelWaitForUpdates(&types.CancelWaitForUpdates{This: req.This})
	c.mu.Lock()
	filters := append([]*filter(nil), c.filters...)
	c.mu.Unlock()
	for _, f := range filters {
		c.removeFilter(ctx, f)
		ctx.Session.Remove(ctx, f.Self)
	}
	return &methods.DestroyPropertyCollectorBody{Res: new(types.DestroyPropertyCollectorResponse)}
}

func (c *collector) CancelWaitForUpdates(req *types.CancelWaitForUpdates) soap.HasFault {
	c.mu.Lock()
	close(c.cancel)
	c.cancel = make(chan struct{})
	c.mu.Unlock()
	tracePC("%s: CancelWaitForUpdates", c.session)
	return &methods.CancelWaitForUpdatesBody{Res: new(types.CancelWaitForUpdatesResponse)}
}

func (c *collector) WaitForUpdatesEx(ctx *simulator.Context, req *types.WaitForUpdatesEx) soap.HasFault {
	body := new(methods.WaitForUpdatesExBody)
	var max *int32
	if req.Options != nil {
		max = req.Options.MaxWaitSeconds
	}
	set, fault := c.wait(ctx, req.Version, max)
	if fault != nil {
		body.Fault_ = simulator.Fault("", fault)
		return body
	}
	body.Res = &types.WaitForUpdatesExResponse{Returnval: set}
	return body
}

// WaitForUpdates (deprecated, pyVmomi's WaitForTask uses it): waits until there is an update.
func (c *collector) WaitForUpdates(ctx *simulator.Context, req *types.WaitForUpdates) soap.HasFault {
	body := new(methods.WaitForUpdatesBody)
	set, fault := c.wait(ctx, req.Version, nil)
	if fault != nil {
		body.Fault_ = simulator.Fault("", fault)
		return body
	}
	body.Res = &types.WaitForUpdatesResponse{Returnval: *set}
	return body
}

// CheckForUpdates (deprecated): what changed since version, without waiting.
func (c *collector) CheckForUpdates(ctx *simulator.Context, req *types.CheckForUpdates) soap.HasFault {
	body := new(methods.CheckForUpdatesBody)
	set, fault := c.wait(ctx, req.Version, types.NewInt32(0))
	if fault != nil {
		body.Fault_ = simulator.Fault("", fault)
		return body
	}
	body.Res = &types.CheckForUpdatesResponse{Returnval: set}
	return body
}

// wait answers a wait for updates after version ("": the current state). maxWait nil: until
// there are updates or a cancel; 0: one check; > 0: at most that many seconds (nil set after).
func (c *collector) wait(ctx *simulator.Context, version string, maxWait *int32) (*types.UpdateSet, types.BaseMethodFault) {
	c.mu.Lock()
	canceled := c.cancel
	c.mu.Unlock()

	if version == "" {
		set := c.initial(ctx)
		tracePC("%s: WaitForUpdatesEx \"\" -> version %s, %s", c.session, set.Version, describeSet(set))
		return set, nil
	}
	since, err := strconv.Atoi(version)
	c.mu.Lock()
	latest := c.version
	c.mu.Unlock()
	if err != nil || since < 0 || since > latest {
		return nil, new(types.InvalidCollectorVersion)
	}

	var deadline <-chan time.Time
	if maxWait != nil && *maxWait > 0 {
		t := time.NewTimer(time.Duration(*maxWait) * time.Second)
		defer t.Stop()
		deadline = t.C
	}
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	gone := requestDone(ctx)
	for {
		c.publish(ctx)
		if set := c.since(since); set != nil {
			tracePC("%s: WaitForUpdatesEx %s -> version %s, %s", c.session, version, set.Version, describeSet(set))
			return set, nil
		}
		if set := c.full(ctx, since); set != nil { // version too old for the log
			return set, nil
		}
		if maxWait != nil && *maxWait == 0 {
			return nil, nil
		}
		select {
		case <-canceled:
			tracePC("%s: WaitForUpdatesEx %s canceled", c.session, version)
			return nil, new(types.RequestCanceled)
		case <-deadline:
			return nil, nil
		case <-gone:
			tracePC("%s: WaitForUpdatesEx %s: the client went away", c.session, version)
			return nil, new(types.RequestCanceled)
		case <-ticker.C:
		}
	}
}

// requestDone: closed when the HTTP request of the call ends (the client gave up on it or its
// connection closed), nil if unknown. A client that cancels a wait sends CancelWaitForUpdates
// after dropping the request, and that can arrive before the wait it cancels has started here,
// which would then hold its goroutine (and the server's Close) until the next change. The
// simulator keeps the request in an unexported field of Context; it is only read.
func requestDone(ctx *simulator.Context) <-chan struct{} {
	f := reflect.ValueOf(ctx).Elem().FieldByName("req")
	if !f.IsValid() || f.Type() != reflect.TypeOf((*http.Request)(nil)) {
		return nil
	}
	req := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface().(*http.Request)
	if req == nil {
		return nil
	}
	return req.Context().Done()
}

// initial publishes what changed, then returns every filter's state at the latest version.
func (c *collector) initial(ctx *simulator.Context) *types.UpdateSet {
	c.dirty.Store(true) // filters' objects may have changed without a Map event (a view's contents)
	c.pub.Lock()
	defer c.pub.Unlock()
	c.publishLocked(ctx)
	return c.state()
}

// full returns the state at the latest version if since is older than the log keeps, else nil.
func (c *collector) full(ctx *simulator.Context, since int) *types.UpdateSet {
	c.mu.Lock()
	old := since < c.first
	c.mu.Unlock()
	if !old {
		return nil
	}
	c.pub.Lock()
	defer c.pub.Unlock()
	return c.state()
}

// state: every live filter's objects as entering, at the latest version (caller holds pub).
func (c *collector) state() *types.UpdateSet {
	c.mu.Lock()
	filters := append([]*filter(nil), c.filters...)
	set := &types.UpdateSet{Version: strconv.Itoa(c.version)}
	c.mu.Unlock()
	for _, f := range filters {
		fu := types.PropertyFilterUpdate{Filter: f.Self}
		for _, obj := range sortedRefs(f.state) {
			fu.ObjectSet = append(fu.ObjectSet, types.ObjectUpdate{Kind: types.ObjectUpdateKindEnter, Obj: obj, ChangeSet: changes(f.state[obj], nil)})
		}
		if len(fu.ObjectSet) != 0 {
			set.FilterSet = append(set.FilterSet, fu)
		}
	}
	return set
}

// since merges the published changes after version, of the filters that still exist (nil: none).
func (c *collector) since(version int) *types.UpdateSet {
	c.mu.Lock()
	defer c.mu.Unlock()
	if version >= c.version || version < c.first {
		return nil
	}
	live := map[types.ManagedObjectReference]bool{}
	for _, f := range c.filters {
		live[f.Self] = true
	}
	var order []types.ManagedObjectReference
	merged := map[types.ManagedObjectReference]*types.PropertyFilterUpdate{}
	for _, p := range c.log[version-c.first:] {
		for _, fu := range p.sets {
			if !live[fu.Filter] {
				continue
			}
			m := merged[fu.Filter]
			if m == nil {
				m = &types.PropertyFilterUpdate{Filter: fu.Filter}
				merged[fu.Filter] = m
				order = append(order, fu.Filter)
			}
			m.ObjectSet = append(m.ObjectSet, fu.ObjectSet...)
		}
	}
	if len(order) == 0 {
		return nil
	}
	set := &types.UpdateSet{Version: strconv.Itoa(c.version)}
	for _, ref := range order {
		set.FilterSet = append(set.FilterSet, *merged[ref])
	}
	return set
}

func (c *collector) publish(ctx *simulator.Context) {
	if !c.dirty.Load() {
		return
	}
	c.pub.Lock()
	defer c.pub.Unlock()
	c.publishLocked(ctx)
}

// publishLocked compares each filter's objects and properties with what it last published and
// publishes the differences as a new version (caller holds pub).
func (c *collector) publishLocked(ctx *simulator.Context) {
	if !c.dirty.Swap(false) { // a change reported from now on sets it again
		return
	}
	c.mu.Lock()
	filters := append([]*filter(nil), c.filters...)
	c.mu.Unlock()

	var sets []types.PropertyFilterUpdate
	for _, f := range filters {
		now := c.collect(ctx, f)
		fu := types.PropertyFilterUpdate{Filter: f.Self}
		for _, obj := range sortedRefs(now) {
			props := now[obj]
			if before, ok := f.state[obj]; !ok {
				fu.ObjectSet = append(fu.ObjectSet, types.ObjectUpdate{Kind: types.ObjectUpdateKindEnter, Obj: obj, ChangeSet: changes(props, nil)})
			} else if cs := changes(props, before); len(cs) != 0 {
				fu.ObjectSet = append(fu.ObjectSet, types.ObjectUpdate{Kind: types.ObjectUpdateKindModify, Obj: obj, ChangeSet: cs})
			}
		}
		for _, obj := range sortedRefs(f.state) {
			if _, ok := now[obj]; !ok {
				fu.ObjectSet = append(fu.ObjectSet, types.ObjectUpdate{Kind: types.ObjectUpdateKindLeave, Obj: obj})
			}
		}
		f.state = now
		if len(fu.ObjectSet) != 0 {
			sets = append(sets, fu)
		}
	}
	if len(sets) == 0 {
		return
	}
	c.mu.Lock()
	c.version++
	c.log = append(c.log, published{version: c.version, sets: sets})
	if n := len(c.log) - keepVersions; n > 0 {
		c.log = append([]published(nil), c.log[n:]...)
		c.first += n
	}
	v := c.version
	c.mu.Unlock()
	tracePC("%s: version %d: %s", c.session, v, describeSet(&types.UpdateSet{FilterSet: sets}))
}

// collect retrieves the filter's objects and properties now, as RetrievePropertiesEx does (an
// object that is gone is left out; its values are copies taken under the object's lock).
func (c *collector) collect(ctx *simulator.Context, f *filter) map[types.ManagedObjectReference]map[string]types.AnyType {
	spec := f.Spec
	spec.ReportMissingObjectsInResults = types.NewBool(true)
	res := c.PropertyCollector.RetrievePropertiesEx(ctx, &types.RetrievePropertiesEx{SpecSet: []types.PropertyFilterSpec{spec}})
	now := map[types.ManagedObjectReference]map[string]types.AnyType{}
	body, ok := res.(*methods.RetrievePropertiesExBody)
	if !ok || body.Res == nil || body.Res.Returnval == nil {
		if res.Fault() != nil {
			tracePC("%s: filter %s: %s", c.session, f.Self.Value, res.Fault().String)
		}
		return now
	}
	for _, o := range body.Res.Returnval.Objects {
		props := map[string]types.AnyType{}
		for _, p := range o.PropSet {
			props[p.Name] = p.Val
		}
		now[o.Obj] = props
	}
	return now
}

// changes: the properties of now that differ from before (nil before: all), sorted by name; a
// property before had and now has not is assigned no value.
func changes(now, before map[string]types.AnyType) []types.PropertyChange {
	var cs []types.PropertyChange
	for name, val := range now {
		if old, ok := before[name]; before == nil || !ok || !reflect.DeepEqual(old, val) {
			cs = append(cs, types.PropertyChange{Name: name, Op: types.PropertyChangeOpAssign, Val: val})
		}
	}
	for name := range before {
		if _, ok := now[name]; !ok {
			cs = append(cs, types.PropertyChange{Name: name, Op: types.PropertyChangeOpAssign})
		}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	return cs
}

func sortedRefs[V any](m map[types.ManagedObjectReference]V) []types.ManagedObjectReference {
	refs := make([]types.ManagedObjectReference, 0, len(m))
	for ref := range m {
		refs = append(refs, ref)
	}
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].Type != refs[j].Type {
			return refs[i].Type < refs[j].Type
		}
		return refs[i].Value < refs[j].Value
	})
	return refs
}

func describeSpec(spec *types.PropertyFilterSpec) string {
	s := ""
	for _, o := range spec.ObjectSet {
		s += o.Obj.String() + " "
	}
	for _, p := range spec.PropSet {
		s += p.Type + "." + strconv.Quote(joinNames(p.PathSet)) + " "
	}
	return s
}

func joinNames(names []string) string {
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ","
		}
		s += n
	}
	return s
}

func describeSet(set *types.UpdateSet) string {
	s := ""
	for _, fu := range set.FilterSet {
		s += fu.Filter.Value + "["
		for _, ou := range fu.ObjectSet {
			s += string(ou.Kind) + " " + ou.Obj.Value
			for _, c := range ou.ChangeSet {
				if info, ok := c.Val.(types.TaskInfo); ok {
					s += " " + string(info.State)
				}
			}
			s += "; "
		}
		s += "] "
	}
	if s == "" {
		return "no updates"
	}
	return s
}
