//! Test and benchmark helper for diffkeeper-probe: scripted workloads whose
//! every syscall is known, and a watcher that prints what it received.
//!
//! ```text
//! dk-probe-workload script DIR            every covered operation, in DIR (see tests/probe.rs)
//! dk-probe-workload writes FILE N SIZE    N writes of SIZE bytes (one record: folded)
//! dk-probe-workload appends FILE N        N rounds of open, 1-byte append, close (3 records each)
//! dk-probe-workload chmods FILE N         N fchmods of FILE (a record each, like a write before folding)
//! dk-probe-workload relay FILE            writes each line of stdin to FILE, all through one fd
//! dk-probe-workload reopen A B            writes A, closes its fd unseen (close_range), writes B through the same number
//! dk-probe-workload syscalls FILE N       N rounds of pwrite + open/close; prints CPU ns
//! dk-probe-workload untraced N            N rounds of getppid + read, no traced syscall; prints CPU ns
//! dk-probe-workload watch CGROUP -- CMD…  runs CMD in a new cgroup, prints its events
//! ```
//!
//! Legacy syscalls (open, creat, rename, ...) are called by number so each
//! tracepoint is exercised: x86-64 only.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use diffkeeper_probe::{ChildCgroup, Probe, ProbeConfig, Record};

/// Directory levels of the deep-path step: more than the kernel walk's 64.
pub const DEEP_LEVELS: usize = 70;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["script", dir] => script(Path::new(dir)),
        ["writes", file, count, size] => writes(Path::new(file), parse(count), parse(size)),
        ["appends", file, count] => appends(Path::new(file), parse(count)),
        ["chmods", file, count] => chmods(Path::new(file), parse(count)),
        ["relay", file] => relay(Path::new(file)),
        ["reopen", a, b] => reopen(Path::new(a), Path::new(b)),
        ["syscalls", file, rounds] => syscalls(Path::new(file), parse(rounds)),
        ["untraced", rounds] => untraced(parse(rounds)),
        ["watch", cgroup, "--", command @ ..] if !command.is_empty() => watch(cgroup, command),
        _ => Err(io::Error::other("usage: see the module documentation")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dk-probe-workload: {err}");
            ExitCode::FAILURE
        }
    }
}

fn parse(text: &str) -> u64 {
    text.parse().expect("a number")
}

fn cstr(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("no NUL in path")
}

/// Checks a libc return value.
fn ok(ret: i64, what: &str) -> io::Result<i64> {
    if ret < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(ret)
}

macro_rules! sys {
    ($what:literal, $nr:expr $(, $arg:expr)*) => {
        // SAFETY: raw syscalls on NUL-terminated strings and buffers that
        // outlive the call; the kernel validates everything else.
        ok(unsafe { libc::syscall($nr $(, $arg)*) }, $what)
    };
}

/// The sequence tests/probe.rs expects, operation by operation.
fn script(dir: &Path) -> io::Result<()> {
    let dir_c = cstr(dir.as_os_str().as_bytes());
    sys!("chdir", libc::SYS_chdir, dir_c.as_ptr())?;
    let dirfd = sys!(
        "open dir",
        libc::SYS_open,
        dir_c.as_ptr(),
        libc::O_RDONLY | libc::O_DIRECTORY
    )?;
    let wr = libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC;

    let a = cstr(b"a.txt");
    let fd = sys!(
        "openat",
        libc::SYS_openat,
        libc::AT_FDCWD,
        a.as_ptr(),
        wr,
        0o644
    )?;
    sys!("write", libc::SYS_write, fd, b"hello".as_ptr(), 5)?;
    // Folded into the write before: no record.
    sys!("pwrite64", libc::SYS_pwrite64, fd, b"XY".as_ptr(), 2, 10)?;
    // Each through a fresh fd, so that each is reported.
    let iov = [iovec(b"ab"), iovec(b"cd")];
    through_dup(fd, |w| sys!("writev", libc::SYS_writev, w, iov.as_ptr(), 2))?;
    let iov = [iovec(b"zz")];
    through_dup(fd, |w| {
        sys!("pwritev", libc::SYS_pwritev, w, iov.as_ptr(), 1, 20, 0)
    })?;
    let iov = [iovec(b"q")];
    through_dup(fd, |w| {
        sys!(
            "pwritev2",
            libc::SYS_pwritev2,
            w,
            iov.as_ptr(),
            1,
            -1i64,
            -1i64,
            0
        )
    })?;
    sys!("fsync", libc::SYS_fsync, fd)?;
    sys!("fdatasync", libc::SYS_fdatasync, fd)?;
    sys!("ftruncate", libc::SYS_ftruncate, fd, 8)?;
    sys!("fallocate", libc::SYS_fallocate, fd, 0, 0, 4096)?;
    sys!("fchmod", libc::SYS_fchmod, fd, 0o600)?;
    sys!("fchown", libc::SYS_fchown, fd, 0, 0)?;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let addr = sys!("mmap", libc::SYS_mmap, 0, 4096, rw, libc::MAP_SHARED, fd, 0)?;
    // SAFETY: addr is a fresh 4096-byte shared writable mapping of the file.
    unsafe { *(addr as *mut u8) = b'M' };
    sys!("msync", libc::SYS_msync, addr, 4096, libc::MS_SYNC)?;
    sys!("munmap", libc::SYS_munmap, addr, 4096)?;
    sys!("close", libc::SYS_close, fd)?;

    let sub = cstr(b"sub");
    sys!("mkdir", libc::SYS_mkdir, sub.as_ptr(), 0o755)?;
    sys!("chdir", libc::SYS_chdir, sub.as_ptr())?;
    let b = cstr(b"../b.txt");
    let fd = sys!(
        "open",
        libc::SYS_open,
        b.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT,
        0o644
    )?;
    sys!("close", libc::SYS_close, fd)?;
    let c = cstr(b"c.txt");
    let fd = sys!("creat", libc::SYS_creat, c.as_ptr(), 0o644)?;
    sys!("write", libc::SYS_write, fd, b"c".as_ptr(), 1)?;
    sys!("close", libc::SYS_close, fd)?;
    sys!("truncate", libc::SYS_truncate, c.as_ptr(), 0)?;
    let d = cstr(b"d.txt");
    sys!("rename", libc::SYS_rename, c.as_ptr(), d.as_ptr())?;
    let a2 = cstr(b"a2.txt");
    sys!(
        "renameat",
        libc::SYS_renameat,
        dirfd,
        a.as_ptr(),
        libc::AT_FDCWD,
        a2.as_ptr()
    )?;
    let up_a = cstr(b"../a.txt");
    let noreplace = libc::RENAME_NOREPLACE;
    sys!(
        "renameat2",
        libc::SYS_renameat2,
        libc::AT_FDCWD,
        a2.as_ptr(),
        libc::AT_FDCWD,
        up_a.as_ptr(),
        noreplace
    )?;
    let hard = cstr(b"hard.txt");
    sys!("link", libc::SYS_link, d.as_ptr(), hard.as_ptr())?;
    let hard2 = cstr(b"hard2.txt");
    sys!(
        "linkat",
        libc::SYS_linkat,
        dirfd,
        a.as_ptr(),
        libc::AT_FDCWD,
        hard2.as_ptr(),
        0
    )?;
    let sym = cstr(b"sym");
    sys!("symlink", libc::SYS_symlink, d.as_ptr(), sym.as_ptr())?;
    let hostname = cstr(b"/etc/hostname");
    let sym2 = cstr(b"sym2");
    sys!(
        "symlinkat",
        libc::SYS_symlinkat,
        hostname.as_ptr(),
        dirfd,
        sym2.as_ptr()
    )?;
    sys!("chmod", libc::SYS_chmod, d.as_ptr(), 0o640)?;
    sys!("fchmodat", libc::SYS_fchmodat, dirfd, a.as_ptr(), 0o644)?;
    sys!(
        "fchmodat2",
        libc::SYS_fchmodat2,
        dirfd,
        a.as_ptr(),
        0o644,
        0
    )?;
    sys!("chown", libc::SYS_chown, d.as_ptr(), 0, 0)?;
    sys!("lchown", libc::SYS_lchown, sym.as_ptr(), 0, 0)?;
    sys!("fchownat", libc::SYS_fchownat, dirfd, a.as_ptr(), 0, 0, 0)?;

    let odd = cstr(b"n\xffame");
    let fd = sys!(
        "open",
        libc::SYS_open,
        odd.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT,
        0o644
    )?;
    sys!("close", libc::SYS_close, fd)?;
    let long = cstr(&[b'L'; 255]);
    let fd = sys!(
        "open",
        libc::SYS_open,
        long.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT,
        0o644
    )?;
    sys!("close", libc::SYS_close, fd)?;

    let x = cstr(b"x");
    for _ in 0..DEEP_LEVELS {
        sys!("mkdir", libc::SYS_mkdir, x.as_ptr(), 0o755)?;
        sys!("chdir", libc::SYS_chdir, x.as_ptr())?;
    }
    let deep = cstr(b"deep.txt");
    let fd = sys!(
        "open",
        libc::SYS_open,
        deep.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT,
        0o644
    )?;
    sys!("close", libc::SYS_close, fd)?;
    let sub_abs = cstr(dir.join("sub").as_os_str().as_bytes());
    sys!("chdir", libc::SYS_chdir, sub_abs.as_ptr())?;

    sys!("unlink", libc::SYS_unlink, d.as_ptr())?;
    sys!("unlinkat", libc::SYS_unlinkat, dirfd, sym2.as_ptr(), 0)?;
    let e = cstr(b"e");
    sys!("mkdir", libc::SYS_mkdir, e.as_ptr(), 0o755)?;
    sys!("rmdir", libc::SYS_rmdir, e.as_ptr())?;
    let f = cstr(b"f");
    sys!("mkdirat", libc::SYS_mkdirat, dirfd, f.as_ptr(), 0o755)?;
    sys!(
        "unlinkat",
        libc::SYS_unlinkat,
        dirfd,
        f.as_ptr(),
        libc::AT_REMOVEDIR
    )?;

    let src = sys!("open", libc::SYS_open, up_a.as_ptr(), libc::O_RDONLY)?;
    let copy = cstr(b"copy.txt");
    let dst = sys!(
        "open",
        libc::SYS_open,
        copy.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT,
        0o644
    )?;
    sys!(
        "copy_file_range",
        libc::SYS_copy_file_range,
        src,
        0,
        dst,
        0,
        1,
        0
    )?;
    let mut off: libc::off_t = 0;
    through_dup(dst, |w| {
        sys!(
            "sendfile",
            libc::SYS_sendfile,
            w,
            src,
            &mut off as *mut libc::off_t,
            1
        )
    })?;
    let mut pipe = [0i32; 2];
    sys!("pipe", libc::SYS_pipe, pipe.as_mut_ptr())?;
    sys!("write pipe", libc::SYS_write, pipe[1], b"abc".as_ptr(), 3)?;
    through_dup(dst, |w| {
        sys!("splice", libc::SYS_splice, pipe[0], 0, w, 0, 3, 0)
    })?;
    sys!("close", libc::SYS_close, dst)?;
    sys!("close", libc::SYS_close, src)?;

    let o2 = cstr(b"o2.txt");
    // struct open_how { u64 flags; u64 mode; u64 resolve; }
    let how: [u64; 3] = [(libc::O_WRONLY | libc::O_CREAT) as u64, 0o644, 0];
    let fd = sys!(
        "openat2",
        libc::SYS_openat2,
        libc::AT_FDCWD,
        o2.as_ptr(),
        how.as_ptr(),
        size_of_val(&how)
    )?;
    sys!("close", libc::SYS_close, fd)?;

    // Not recorded: a read-only open, a device, a pipe, a failed call.
    let fd = sys!("open", libc::SYS_open, hard.as_ptr(), libc::O_RDONLY)?;
    sys!("close", libc::SYS_close, fd)?;
    let null = cstr(b"/dev/null");
    let fd = sys!("open", libc::SYS_open, null.as_ptr(), libc::O_WRONLY)?;
    sys!("write", libc::SYS_write, fd, b"x".as_ptr(), 1)?;
    sys!("close", libc::SYS_close, fd)?;
    let missing = cstr(b"missing/none");
    // SAFETY: a NUL-terminated path; the call is expected to fail.
    let failed = unsafe { libc::syscall(libc::SYS_unlink, missing.as_ptr()) };
    assert!(failed < 0, "unlink of a missing file succeeded");
    Ok(())
}

/// Runs `call` on a duplicate of `fd`, then closes the duplicate: a write
/// through an fd that has not written yet is reported, not folded.
fn through_dup(fd: i64, call: impl FnOnce(i64) -> io::Result<i64>) -> io::Result<()> {
    let dup = sys!("dup", libc::SYS_dup, fd)?;
    call(dup)?;
    sys!("close", libc::SYS_close, dup)?;
    Ok(())
}

fn iovec(bytes: &'static [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    }
}

fn writes(file: &Path, count: u64, size: u64) -> io::Result<()> {
    let mut out = std::fs::File::create(file)?;
    let block = vec![b'w'; usize::try_from(size).expect("size fits")];
    for _ in 0..count {
        out.write_all(&block)?;
    }
    Ok(())
}

fn appends(file: &Path, count: u64) -> io::Result<()> {
    for _ in 0..count {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)?
            .write_all(b"a")?;
    }
    Ok(())
}

fn chmods(file: &Path, count: u64) -> io::Result<()> {
    let out = std::fs::File::create(file)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&out);
    for i in 0..count {
        let mode = if i % 2 == 0 { 0o600 } else { 0o644 };
        sys!("fchmod", libc::SYS_fchmod, fd, mode)?;
    }
    Ok(())
}

fn relay(file: &Path) -> io::Result<()> {
    let mut out = std::fs::File::create(file)?;
    for line in io::stdin().lines() {
        out.write_all(format!("{}\n", line?).as_bytes())?;
    }
    Ok(())
}

/// A write through an fd, the fd closed by a call the probe does not see,
/// then a write to another file through a new fd of the same number (whose
/// `struct file` the kernel may well put at the freed one's address).
fn reopen(a: &Path, b: &Path) -> io::Result<()> {
    std::fs::write(b, "")?;
    let a = cstr(a.as_os_str().as_bytes());
    let b = cstr(b.as_os_str().as_bytes());
    let create = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    let fd = sys!("open a", libc::SYS_open, a.as_ptr(), create, 0o644)?;
    sys!("write a", libc::SYS_write, fd, b"a".as_ptr(), 1)?;
    sys!("close_range", libc::SYS_close_range, fd, fd, 0)?;
    let again = sys!("open b", libc::SYS_open, b.as_ptr(), libc::O_WRONLY)?;
    assert_eq!(again, fd, "the lowest free fd number is reused");
    sys!("write b", libc::SYS_write, again, b"b".as_ptr(), 1)?;
    Ok(())
}

/// Traced syscalls that change nothing worth a record for an outside process
/// and a few records for a watched one: a pwrite and an open/close pair.
fn syscalls(file: &Path, rounds: u64) -> io::Result<()> {
    let path = cstr(file.as_os_str().as_bytes());
    let fd = sys!(
        "open",
        libc::SYS_open,
        path.as_ptr(),
        libc::O_RDWR | libc::O_CREAT,
        0o644
    )?;
    let start = cpu_ns();
    for _ in 0..rounds {
        sys!(
            "pwrite64",
            libc::SYS_pwrite64,
            fd,
            b"0123456789abcdef".as_ptr(),
            16,
            0
        )?;
        let ro = sys!("open", libc::SYS_open, path.as_ptr(), libc::O_RDONLY)?;
        sys!("close", libc::SYS_close, ro)?;
    }
    println!("{}", cpu_ns() - start);
    Ok(())
}

/// CPU time (user + system) of this single-threaded process, in ns. The probe
/// runs in the context of the task it traces, so its cost lands here, while
/// time spent waiting for a CPU that other load holds does not.
fn cpu_ns() -> u64 {
    // SAFETY: timespec is plain data, valid zeroed; the kernel fills it.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `now` is writable and the clock id is valid.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID");
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// Syscalls the probe does not trace, which still take the kernel's syscall
/// tracing slow path once any syscall tracepoint is enabled.
fn untraced(rounds: u64) -> io::Result<()> {
    let zero = cstr(b"/dev/zero");
    let fd = sys!("open", libc::SYS_open, zero.as_ptr(), libc::O_RDONLY)?;
    let mut byte = 0u8;
    let start = cpu_ns();
    for _ in 0..rounds {
        sys!("getppid", libc::SYS_getppid)?;
        sys!("read", libc::SYS_read, fd, &mut byte as *mut u8, 1)?;
    }
    println!("{}", cpu_ns() - start);
    Ok(())
}

/// Runs `command` in a new cgroup under its own watch and prints one line per
/// record: `event <cgroup> <pid> <op> <path>` or `gap <count>`, then `end`.
fn watch(cgroup: &str, command: &[&str]) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let probe = Probe::load(ProbeConfig::default()).map_err(io::Error::other)?;
        let cgroup = ChildCgroup::create(cgroup).map_err(io::Error::other)?;
        let mut watch = probe.watch(cgroup.id()).map_err(io::Error::other)?;
        let mut child = Command::new(command[0]);
        child.args(&command[1..]);
        cgroup.spawn_inside(&mut child);
        let mut child = child.spawn()?;
        let pid = child.id();
        println!("child {pid} cgroup {}", cgroup.id());
        let mut exited = false;
        while !exited {
            let Some(record) = watch.next().await else {
                break;
            };
            print_record(&record, &mut exited, pid);
        }
        while let Some(record) = watch.try_next() {
            print_record(&record, &mut exited, pid);
        }
        child.wait()?;
        println!("end");
        Ok(())
    })
}

fn print_record(record: &Record, exited: &mut bool, pid: u32) {
    match record {
        Record::Event(event) => {
            *exited |= event.op == diffkeeper_probe::Op::Exit && event.pid == pid;
            println!(
                "event {} {} {:?} {}",
                event.cgroup_id,
                event.pid,
                event.op,
                PathBuf::from(&event.path).display()
            );
        }
        Record::Gap(gap) => println!("gap {}", gap.count),
    }
}
