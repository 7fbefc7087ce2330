package main

// Privileges. Upstream vcsim grants every privilege to every user: HasPrivilegeOnEntities answers
// true for anything and no method checks one, so a tool's privilege check could never fail here.
// This adds vCenter's rule for users that have permissions: the permission nearest to the entity
// (on it, or on the closest ancestor) gives its role's privileges there, the system privileges
// (System.Anonymous, System.View, System.Read) always hold; a user with no permission anywhere
// keeps upstream's "everything", so the rest of the environment is unchanged. RegisterDisk and
// Set/ClearVStorageObjectControlFlags require Datastore.FileManagement on the datastore, as the
// vSphere API reference gives for them.

import (
	"net/url"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const fileManagement = "Datastore.FileManagement"

var authorizationManager = types.ManagedObjectReference{Type: "AuthorizationManager", Value: "AuthorizationManager"}

type authWrapper struct {
	*simulator.AuthorizationManager
}

// HasPrivilegeOnEntities answers per entity and privilege (HasPrivilegeOnEntity's bare boolean
// list cannot carry a false through the simulator's encoder: omitempty drops it).
func (m *authWrapper) HasPrivilegeOnEntities(ctx *simulator.Context, req *types.HasPrivilegeOnEntities) soap.HasFault {
	var res []types.EntityPrivilege
	for _, entity := range req.Entity {
		answer := types.EntityPrivilege{Entity: entity}
		for _, id := range req.PrivId {
			answer.PrivAvailability = append(answer.PrivAvailability, types.PrivilegeAvailability{PrivId: id, IsGranted: granted(ctx, entity, id)})
		}
		res = append(res, answer)
	}
	return &methods.HasPrivilegeOnEntitiesBody{Res: &types.HasPrivilegeOnEntitiesResponse{Returnval: res}}
}

// granted: whether the caller's user holds privilege `priv` on `entity`.
func granted(ctx *simulator.Context, entity types.ManagedObjectReference, priv string) bool {
	if ctx.Session == nil || strings.HasPrefix(priv, "System.") {
		return true
	}
	auth, ok := ctx.Map.Get(authorizationManager).(*simulator.AuthorizationManager)
	if !ok {
		return true
	}
	user := principal(ctx.Session.UserName)
	for ref := &entity; ref != nil; {
		obj, ok := ctx.Map.Get(*ref).(mo.Entity)
		if !ok {
			return true
		}
		body := auth.RetrieveEntityPermissions(ctx, &types.RetrieveEntityPermissions{Entity: *ref}).(*methods.RetrieveEntityPermissionsBody)
		for _, p := range body.Res.Returnval {
			if principal(p.Principal) != user {
				continue
			}
			for _, role := range auth.RoleList {
				if role.RoleId == p.RoleId {
					for _, have := range role.Privilege {
						if have == priv {
							return true
						}
					}
				}
			}
			return false
		}
		ref = obj.Entity().Parent
	}
	return true
}

// requireFileManagement answers the fault vCenter gives when the caller lacks
// Datastore.FileManagement on the datastore.
func requireFileManagement(ctx *simulator.Context, ds types.ManagedObjectReference) *soap.Fault {
	if granted(ctx, ds, fileManagement) {
		return nil
	}
	return simulator.Fault("", &types.NoPermission{Object: &ds, PrivilegeId: fileManagement})
}

// datastoreOfURL: the datastore a RegisterDisk URL (…?dcPath=DC&dsName=DS) names.
func datastoreOfURL(ctx *simulator.Context, raw string) *types.ManagedObjectReference {
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	name := u.Query().Get("dsName")
	for _, obj := range ctx.Map.All("Datastore") {
		if ds, ok := obj.(*simulator.Datastore); ok && ds.Name == name {
			ref := ds.Self
			return &ref
		}
	}
	return nil
}
