//! The exported libc hooks, one file per family of calls.

mod exec;
mod fd;
mod ioctl;
mod open;
mod readlink;
mod scm_rights;
