//! The CUSE kernel interface with no I/O, like fuser's `ll/`: the ABI structs and constants
//! ([`abi`]), parsing of request frames ([`request`]) and building of replies ([`reply`]).

pub mod abi;
pub mod reply;
pub mod request;

pub use request::{Operation, ParseError, Request};
