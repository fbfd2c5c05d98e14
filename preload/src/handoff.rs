//! Container and group fds passed to another process over `SCM_RIGHTS` (a DPDK secondary
//! gets the primary's this way), format in [`vfio_shim::handoff`].
//!
//! The sender's `sendmsg` appends, after the application's fds, what the receiver needs to
//! act on them as on its own: the containers' iommufds, the groups' bound device cdevs (a
//! cdev can be bound only once, so the receiver must use the sender's) and a sealed memfd
//! describing it all. The receiver's `recvmsg` recognises the memfd, adopts the objects,
//! and hands the application exactly the fds that were sent, in a control buffer laid out
//! as the kernel would have laid it out in the application's own buffer.
//!
//! Received objects are shared with the sender, as the kernel's are under type1: each
//! process closing its fds drops only its own references (core `shared`).

use std::collections::HashMap;
use std::ffi::c_int;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use vfio_shim::handoff::{ContainerRecord, DeviceRecord, GroupRecord, Handoff, Origin};
use vfio_shim::{Backend, BoundDevice, ContainerId, Errno, GroupId};
use vfio_shim_sys::memfd::SealFlag;

use crate::real::real;
use crate::state::{set_cloexec, Object, State};

/// The kernel's `SCM_MAX_FD`: the most fds one message carries.
pub const SCM_MAX_FD: usize = 253;
const SEALS: SealFlag =
    SealFlag::F_SEAL_SEAL.union(SealFlag::F_SEAL_SHRINK).union(SealFlag::F_SEAL_GROW).union(SealFlag::F_SEAL_WRITE);
const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
/// `SCM_PIDFD` (include/linux/socket.h): a pidfd the kernel installs on receive.
const SCM_PIDFD: c_int = 4;
/// The largest handoff read back (65,535 mappings take about 3 MiB).
const MAX_TEXT: usize = 64 << 20;

fn align(n: usize) -> usize {
    (n + std::mem::size_of::<usize>() - 1) & !(std::mem::size_of::<usize>() - 1)
}

/// One control message: level, type, data.
#[derive(Debug, PartialEq, Eq)]
pub struct Cmsg<'a> {
    pub level: c_int,
    pub kind: c_int,
    pub data: &'a [u8],
}

/// The control messages in `ctrl`, walked as the kernel walks them (a header whose length
/// does not fit ends the walk). No allocation: the send path checks every message with it.
pub fn cmsgs(ctrl: &[u8]) -> impl Iterator<Item = Cmsg<'_>> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off > ctrl.len() || ctrl.len() - off < HDR {
            return None;
        }
        let h = &ctrl[off..];
        let len = usize::from_ne_bytes(h[..8].try_into().expect("8 bytes"));
        if len < HDR || len > h.len() {
            return None;
        }
        let level = c_int::from_ne_bytes(h[8..12].try_into().expect("4 bytes"));
        let kind = c_int::from_ne_bytes(h[12..16].try_into().expect("4 bytes"));
        off += align(len);
        Some(Cmsg { level, kind, data: &h[HDR..len] })
    })
}

pub fn is_rights(c: &Cmsg<'_>) -> bool {
    c.level == libc::SOL_SOCKET && c.kind == libc::SCM_RIGHTS
}

pub fn fds_of(data: &[u8]) -> impl Iterator<Item = c_int> + '_ {
    data.chunks_exact(4).map(|b| c_int::from_ne_bytes(b.try_into().expect("4 bytes")))
}

/// Every fd the `SCM_RIGHTS` messages of `ctrl` carry, in the order the receiver gets them.
pub fn rights(ctrl: &[u8]) -> Vec<c_int> {
    cmsgs(ctrl).filter(is_rights).flat_map(|c| fds_of(c.data)).collect()
}

fn push_cmsg(buf: &mut Vec<u8>, level: c_int, kind: c_int, data: &[u8]) {
    buf.resize(align(buf.len()), 0);
    buf.extend_from_slice(&(HDR + data.len()).to_ne_bytes());
    buf.extend_from_slice(&level.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align(buf.len()), 0);
}

/// The application's control buffer with one more `SCM_RIGHTS` message (the kernel merges
/// every `SCM_RIGHTS` of a message into one list, in order).
pub fn with_appended(ctrl: &[u8], fds: &[c_int]) -> Vec<u8> {
    // Where the kernel's walk looks for the next header: after the last valid one.
    let end = cmsgs(ctrl).last().map_or(0, |c| {
        let start = c.data.as_ptr() as usize - ctrl.as_ptr() as usize - HDR;
        (start + align(HDR + c.data.len())).min(ctrl.len())
    });
    let mut buf = ctrl[..end].to_vec();
    let data: Vec<u8> = fds.iter().flat_map(|f| f.to_ne_bytes()).collect();
    push_cmsg(&mut buf, libc::SOL_SOCKET, libc::SCM_RIGHTS, &data);
    buf
}

/// What the kernel would have written into a control buffer of `room` bytes (put_cmsg and
/// scm_detach_fds in net/core/scm.c): the bytes, whether it was truncated (`MSG_CTRUNC`),
/// and the fds that did not fit (never installed by the kernel: the caller closes them).
pub fn lay_out(msgs: &[(c_int, c_int, Vec<u8>)], room: usize) -> (Vec<u8>, bool, Vec<c_int>) {
    let mut out = Vec::new();
    let mut truncated = false;
    let mut dropped = Vec::new();
    for (level, kind, data) in msgs {
        let left = room - out.len();
        if *level == libc::SOL_SOCKET && *kind == SCM_PIDFD {
            // scm_pidfd_recv: installed only with room for CMSG_LEN(sizeof(int)).
            if left < HDR + 4 {
                truncated = true;
                dropped.extend(fds_of(data));
                continue;
            }
        }
        if *level == libc::SOL_SOCKET && *kind == libc::SCM_RIGHTS {
            let fds: Vec<c_int> = fds_of(data).collect();
            let fit = if left <= HDR { 0 } else { ((left - HDR) / 4).min(fds.len()) };
            if fit > 0 {
                let bytes: Vec<u8> = fds[..fit].iter().flat_map(|f| f.to_ne_bytes()).collect();
                let start = out.len();
                push_cmsg(&mut out, *level, *kind, &bytes);
                out.truncate(start + (align(HDR + bytes.len())).min(left));
            }
            if fit < fds.len() {
                truncated = true;
                dropped.extend_from_slice(&fds[fit..]);
            }
            continue;
        }
        if left < HDR {
            truncated = true;
            continue;
        }
        let mut len = HDR + data.len();
        if left < len {
            truncated = true;
            len = left;
        }
        let start = out.len();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&level.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&data[..len - HDR]);
        out.resize(start + align(HDR + data.len()).min(left), 0);
    }
    (out, truncated, dropped)
}

/// The description as a sealed memfd (close-on-exec here; the receiver gets its own flags).
pub fn memfd_of(text: &str) -> Result<OwnedFd, Errno> {
    vfio_shim_sys::memfd::sealed(c"vfio-shim-handoff", text.as_bytes(), SEALS)
}

/// The handoff in `fd`, if `fd` is one: a memfd sealed exactly as [`memfd_of`] seals it,
/// holding a valid description.
pub fn read_handoff(fd: c_int) -> Option<Handoff> {
    // SAFETY: `fd` was just received and is open for the duration of this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    if vfio_shim_sys::memfd::seals(fd).ok()? != SEALS {
        return None;
    }
    let magic = b"vfio-shim-handoff ";
    let mut head = [0u8; 18];
    if vfio_shim_sys::memfd::read_at(fd, &mut head, 0).ok()? != head.len() || &head != magic {
        return None;
    }
    let mut text = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = vfio_shim_sys::memfd::read_at(fd, &mut chunk, text.len() as u64).ok()?;
        if text.len() > MAX_TEXT {
            return None;
        }
        if n == 0 {
            break;
        }
        text.extend_from_slice(&chunk[..n]);
    }
    Handoff::decode(std::str::from_utf8(&text).ok()?).ok()
}

impl State {
    /// The handoff for a message carrying `app_fds`, and the fds to append before the memfd.
    /// `None` when none of them is one of our containers or groups.
    pub fn handoff_for(&self, app_fds: &[c_int]) -> Result<Option<(Handoff, Vec<c_int>)>, Errno> {
        let mut h = Handoff::default();
        let mut extras = Vec::new();
        for (i, fd) in app_fds.iter().enumerate() {
            let obj = match self.object(*fd) {
                Some(o @ Object::Container(c)) => {
                    self.describe_container(c, &mut h, &mut extras)?;
                    o
                }
                Some(o @ Object::Group(g)) => {
                    self.describe_group(g, &mut h, &mut extras)?;
                    o
                }
                _ => continue,
            };
            h.slots.push((i, self.origin_of(obj)));
        }
        Ok((!h.slots.is_empty()).then_some((h, extras)))
    }

    fn describe_container(&self, c: ContainerId, h: &mut Handoff, extras: &mut Vec<c_int>) -> Result<Origin, Errno> {
        let origin = self.origin_of(Object::Container(c));
        if h.containers.iter().any(|r| r.origin == origin) {
            return Ok(origin);
        }
        let e = self.shim.export_container(c).ok_or(Errno::EBADF)?;
        extras.push(self.shim.backend().iommufd_raw_fd(e.ctx).ok_or(Errno::EBADF)?);
        h.containers.push(ContainerRecord {
            origin,
            iommufd: extras.len() - 1,
            iommu: e.iommu,
            noiommu_driver: e.noiommu_driver,
        });
        Ok(origin)
    }

    fn describe_group(&self, g: GroupId, h: &mut Handoff, extras: &mut Vec<c_int>) -> Result<(), Errno> {
        let origin = self.origin_of(Object::Group(g));
        if h.groups.iter().any(|r| r.origin == origin) {
            return Ok(());
        }
        let e = self.shim.export_group(g).ok_or(Errno::EBADF)?;
        let container = e.container.map(|c| self.describe_container(c, h, extras)).transpose()?;
        let backend = self.shim.backend();
        let mut devices = Vec::new();
        for d in e.devices {
            extras.push(backend.device_raw_fd(d.handle).ok_or(Errno::EBADF)?);
            let mut info = d.info;
            info.cdev = Some(backend.device_cdev(d.handle).ok_or(Errno::EBADF)?.to_owned());
            devices.push(DeviceRecord {
                info,
                fd: extras.len() - 1,
                dev_id: backend.device_dev_id(d.handle).ok_or(Errno::EBADF)?,
                attached: d.attached,
            });
        }
        h.groups.push(GroupRecord { origin, number: e.number, noiommu: e.noiommu, container, devices });
        Ok(())
    }

    /// Adopts what a handoff describes: `app_fds` are the fds the application received,
    /// `extras` the appended ones (taken as they are used; the rest are closed by the caller).
    /// On failure nothing of it is adopted.
    pub fn adopt_handoff(
        &mut self,
        app_fds: &[c_int],
        extras: &mut [Option<OwnedFd>],
        h: Handoff,
    ) -> Result<(), Errno> {
        if h.slots.iter().any(|(i, _)| *i >= app_fds.len()) {
            return Err(Errno::EINVAL);
        }
        if h.slots.iter().any(|(i, _)| app_fds[*i] < 0 || app_fds[*i] as usize >= crate::table::MAX_FDS) {
            return Err(Errno::EMFILE);
        }
        let mut made: Vec<Object> = Vec::new();
        let r = self.import_records(extras, h, &mut made).map(|(named, h)| {
            for (i, origin) in &h.slots {
                if let Some(obj) = named.get(origin) {
                    self.adopt(app_fds[*i], *obj);
                }
            }
        });
        if r.is_err() {
            // Nothing of a handoff that does not add up stays: what was imported goes again.
            for obj in made {
                match obj {
                    Object::Container(c) => self.shim.close_container(c),
                    Object::Group(g) => self.shim.close_group(g),
                    Object::Device(_) => {}
                }
            }
        }
        r
    }

    fn import_records(
        &mut self,
        extras: &mut [Option<OwnedFd>],
        h: Handoff,
        made: &mut Vec<Object>,
    ) -> Result<(HashMap<Origin, Object>, Handoff), Errno> {
        let mut named = HashMap::new();
        let mut take = |i: usize| extras.get_mut(i).and_then(Option::take).ok_or(Errno::EINVAL);
        for c in &h.containers {
            let obj = match self.held(c.origin) {
                Some(o @ Object::Container(_)) => o,
                _ => {
                    let ctx = self.shim.backend_mut().adopt_iommufd(take(c.iommufd)?)?;
                    let obj = Object::Container(self.shim.import_container(ctx, c.iommu.clone(), c.noiommu_driver));
                    made.push(obj);
                    self.name(obj, c.origin);
                    obj
                }
            };
            named.insert(c.origin, obj);
        }
        for g in &h.groups {
            if let Some(o @ Object::Group(_)) = self.held(g.origin) {
                named.insert(g.origin, o);
                continue;
            }
            let container = match g.container {
                None => None,
                Some(o) => match named.get(&o) {
                    Some(Object::Container(c)) => Some(*c),
                    _ => return Err(Errno::EINVAL),
                },
            };
            let ctx = container.and_then(|c| self.shim.container_iommufd(c));
            let ioas = container.and_then(|c| self.shim.container_ioas(c));
            let mut devices = Vec::new();
            let mut adopt_all = || -> Result<(), Errno> {
                for d in &g.devices {
                    let ctx = ctx.ok_or(Errno::EINVAL)?;
                    let cdev = d.info.cdev.as_deref().ok_or(Errno::EINVAL)?;
                    let attached = if d.attached { Some(ioas.ok_or(Errno::EINVAL)?) } else { None };
                    let fd = take(d.fd)?;
                    let handle = self.shim.backend_mut().adopt_device(fd, cdev, ctx, d.dev_id, attached)?;
                    devices.push(BoundDevice { info: d.info.clone(), handle, attached: d.attached });
                }
                Ok(())
            };
            let imported =
                adopt_all().and_then(|()| self.shim.import_group(g.number, g.noiommu, container, devices.clone()));
            let obj = match imported {
                Ok(id) => Object::Group(id),
                Err(e) => {
                    devices.iter().for_each(|d| self.shim.backend_mut().device_close(d.handle));
                    return Err(e);
                }
            };
            made.push(obj);
            self.name(obj, g.origin);
            named.insert(g.origin, obj);
        }
        Ok((named, h))
    }

    fn name(&mut self, obj: Object, origin: Origin) {
        self.origins.insert(obj, origin);
    }
}

/// Writes into `out` what the kernel would have written there for the received control
/// messages `got`, less a handoff, whose objects `adopt` takes (the application's fds that
/// were delivered, the appended fds, the description). Fds that do not fit are closed: the
/// kernel would never have installed them. Returns the bytes used and `MSG_CTRUNC`.
pub fn deliver(
    got: &[u8],
    out: &mut [u8],
    adopt: impl FnOnce(&[c_int], &mut [Option<OwnedFd>], Handoff),
) -> (usize, bool) {
    // A handoff has at least two fds (one of the application's and the memfd): anything
    // less that fits is the kernel's bytes as they are, found without allocating.
    let fd_bytes: usize = cmsgs(got).filter(is_rights).map(|c| c.data.len()).sum();
    if fd_bytes < 8 && got.len() <= out.len() {
        out[..got.len()].copy_from_slice(got);
        return (got.len(), false);
    }
    let fds = rights(got);
    // A handoff is at least one fd of the application's and the memfd; with
    // SO_RIGHTS_NOTRUNC the kernel may put negative errnos where fds did not fit.
    let handoff = fds.last().filter(|_| fds.len() >= 2 && fds.iter().all(|f| *f >= 0)).and_then(|last| {
        let h = read_handoff(*last)?;
        let appended = h.max_fd_index().map_or(Some(0), |i| i.checked_add(1))?;
        (fds.len() > appended.checked_add(1)?).then_some((h, fds.len() - 1 - appended))
    });
    let Some((mut h, n_app)) = handoff else {
        if got.len() <= out.len() {
            out[..got.len()].copy_from_slice(got);
            return (got.len(), false);
        }
        let msgs: Vec<_> = cmsgs(got).map(|c| (c.level, c.kind, c.data.to_vec())).collect();
        return write_out(&msgs, out).0;
    };
    let app_fds = &fds[..n_app];
    let own = |fd: c_int| {
        // SAFETY: the kernel just installed `fd` for this message; nobody else knows it.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let mut extras: Vec<Option<OwnedFd>> = fds[n_app..fds.len() - 1]
        .iter()
        .map(|f| {
            // Ours are never inherited over exec.
            set_cloexec(*f, true);
            Some(own(*f))
        })
        .collect();
    drop(own(fds[fds.len() - 1]));
    let app_bytes: Vec<u8> = app_fds.iter().flat_map(|f| f.to_ne_bytes()).collect();
    let mut msgs = Vec::new();
    let mut rights_done = false;
    for c in cmsgs(got) {
        if !is_rights(&c) {
            msgs.push((c.level, c.kind, c.data.to_vec()));
        } else if !rights_done && !app_fds.is_empty() {
            msgs.push((c.level, c.kind, app_bytes.clone()));
            rights_done = true;
        }
    }
    let ((used, truncated), dropped) = write_out(&msgs, out);
    h.slots.retain(|(i, _)| app_fds.get(*i).is_some_and(|fd| !dropped.contains(fd)));
    if !h.slots.is_empty() {
        adopt(app_fds, &mut extras, h);
    }
    (used, truncated)
}

/// [`lay_out`] into `out`, closing the fds that did not fit.
fn write_out(msgs: &[(c_int, c_int, Vec<u8>)], out: &mut [u8]) -> ((usize, bool), Vec<c_int>) {
    let (bytes, truncated, dropped) = lay_out(msgs, out.len());
    out[..bytes.len()].copy_from_slice(&bytes);
    for fd in &dropped {
        // SAFETY: an fd the kernel installed for this message that the caller never sees.
        unsafe { (real().close)(*fd) };
    }
    ((bytes.len(), truncated), dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rights_msg(fds: &[c_int]) -> (c_int, c_int, Vec<u8>) {
        (libc::SOL_SOCKET, libc::SCM_RIGHTS, fds.iter().flat_map(|f| f.to_ne_bytes()).collect())
    }

    #[test]
    fn appended_rights_follow_the_application_s_messages() {
        let creds = (libc::SOL_SOCKET, libc::SCM_CREDENTIALS, vec![7u8; 12]);
        let (app, _, _) = lay_out(&[creds.clone(), rights_msg(&[5])], 4096);
        let buf = with_appended(&app, &[9, 10]);
        let seen: Vec<_> = cmsgs(&buf).map(|c| (c.level, c.kind, c.data.to_vec())).collect();
        assert_eq!(seen, vec![creds, rights_msg(&[5]), rights_msg(&[9, 10])]);
        assert_eq!(rights(&buf), vec![5, 9, 10]);
        assert_eq!(buf.len() % 8, 0);
    }

    #[test]
    fn layout_truncates_as_the_kernel_does() {
        // CMSG_SPACE(4 * 3) = 32: exactly room for three fds.
        let (b, t, d) = lay_out(&[rights_msg(&[3, 4, 5])], 32);
        assert_eq!((b.len(), t, d), (32, false, vec![]));
        assert_eq!(rights(&b), vec![3, 4, 5]);
        // CMSG_LEN(4) = 20: one fd fits, the rest are dropped and MSG_CTRUNC is set.
        let (b, t, d) = lay_out(&[rights_msg(&[3, 4, 5])], 20);
        assert_eq!((b.len(), t, d), (20, true, vec![4, 5]));
        assert_eq!(rights(&b), vec![3]);
        // No room even for a header: nothing, truncated.
        let (b, t, d) = lay_out(&[rights_msg(&[3])], 8);
        assert_eq!((b.len(), t, d), (0, true, vec![3]));
        // Other messages are cut to the room left, with cmsg_len saying so.
        let (b, t, _) = lay_out(&[(libc::SOL_SOCKET, libc::SCM_CREDENTIALS, vec![1; 12])], 20);
        assert_eq!((b.len(), t), (20, true));
        assert_eq!(usize::from_ne_bytes(b[..8].try_into().unwrap()), 20);
    }

    #[test]
    fn appended_after_the_last_header_not_the_buffer_end() {
        // A buffer with room for three fds carrying one: the kernel's walk looks for the
        // next header right after the first (CMSG_ALIGN(cmsg_len)), not at the buffer end.
        let mut app = with_appended(&[], &[5]);
        app.resize(32, 0);
        let buf = with_appended(&app, &[9]);
        assert_eq!(rights(&buf), vec![5, 9]);
        assert_eq!(buf.len(), 48);
    }

    #[test]
    fn a_pidfd_without_room_is_dropped() {
        let pidfd = (libc::SOL_SOCKET, SCM_PIDFD, 7i32.to_ne_bytes().to_vec());
        let (b, t, d) = lay_out(std::slice::from_ref(&pidfd), 19);
        assert_eq!((b.len(), t, d), (0, true, vec![7]));
        let (b, t, d) = lay_out(&[pidfd], 24);
        assert_eq!((b.len(), t, d), (24, false, vec![]));
    }

    #[test]
    fn a_broken_header_ends_the_walk() {
        let mut buf = with_appended(&[], &[3]);
        buf[..8].copy_from_slice(&4usize.to_ne_bytes());
        assert_eq!(cmsgs(&buf).count(), 0);
        assert_eq!(cmsgs(&buf[..10]).count(), 0);
    }
}
