//! What the supervisor gave the program, by the inode of the private node each file was
//! opened through (docs/supervisor.md, "Objects"): that names the object whatever fd number
//! or process holds it, and its release is the object's last close.

use std::collections::HashMap;

use vfio_shim::backend::DeviceHandle;
use vfio_shim::{ContainerId, DeviceGrant, GroupId, Shim};
use vfio_shim_sys::private_nodes::NodeId;
use vfio_shim_sys::KernelBackend;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Object {
    Container(ContainerId),
    Group(GroupId),
    /// A device's bound file, with every `GET_DEVICE_FD` that gave it (type1 makes a file per
    /// grant; here they share the device's one bound file, released together).
    Device(DeviceHandle, Vec<DeviceGrant>),
}

impl Object {
    /// The core's close of the object whose file was released.
    pub(crate) fn release(self, shim: &mut Shim<KernelBackend>) {
        match self {
            Object::Container(id) => shim.close_container(id),
            Object::Group(id) => shim.close_group(id),
            Object::Device(_, grants) => {
                for grant in grants {
                    shim.close_device(grant);
                }
            }
        }
    }
}

#[derive(Default)]
pub(crate) struct Objects(HashMap<NodeId, Object>);

impl Objects {
    pub(crate) fn get(&self, node: NodeId) -> Option<&Object> {
        self.0.get(&node)
    }

    pub(crate) fn insert(&mut self, node: NodeId, object: Object) {
        self.0.insert(node, object);
    }

    pub(crate) fn remove(&mut self, node: NodeId) -> Option<Object> {
        self.0.remove(&node)
    }

    /// A device grant more for the device file `node`.
    pub(crate) fn add_grant(&mut self, node: NodeId, grant: DeviceGrant) {
        match self.0.get_mut(&node) {
            Some(Object::Device(_, grants)) => grants.push(grant),
            _ => {
                self.0.insert(node, Object::Device(grant.handle, vec![grant]));
            }
        }
    }

    /// The node of the device file the program holds for `handle`, if it holds one.
    pub(crate) fn device_node(&self, handle: DeviceHandle) -> Option<NodeId> {
        self.0.iter().find(|(_, o)| matches!(o, Object::Device(h, _) if *h == handle)).map(|(n, _)| *n)
    }

    pub(crate) fn containers(&self) -> Vec<ContainerId> {
        self.0
            .values()
            .filter_map(|o| match o {
                Object::Container(c) => Some(*c),
                _ => None,
            })
            .collect()
    }
}
