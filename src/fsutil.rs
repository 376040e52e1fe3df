//! Small file-system helpers: files written atomically with a given mode,
//! and the secrets (tokens, passwords) kept in such files.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file and a rename, so readers
/// see the old content or the new, never a torn file. The temporary file is
/// new (O_EXCL, so a link planted under its name is never followed) and
/// unique to this call, so concurrent writers of one file cannot mix their
/// bytes; the file and then its directory are synced, so the rename
/// survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let unique = format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = path.with_file_name(unique);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a secret kept in a file, trimmed of surrounding white space.
pub fn read_secret(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

/// The secret in `path`, or a new random one (48 hex digits) written there
/// with mode 0600 when the file is missing or empty.
pub fn secret(path: &Path) -> std::io::Result<String> {
    if let Ok(existing) = read_secret(path) {
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let token: String = crate::websocket::random_bytes::<24>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    write_atomic(path, token.as_bytes(), 0o600)?;
    Ok(token)
}

/// Makes `uid`:`uid` the owner of `root` and everything below it (links
/// themselves, never what they point to). flowgate's state volumes made
/// before its containers ran unprivileged belong to root; the image's
/// `state-owner` command hands them over.
pub fn chown_tree(root: &Path, uid: u32) -> std::io::Result<u64> {
    let mut changed = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        std::os::unix::fs::lchown(&path, Some(uid), Some(uid))?;
        changed += 1;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

/// Raises the open-file limit as far as this process may: a proxy holding
/// thousands of sessions (two descriptors each) or a load generator needs
/// far more than the usual 1024. As root the hard limit itself is raised, up
/// to the kernel's `fs.nr_open`. Returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20)
        .min(1 << 20);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        for target in [nr_open.max(limit.rlim_max), limit.rlim_max] {
            if limit.rlim_cur >= target {
                break;
            }
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: target,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return target;
            }
        }
    }
    limit.rlim_cur
}

/// True for "too many open files" (per process or system-wide): a local
/// shortage, never the fault of the host being connected to.
pub fn is_fd_exhaustion(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                return true;
            }
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_with_the_mode_and_replaces() {
        let dir = std::env::temp_dir().join(format!("flowgate-fsutil-{}", std::process::id()));
        let path = dir.join("token");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_writers_never_tear_the_file() {
        let dir = std::env::temp_dir().join(format!("flowgate-fsutil-race-{}", std::process::id()));
        let path = dir.join("backends.json");
        let writers: Vec<_> = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let content = vec![b'a' + i; 64 * 1024];
                    for _ in 0..20 {
                        write_atomic(&path, &content, 0o600).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let content = std::fs::read(&path).unwrap();
        assert_eq!(content.len(), 64 * 1024);
        assert!(
            content.iter().all(|b| *b == content[0]),
            "bytes of two writers in one file"
        );
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_planted_link_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("flowgate-fsutil-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        // Whatever name the temporary file gets, a link there would have to
        // be created first: create_new refuses to open an existing name.
        let path = dir.join("token");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"keep",
            "the link's target was written"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
