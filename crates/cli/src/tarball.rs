//! Packaging a directory as the `.tgz` build source `convox deploy` uploads, honouring
//! `.dockerignore`. Written to a temporary file, so memory stays flat for big sources.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::dockerignore::DockerIgnore;
use crate::error::{CliError, CliResult};

/// A packaged source.
#[derive(Debug)]
pub struct Package {
    /// The `.tgz`: a temporary file without a name (unlinked from the start), so nothing is
    /// left in `$TMPDIR` however the CLI ends — Ctrl-C and SIGTERM included.
    pub file: File,
    /// Its size in bytes.
    pub size: u64,
    /// The files (and links) inside, `/`-separated, in archive order.
    pub files: Vec<String>,
    /// What the package leaves out although `.dockerignore` keeps it, and why: this CLI's
    /// own config file (it holds the credentials) when it lies inside the directory, and
    /// special files (FIFOs, sockets, devices), which have no content to send.
    pub left_out: Vec<LeftOut>,
}

/// A path [`package`] leaves out although `.dockerignore` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// The path, `/`-separated.
    pub name: String,
    /// Why, for people.
    pub why: &'static str,
}

const OWN_CONFIG: &str = "it is this CLI's own config file, which holds its tokens";
const SPECIAL_FILE: &str = "not a regular file, directory or link (a FIFO, socket or device)";

#[derive(Debug)]
enum Kind {
    Dir,
    File,
}

#[derive(Debug)]
struct Entry {
    rel: String,
    rel_path: PathBuf,
    full: PathBuf,
    kind: Kind,
}

/// Packages `dir`.
pub fn package(dir: &Path) -> CliResult<Package> {
    let root = dir
        .canonicalize()
        .map_err(|e| CliError::io(format!("reading {}", dir.display()), e))?;
    if !root.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let ignore = DockerIgnore::load(&root)?;
    let mut entries = Vec::new();
    let mut left_out = Vec::new();
    walk(&root, Path::new(""), &ignore, &mut entries, &mut left_out)?;
    // The CLI's own config file holds its tokens: never shipped to the rack and its object
    // store, whatever `.dockerignore` says (a deploy from $HOME, a CI checkout holding
    // $XDG_CONFIG_HOME). Compared as canonical paths: the walk goes through real directories.
    let own = crate::config::path()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    entries.retain(|e| {
        let own_file = matches!(e.kind, Kind::File) && own.as_deref() == Some(e.full.as_path());
        if own_file {
            left_out.push(LeftOut {
                name: e.rel.clone(),
                why: OWN_CONFIG,
            });
        }
        !own_file
    });

    let file = tempfile::tempfile().map_err(|e| CliError::io("creating a temporary file", e))?;
    let handle = file
        .try_clone()
        .map_err(|e| CliError::io("opening the temporary file", e))?;
    write_archive(handle, &entries)?;
    let size = file
        .metadata()
        .map(|m| m.len())
        .map_err(|e| CliError::io("reading the package", e))?;
    let files = entries
        .into_iter()
        .filter(|e| matches!(e.kind, Kind::File))
        .map(|e| e.rel)
        .collect();
    Ok(Package {
        file,
        size,
        files,
        left_out,
    })
}

fn write_archive(out: File, entries: &[Entry]) -> CliResult<()> {
    let gz = GzEncoder::new(out, Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    for e in entries {
        let added = match e.kind {
            Kind::Dir => tar.append_dir(&e.rel_path, &e.full),
            Kind::File => append_file(&mut tar, e),
        };
        added.map_err(|err| CliError::io(format!("packaging {}", e.full.display()), err))?;
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|file| file.sync_all())
        .map_err(|e| CliError::io("writing the package", e))
}

/// Adds a file (a symlink is stored as a link, never followed). A regular file's header
/// promises the size it had when opened, and exactly that many bytes follow: a file that
/// grows or shrinks meanwhile (a log being written) fails the package, where copying to its
/// end would shift everything after it and could let the file's own bytes pass for entries.
fn append_file<W: std::io::Write>(tar: &mut tar::Builder<W>, e: &Entry) -> std::io::Result<()> {
    let link = std::fs::symlink_metadata(&e.full)?;
    if !link.is_file() {
        return tar.append_path_with_name(&e.full, &e.rel_path);
    }
    let file = File::open(&e.full)?;
    let meta = file.metadata()?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    header.set_size(meta.len());
    let exact = Exact {
        inner: file,
        left: meta.len(),
    };
    tar.append_data(&mut header, &e.rel_path, exact)
}

/// A file's bytes, exactly as many as its header promised; an error if it has fewer or more.
struct Exact {
    inner: File,
    left: u64,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // The end the header promised: anything more means the file grew.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other("the file grew while it was packaged")),
            };
        }
        let max = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while it was packaged",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn walk(
    root: &Path,
    rel_dir: &Path,
    ignore: &DockerIgnore,
    out: &mut Vec<Entry>,
    left_out: &mut Vec<LeftOut>,
) -> CliResult<()> {
    let here = root.join(rel_dir);
    let mut children: Vec<_> = std::fs::read_dir(&here)
        .map_err(|e| CliError::io(format!("reading {}", here.display()), e))?
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::io(format!("reading {}", here.display()), e))?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let rel_path = rel_dir.join(child.file_name());
        let rel = rel_path
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let kind = child
            .file_type()
            .map_err(|e| CliError::io(format!("reading {}", child.path().display()), e))?;
        let excluded = ignore.excluded(&rel);
        if kind.is_dir() {
            if excluded && !ignore.has_exceptions() {
                continue;
            }
            if !excluded {
                out.push(Entry {
                    rel: rel.clone(),
                    rel_path: rel_path.clone(),
                    full: child.path(),
                    kind: Kind::Dir,
                });
                walk(root, &rel_path, ignore, out, left_out)?;
            } else if let Err(err) = walk(root, &rel_path, ignore, out, left_out) {
                // Looked into only for files a `!` rule might bring back: one it cannot read
                // is left out, as Docker leaves it, rather than failing the package.
                if !matches!(&err, CliError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied)
                {
                    return Err(err);
                }
            }
        } else if (kind.is_file() || kind.is_symlink()) && !excluded {
            out.push(Entry {
                rel,
                rel_path,
                full: child.path(),
                kind: Kind::File,
            });
        } else if !excluded && !kind.is_file() && !kind.is_symlink() {
            left_out.push(LeftOut {
                name: rel,
                why: SPECIAL_FILE,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn packages_what_dockerignore_keeps() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let write = |p: &str, s: &str| {
            let path = dir.path().join(p);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
            }
            std::fs::write(path, s).unwrap_or_else(|e| panic!("{e}"));
        };
        write("Dockerfile", "FROM scratch\n");
        write(".dockerignore", "secret.env\nnode_modules\n");
        write("secret.env", "PASSWORD=x\n");
        write("src/app.js", "console.log(1)\n");
        write("node_modules/x/index.js", "x\n");
        let pkg = package(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pkg.files, [".dockerignore", "Dockerfile", "src/app.js"]);

        let mut raw = Vec::new();
        let mut file = pkg.file.try_clone().unwrap_or_else(|e| panic!("{e}"));
        std::io::Seek::rewind(&mut file)
            .and_then(|()| flate2::read::GzDecoder::new(file).read_to_end(&mut raw))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut archive = tar::Archive::new(raw.as_slice());
        let mut names = Vec::new();
        let mut dockerfile = String::new();
        for entry in archive.entries().unwrap_or_else(|e| panic!("{e}")) {
            let mut entry = entry.unwrap_or_else(|e| panic!("{e}"));
            let name = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if name == "Dockerfile" {
                entry
                    .read_to_string(&mut dockerfile)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            names.push(name);
        }
        assert_eq!(names, [".dockerignore", "Dockerfile", "src", "src/app.js"]);
        assert_eq!(dockerfile, "FROM scratch\n");
    }

    #[test]
    fn a_file_that_changes_size_while_packaged_fails_the_package() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("app.log");
        std::fs::write(&path, b"0123456789").unwrap_or_else(|e| panic!("{e}"));
        let read = |left: u64| {
            let mut exact = Exact {
                inner: File::open(&path).unwrap_or_else(|e| panic!("{e}")),
                left,
            };
            let mut out = Vec::new();
            exact.read_to_end(&mut out).map(|_| out)
        };
        assert_eq!(read(10).ok().as_deref(), Some(&b"0123456789"[..]));
        // The header said 4 bytes, the file has 10: it grew.
        assert!(read(4).is_err_and(|e| e.to_string().contains("grew")));
        // The header said 20 bytes: it shrank.
        assert!(read(20).is_err_and(|e| e.to_string().contains("shrank")));
    }

    #[test]
    fn dockerfile_and_dockerignore_are_always_sent() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for (name, text) in [
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "*\n"),
            ("app.js", "1\n"),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"));
        }
        let pkg = package(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pkg.files, [".dockerignore", "Dockerfile"]);
    }

    #[cfg(unix)]
    #[test]
    fn special_files_are_left_out_and_said_so() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join(".dockerignore"), "ignored.sock\n")
            .unwrap_or_else(|e| panic!("{e}"));
        // A socket is a special file that std can make without a helper.
        let _kept = std::os::unix::net::UnixListener::bind(dir.path().join("app.sock"))
            .unwrap_or_else(|e| panic!("{e}"));
        let _ignored = std::os::unix::net::UnixListener::bind(dir.path().join("ignored.sock"))
            .unwrap_or_else(|e| panic!("{e}"));
        let pkg = package(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pkg.files, [".dockerignore", "Dockerfile"]);
        assert_eq!(
            pkg.left_out,
            [LeftOut {
                name: "app.sock".into(),
                why: SPECIAL_FILE
            }]
        );
    }
}
