//! flowgate's own container image, built locally from the binary that runs
//! (there is no registry to pull from): a `FROM scratch` image holding the
//! binary without its debug info, the shared libraries `ldd` lists, and the
//! host's CA bundle, running as the unprivileged user 65532. Its tag is a
//! hash of those files, so it is rebuilt only when they change. The binary
//! on the host keeps its debug info for profiling.

use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

use super::DeployError;

pub const REPOSITORY: &str = "flowgate";
/// Where the binary lives inside the image.
pub const BINARY_IN_IMAGE: &str = "/usr/local/bin/flowgate";
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The user and group flowgate's containers run as (the "nonroot" of
/// distroless images): no name, no home, no privileges.
pub const USER: u32 = 65532;
/// The directory the proxy's state volume is mounted on, owned by [`USER`]
/// in the image so a new volume starts owned by it.
pub const STATE_IN_IMAGE: &str = "/var/lib/flowgate";

/// A file of the image: where it comes from and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub source: PathBuf,
    pub target: String,
    /// Copied without debug info and symbols (the flowgate binary; the one
    /// on the host keeps both, for profiling and reading crash addresses).
    pub strip: bool,
}

/// The libraries a dynamically linked binary needs, from `ldd` output.
pub fn parse_ldd(output: &str) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or the loader
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|p| p.starts_with('/')),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            paths.push(PathBuf::from(path));
        }
    }
    paths
}

/// Everything the image holds, for `binary`.
pub fn image_files(binary: &Path) -> Result<Vec<ImageFile>, DeployError> {
    let shown = binary.display().to_string();
    let output = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| DeployError::Libraries {
            binary: shown.clone(),
            reason: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(DeployError::Libraries {
            binary: shown,
            reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let mut files = vec![ImageFile {
        source: binary.to_path_buf(),
        target: BINARY_IN_IMAGE.into(),
        strip: true,
    }];
    for library in parse_ldd(&String::from_utf8_lossy(&output.stdout)) {
        files.push(ImageFile {
            target: library.display().to_string(),
            source: library,
            strip: false,
        });
    }
    // Let's Encrypt and other public CAs must be trusted inside the image too.
    if Path::new(CA_BUNDLE).exists() {
        files.push(ImageFile {
            source: CA_BUNDLE.into(),
            target: CA_BUNDLE.into(),
            strip: false,
        });
    }
    Ok(files)
}

/// The image: the files and an empty state directory owned by the
/// unprivileged user, which is who runs the binary; its default state dir
/// (`$XDG_STATE_HOME/flowgate`) is that directory.
const DOCKERFILE: &str = "FROM scratch\n\
    COPY rootfs/ /\n\
    COPY --chown=65532:65532 state/ /var/lib/flowgate/\n\
    ENV XDG_STATE_HOME=/var/lib\n\
    USER 65532:65532\n\
    ENTRYPOINT [\"/usr/local/bin/flowgate\"]\n";

/// `path`'s bytes without debug info and symbols, when binutils' objcopy
/// (or strip) is here; the file as it is otherwise, with the reason.
fn stripped(path: &Path) -> Result<(Vec<u8>, Option<String>), DeployError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| DeployError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    // One file per call: two image builds in one process (threads) must
    // not read or remove each other's.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = std::env::temp_dir().join(format!("flowgate-stripped-{}-{call}", std::process::id()));
    let mut last = String::new();
    let mut objcopy = std::process::Command::new("objcopy");
    objcopy.arg("--strip-all").arg(path).arg(&out);
    let mut strip = std::process::Command::new("strip");
    strip.arg("--strip-all").arg("-o").arg(&out).arg(path);
    for mut command in [objcopy, strip] {
        let tool = command.get_program().to_string_lossy().into_owned();
        match command.output() {
            Ok(o) if o.status.success() => {
                let data = read(&out);
                let _ = std::fs::remove_file(&out);
                return Ok((data?, None));
            }
            Ok(o) => last = format!("{tool}: {}", String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => last = format!("{tool}: {e}"),
        }
    }
    let _ = std::fs::remove_file(&out);
    Ok((read(path)?, Some(last)))
}

/// The build context (a tar archive) and the image tag for `files`, and a
/// note when the binary could not be stripped.
pub fn build_context(files: &[ImageFile]) -> Result<(Vec<u8>, String, Option<String>), DeployError> {
    let mut tar = TarWriter::default();
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut note = None;
    tar.file("Dockerfile", DOCKERFILE.as_bytes(), 0o644);
    tar.dir("state/", 0o700);
    hash.update(DOCKERFILE.as_bytes());
    for file in files {
        let data = if file.strip {
            let (data, why) = stripped(&file.source)?;
            if let Some(why) = why {
                note = Some(format!(
                    "the image keeps the debug info of {} ({} MB) because it could not be stripped ({why}); install binutils for a smaller image",
                    file.source.display(),
                    data.len() >> 20
                ));
            }
            data
        } else {
            std::fs::read(&file.source).map_err(|source| DeployError::Read {
                path: file.source.display().to_string(),
                source,
            })?
        };
        let name = format!("rootfs{}", file.target);
        hash.update(name.as_bytes());
        hash.update(&(data.len() as u64).to_le_bytes());
        hash.update(&data);
        tar.file(&name, &data, 0o755);
    }
    let digest: String = hash
        .finish()
        .as_ref()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((tar.finish(), format!("{REPOSITORY}:{digest}"), note))
}

/// Makes sure the image for `binary` exists, building it when not; returns
/// its tag. `progress` hears when a build starts and ends (Docker's own
/// build output goes to the debug log).
pub async fn ensure(docker: &Docker, binary: &Path, mut progress: impl FnMut(&str)) -> Result<String, DeployError> {
    let files = image_files(binary)?;
    let (context, tag, note) = build_context(&files)?;
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    if let Some(note) = note {
        progress(&note);
    }
    progress(&format!(
        "building {tag} from {} ({} files)",
        binary.display(),
        files.len()
    ));
    let started = std::time::Instant::now();
    let options = BuildImageOptionsBuilder::default()
        .t(&tag)
        .rm(true)
        .forcerm(true)
        .labels(
            &[("io.flowgate.image", "1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(message) = stream.next().await {
        let info = message.map_err(|e| DeployError::Build {
            tag: tag.clone(),
            reason: e.to_string(),
        })?;
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            return Err(DeployError::Build { tag, reason: error });
        }
        if let Some(line) = info.stream.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
            tracing::debug!("docker build: {line}");
        }
    }
    progress(&format!("built {tag} in {:.1}s", started.elapsed().as_secs_f64()));
    docker.inspect_image(&tag).await.map_err(|e| DeployError::Build {
        tag: tag.clone(),
        reason: format!("the image is missing after the build: {e}"),
    })?;
    Ok(tag)
}

/// Makes sure a public image (Flow, MC, PostgreSQL) is on this machine:
/// present already, or (unless `pull` is false) pulled with progress. When it can be neither, the
/// error names the image and how to bring it in without a registry.
pub async fn ensure_pulled(
    docker: &Docker,
    image: &str,
    pull: bool,
    mut progress: impl FnMut(&str),
) -> Result<(), DeployError> {
    if docker.inspect_image(image).await.is_ok() {
        return Ok(());
    }
    if !pull {
        return Err(DeployError::Missing {
            image: image.into(),
            reason: "--no-pull".into(),
        });
    }
    progress(&format!("pulling {image}"));
    let (repository, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_image(repository)
        .tag(tag)
        .build();
    let mut stream = docker.create_image(Some(options), None, None);
    let missing = |reason: String| DeployError::Missing {
        image: image.to_string(),
        reason,
    };
    let mut last = String::new();
    while let Some(message) = stream.next().await {
        let info = message.map_err(|e| missing(e.to_string()))?;
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            return Err(missing(error));
        }
        if let Some(status) = info.status {
            let line = match info.id {
                Some(id) => format!("{image}: {id} {status}"),
                None => format!("{image}: {status}"),
            };
            if line != last {
                progress(&line);
                last = line;
            }
        }
    }
    docker
        .inspect_image(image)
        .await
        .map(|_| ())
        .map_err(|e| missing(e.to_string()))
}

/// A minimal ustar writer: regular files only, names under 100 bytes, which
/// is all a build context of a few files needs.
#[derive(Default)]
struct TarWriter {
    out: Vec<u8>,
}

/// A tar archive of one file owned by `uid` (and the group of the same
/// number) with `mode`: how a secret goes into a container's volume.
pub fn one_file_archive(name: &str, data: &[u8], uid: u32, mode: u32) -> Vec<u8> {
    let mut tar = TarWriter::default();
    tar.entry(name, data, mode, uid, b'0');
    tar.finish()
}

impl TarWriter {
    fn file(&mut self, name: &str, data: &[u8], mode: u32) {
        self.entry(name, data, mode, 0, b'0');
    }

    fn entry(&mut self, name: &str, data: &[u8], mode: u32, owner: u32, kind: u8) {
        let mut header = [0u8; 512];
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{value:0width$o}", width = field.len() - 1);
            field[..text.len()].copy_from_slice(text.as_bytes());
        };
        header[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
        octal(&mut header[100..108], mode as u64);
        octal(&mut header[108..116], owner as u64);
        octal(&mut header[116..124], owner as u64);
        octal(&mut header[124..136], data.len() as u64);
        octal(&mut header[136..148], 0);
        header[148..156].copy_from_slice(b"        ");
        header[156] = kind;
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        let checksum: u32 = header.iter().map(|&b| b as u32).sum();
        let text = format!("{checksum:06o}\0 ");
        header[148..156].copy_from_slice(text.as_bytes());
        self.out.extend_from_slice(&header);
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    /// An empty directory (`name` ends in '/').
    fn dir(&mut self, name: &str, mode: u32) {
        self.entry(name, &[], mode, 0, b'5');
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libraries_from_ldd_output() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x7f)\n\
                      \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n";
        assert_eq!(
            parse_ldd(output),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn the_context_is_a_tar_that_tar_reads_and_the_tag_follows_the_content() {
        let dir = std::env::temp_dir().join(format!("flowgate-tar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        std::fs::write(&a, vec![7u8; 1000]).unwrap();
        let files = vec![ImageFile {
            source: a.clone(),
            target: "/usr/local/bin/flowgate".into(),
            strip: false,
        }];
        let (context, tag, _) = build_context(&files).unwrap();
        std::fs::write(dir.join("context.tar"), &context).unwrap();
        let listing = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(dir.join("context.tar"))
            .output()
            .unwrap();
        assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(
            text.contains("Dockerfile") && text.contains("rootfs/usr/local/bin/flowgate"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l.starts_with('d') && l.ends_with("state/")),
            "{text}"
        );
        assert!(text.contains("1000"), "size recorded: {text}");
        let (_, same, _) = build_context(&files).unwrap();
        assert_eq!(tag, same);
        std::fs::write(&a, vec![8u8; 1000]).unwrap();
        let (_, changed, _) = build_context(&files).unwrap();
        assert_ne!(tag, changed);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
