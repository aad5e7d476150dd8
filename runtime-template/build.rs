//! Empty: legion-runtime has a build script only so that its build-dependencies (syn, for
//! feature alignment with legionc's workspace, see Cargo.toml) are resolved on the host side.

fn main() {}
