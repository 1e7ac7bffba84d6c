//! TEMPORARY stub until the identity helper's module lands.
use nix::errno::Errno;
use oci_spec::runtime::Process;

pub struct Identity {
    uid: u32,
    gid: u32,
}

impl Identity {
    pub fn from_process(p: &Process) -> Result<Identity, String> {
        Ok(Identity {
            uid: p.user().uid(),
            gid: p.user().gid(),
        })
    }

    pub fn apply(&self) -> Result<(), (&'static str, Errno)> {
        let g = nix::unistd::Gid::from_raw(self.gid);
        let u = nix::unistd::Uid::from_raw(self.uid);
        nix::unistd::setgroups(&[]).map_err(|e| ("setgroups", e))?;
        nix::unistd::setresgid(g, g, g).map_err(|e| ("setresgid", e))?;
        nix::unistd::setresuid(u, u, u).map_err(|e| ("setresuid", e))?;
        Ok(())
    }
}
