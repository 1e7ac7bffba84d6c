//! A bundle's root filesystem for runtime tests that need no image: the
//! busybox-static binary, links for the applets asked for, and an
//! `/etc/passwd` and `/etc/group` with `root` and `app` (1000:1000, home
//! `/home/app`).

use std::fs;
use std::path::Path;

pub fn busybox_rootfs(root: &Path, applets: &[&str]) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "home/app"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("copying /bin/busybox (apt-get install busybox-static)");
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
}
