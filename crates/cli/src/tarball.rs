//! Packaging a directory as the `.tgz` build source `convox deploy` uploads, honouring
//! `.dockerignore`. Written to a temporary file, so memory stays flat for big sources.

use std::fs::File;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::dockerignore::DockerIgnore;
use crate::error::{CliError, CliResult};

/// A packaged source.
#[derive(Debug)]
pub struct Package {
    /// The `.tgz`, removed when dropped.
    pub file: tempfile::NamedTempFile,
    /// Its size in bytes.
    pub size: u64,
    /// The files (and links) inside, `/`-separated, in archive order.
    pub files: Vec<String>,
}

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
    walk(&root, Path::new(""), &ignore, &mut entries)?;

    let file = tempfile::Builder::new()
        .prefix("rack-gateway-source-")
        .suffix(".tgz")
        .tempfile()
        .map_err(|e| CliError::io("creating a temporary file", e))?;
    let handle = file
        .reopen()
        .map_err(|e| CliError::io("opening the temporary file", e))?;
    write_archive(handle, &entries)
        .map_err(|e| CliError::io(format!("packaging {}", root.display()), e))?;
    let size = std::fs::metadata(file.path())
        .map(|m| m.len())
        .map_err(|e| CliError::io("reading the package", e))?;
    let files = entries
        .into_iter()
        .filter(|e| matches!(e.kind, Kind::File))
        .map(|e| e.rel)
        .collect();
    Ok(Package { file, size, files })
}

fn write_archive(out: File, entries: &[Entry]) -> std::io::Result<()> {
    let gz = GzEncoder::new(out, Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    for e in entries {
        match e.kind {
            Kind::Dir => tar.append_dir(&e.rel_path, &e.full)?,
            Kind::File => tar.append_path_with_name(&e.full, &e.rel_path)?,
        }
    }
    tar.into_inner()?.finish()?.sync_all()
}

fn walk(root: &Path, rel_dir: &Path, ignore: &DockerIgnore, out: &mut Vec<Entry>) -> CliResult<()> {
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
            }
            walk(root, &rel_path, ignore, out)?;
        } else if (kind.is_file() || kind.is_symlink()) && !excluded {
            out.push(Entry {
                rel,
                rel_path,
                full: child.path(),
                kind: Kind::File,
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
        File::open(pkg.file.path())
            .and_then(|f| flate2::read::GzDecoder::new(f).read_to_end(&mut raw))
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
}
