//! The sandbox's network. By default the function gets a network namespace of its own:
//! Lambda functions reach the internet, never the developer's loopback (a registry, a
//! database, a debugger listening on 127.0.0.1). Outbound access comes from pasta
//! (Debian's `passt`) or slirp4netns, each told not to map the host's loopback into the
//! namespace. The Runtime API is reached from inside because its socket is *made* inside:
//! a short-lived helper joins the namespace, listens on 127.0.0.1:9001 there and hands us
//! the listening socket, so no host port is forwarded and every host loopback port stays
//! out of reach, with any provider or none.
//!
//! Not here: bwrap's arguments and the sandbox's life ([`super::sandbox`]).

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

/// What network the function gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Network {
    /// Its own namespace with outbound access through pasta or slirp4netns; the host's
    /// loopback is out of reach.
    #[default]
    Private,
    /// The host's network, loopback included.
    Host,
    /// Its own namespace with only a loopback interface (and the Runtime API on it).
    None,
}

/// Where the Runtime API listens inside a private namespace: Lambda's own address.
pub const RUNTIME_API_PORT: u16 = 9001;

/// Why the function's network could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkError {
    /// Neither pasta nor slirp4netns is on PATH.
    NoProvider,
    /// The provider ran but failed.
    Provider { program: String, said: String },
    /// The Runtime API socket could not be made inside the namespace.
    Listen {
        step: &'static str,
        cause: String,
        errno: Option<i32>,
    },
}

impl std::fmt::Display for NetworkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworkError::NoProvider => write!(
                f,
                "the function's private network needs pasta or slirp4netns, and neither is on PATH"
            ),
            NetworkError::Provider { program, said } => {
                write!(
                    f,
                    "{program} could not connect the sandbox's network: {said}"
                )
            }
            NetworkError::Listen { step, cause, .. } => {
                write!(
                    f,
                    "the Runtime API could not listen in the sandbox ({step}): {cause}"
                )
            }
        }
    }
}

impl std::error::Error for NetworkError {}

/// A program that connects a network namespace to the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    Pasta(PathBuf),
    Slirp4netns(PathBuf),
}

impl Provider {
    /// pasta if on `path` (a PATH-style list), else slirp4netns. pasta first: it needs no
    /// tap device of ours and keeps the host's addressing, so no private subnet of ours
    /// can collide with the user's networks.
    pub fn find(path: Option<&std::ffi::OsStr>) -> Result<Provider, NetworkError> {
        let find = |name: &str| super::sandbox::find_program(path, name);
        find("pasta")
            .map(Provider::Pasta)
            .or_else(|| find("slirp4netns").map(Provider::Slirp4netns))
            .ok_or(NetworkError::NoProvider)
    }

    /// The arguments that connect the namespace of process `pid`; `owner`, for anyone but
    /// root, is an inherited descriptor of the user namespace that owns it (bwrap's outer
    /// one: the sandbox's processes are in a nested one, which cannot enter it). Each
    /// provider maps the host's loopback into the namespace unless told not to, so it is
    /// told not to; pasta also forwards every host port it sees bound (`-T auto`) unless
    /// given `none`.
    pub fn args(&self, pid: u32, owner: Option<i32>, ready_fd: i32, exit_fd: i32) -> Vec<String> {
        let netns = format!("/proc/{pid}/ns/net");
        let as_root = owner.is_none();
        let userns = format!("/proc/self/fd/{}", owner.unwrap_or(-1));
        let mut args: Vec<String> = Vec::new();
        match self {
            Provider::Pasta(_) => {
                // In the foreground, as our child: a daemon would outlive the sandbox.
                args.extend(
                    ["--foreground", "--config-net", "--no-map-gw", "--quiet"].map(String::from),
                );
                for forward in ["-t", "-u", "-T", "-U"] {
                    args.extend([forward.to_string(), "none".to_string()]);
                }
                // As root, pasta would switch to nobody, who may not open the namespace.
                if as_root {
                    args.extend(["--runas".into(), "0".into()]);
                }
                args.extend(["--netns".into(), netns]);
                // Root may enter it directly; anyone else through its owner.
                if as_root {
                    args.push("--netns-only".into());
                } else {
                    args.extend(["--userns".into(), userns]);
                }
            }
            Provider::Slirp4netns(_) => {
                args.extend(["--configure", "--disable-host-loopback"].map(String::from));
                args.push(format!("--ready-fd={ready_fd}"));
                args.push(format!("--exit-fd={exit_fd}"));
                if !as_root {
                    args.push(format!("--userns-path={userns}"));
                }
                args.extend(["--netns-type=path".into(), netns, "tap0".into()]);
            }
        }
        args
    }

    pub fn name(&self) -> &'static str {
        match self {
            Provider::Pasta(_) => "pasta",
            Provider::Slirp4netns(_) => "slirp4netns",
        }
    }

    pub fn program(&self) -> &Path {
        match self {
            Provider::Pasta(p) | Provider::Slirp4netns(p) => p,
        }
    }
}

/// A TCP socket listening on 127.0.0.1:`port` inside the network namespace of `pid`.
///
/// Made by a forked child, because joining another user namespace (needed to enter a
/// namespace bwrap made for an unprivileged user) is refused to a threaded process. The
/// child makes only system calls and passes the socket back over a socket pair.
pub fn listen_inside(pid: u32, port: u16) -> Result<std::net::TcpListener, NetworkError> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let err = |step: &'static str, e: io::Error| NetworkError::Listen {
        step,
        cause: e.to_string(),
        errno: e.raw_os_error(),
    };
    let cstr = |s: String| CString::new(s).expect("no NUL in a /proc path");
    let net = cstr(format!("/proc/{pid}/ns/net"));
    let (ours, theirs) =
        std::os::unix::net::UnixDatagram::pair().map_err(|e| err("making a socket pair", e))?;
    // SAFETY: the child runs `in_child`, which only makes system calls, then _exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(err("forking", io::Error::last_os_error()));
    }
    if child == 0 {
        // SAFETY: see above; nothing here allocates or takes a lock.
        unsafe { libc::_exit(in_child(&net, port, theirs.as_raw_fd())) }
    }
    drop(theirs);
    let received = receive(ours.as_raw_fd());
    let mut status = 0;
    // SAFETY: waiting for our own child.
    while unsafe { libc::waitpid(child, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    match received {
        // SAFETY: a descriptor just received, owned by nobody else.
        Ok(Ok(fd)) => Ok(unsafe { std::net::TcpListener::from_raw_fd(fd) }),
        Ok(Err((step, errno))) => Err(err(STEPS[step], io::Error::from_raw_os_error(errno))),
        Err(e) => Err(err("receiving the socket", e)),
    }
}

/// ioctl_ns(2): a descriptor of the user namespace that owns a namespace.
const NS_GET_USERNS: libc::Ioctl = 0xb701;

/// The user namespace that owns the network namespace of `pid`.
pub fn netns_owner(pid: u32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let net = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    // SAFETY: an ioctl on a descriptor we hold; it returns a new one (close-on-exec).
    let fd = unsafe { libc::ioctl(net.as_raw_fd(), NS_GET_USERNS) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, ours alone.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

const STEPS: [&str; 4] = [
    "opening the namespace",
    "joining the namespace",
    "making the socket",
    "listening on 127.0.0.1",
];

/// Join the namespace, listen, send the socket (or the failed step and errno).
unsafe fn in_child(net: &CString, port: u16, to: i32) -> i32 {
    let fail = |step: u8| {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let mut msg = [0u8; 5];
        msg[0] = step;
        msg[1..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: a plain send of a stack buffer.
        unsafe { libc::send(to, msg.as_ptr().cast(), msg.len(), 0) };
        1
    };
    unsafe {
        let netfd = libc::open(net.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if netfd < 0 {
            return fail(0);
        }
        if libc::setns(netfd, libc::CLONE_NEWNET) != 0 {
            // Not ours to enter directly: enter the user namespace that owns it first
            // (bwrap made it for us, so we may).
            let userfd = libc::ioctl(netfd, NS_GET_USERNS);
            if userfd < 0
                || libc::setns(userfd, libc::CLONE_NEWUSER) != 0
                || libc::setns(netfd, libc::CLONE_NEWNET) != 0
            {
                return fail(1);
            }
        }
        let sock = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return fail(2);
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(sock, (&raw const addr).cast(), len) != 0 || libc::listen(sock, 128) != 0 {
            return fail(3);
        }
        send_fd(to, sock)
    }
}

/// Send `fd` over the socket `to`, with one byte of data; 0 when sent.
unsafe fn send_fd(to: i32, fd: i32) -> i32 {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Aligned room for one descriptor's control message.
    let mut control = [0u64; 4];
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::copy_nonoverlapping(
            (&raw const fd).cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            std::mem::size_of::<i32>(),
        );
        if libc::sendmsg(to, &msg, 0) == 1 {
            0
        } else {
            1
        }
    }
}

/// The socket the child sent, or the index of the step that failed and its errno.
type Received = Result<i32, (usize, i32)>;

fn receive(from: i32) -> io::Result<Received> {
    let mut data = [0u8; 5];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: a recvmsg into stack buffers sized above.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(from, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        {
            let mut fd = 0i32;
            std::ptr::copy_nonoverlapping(
                libc::CMSG_DATA(cmsg),
                (&raw mut fd).cast::<u8>(),
                std::mem::size_of::<i32>(),
            );
            return Ok(Ok(fd));
        }
        if n == 5 {
            let step = usize::from(data[0]).min(STEPS.len() - 1);
            let errno = i32::from_ne_bytes([data[1], data[2], data[3], data[4]]);
            return Ok(Err((step, errno)));
        }
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the helper ended without an answer",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_are_told_to_keep_the_hosts_loopback_out() {
        let pasta = Provider::Pasta("/usr/bin/pasta".into()).args(42, Some(9), 3, 4);
        let joined = pasta.join(" ");
        assert!(joined.contains("--no-map-gw"), "{joined}");
        for forward in ["-t none", "-u none", "-T none", "-U none"] {
            assert!(joined.contains(forward), "{forward} in {joined}");
        }
        assert!(joined.contains("--netns /proc/42/ns/net --userns /proc/self/fd/9"));
        let as_root = Provider::Pasta("/usr/bin/pasta".into()).args(42, None, 3, 4);
        assert!(as_root.join(" ").contains("--runas 0"));
        assert!(
            as_root
                .join(" ")
                .ends_with("--netns /proc/42/ns/net --netns-only")
        );
        let slirp = Provider::Slirp4netns("/usr/bin/slirp4netns".into())
            .args(42, Some(9), 3, 4)
            .join(" ");
        assert!(slirp.contains("--disable-host-loopback"), "{slirp}");
        assert!(slirp.contains("--ready-fd=3 --exit-fd=4"), "{slirp}");
        assert!(slirp.contains("--userns-path=/proc/self/fd/9"), "{slirp}");
        assert!(
            slirp.ends_with("--netns-type=path /proc/42/ns/net tap0"),
            "{slirp}"
        );
    }

    #[test]
    fn no_provider_is_a_typed_error() {
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            Provider::find(Some(empty.path().as_os_str())),
            Err(NetworkError::NoProvider)
        );
        std::fs::write(empty.path().join("slirp4netns"), "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            empty.path().join("slirp4netns"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert!(matches!(
            Provider::find(Some(empty.path().as_os_str())),
            Ok(Provider::Slirp4netns(_))
        ));
    }

    #[test]
    fn a_helper_that_cannot_enter_says_which_step_failed() {
        // No such process: opening its namespace fails, reported as that step.
        let err = listen_inside(u32::MAX - 1, 0).unwrap_err();
        assert!(
            matches!(
                err,
                NetworkError::Listen {
                    step: "opening the namespace",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
