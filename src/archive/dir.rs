//! [`DirArchive`]: the original framework's directory layout, `<root>/<domain>/<key>`.
//!
//! Every file operation is made relative to an open directory descriptor (`openat`, `renameat`,
//! `unlinkat`) with `O_NOFOLLOW`, so a symlink planted inside the root is never followed, and a
//! path is never re-resolved between a check and its use. Unix only.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString, OsStr};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, MutexGuard};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::archive::{Archive, Page, Swap, SwapGroup, check_groups, check_keys, check_swaps};
use crate::error::{NameKind, Result, io};
use crate::name::{validate_domain, validate_entry, validate_name};

/// The lock file in the root that serializes writers across processes.
const LOCK_FILE: &str = ".lock";
/// Prefix of the temporary file a value is written to before it is renamed into place.
const TEMP_PREFIX: &str = ".tmp-";
/// Prefix a removed domain directory is renamed to before its contents are deleted.
const TRASH_PREFIX: &str = ".trash-";

/// Flags for opening a directory without following a symlink.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// An archive stored as plain files (feature `archive-dir`, Unix only): `<root>/<domain>/<key>`,
/// holding exactly the value's bytes.
///
/// This is the layout of the original framework's `.gen/sessions/<id>/session.json`, so its
/// session files read back unchanged, what `set` writes is that same file, and the archive can be
/// inspected and backed up with ordinary tools (`ls`, `cat`, `jq`, `tar`). It is much slower than
/// the redb backend (a file, a rename and two fsyncs per write) and exists for compatibility and
/// inspection, not speed.
///
/// # Guarantees
///
/// - **Atomic and durable writes.** A value is written to a dot-named temporary file in its
///   domain directory (created exclusively, mode 0600), fsynced, renamed over the key, and the
///   directory is fsynced. A reader sees the old value or the new one, never a mix; after a crash
///   (kill -9 or power loss) an acknowledged write is there, whole. A failed write (full disk,
///   permissions) leaves the previous value and is an [`Error::Io`](crate::Error::Io) naming the
///   path, with the `io::Error` as its source.
/// - **Domains.** Removing a domain's last key removes its directory.
///   [`remove_domain`](Archive::remove_domain) first renames the directory to a dot-name, so the
///   domain vanishes at once, then deletes it.
/// - **Modes.** Files are created with mode 0600 and directories (the root, if missing, and each
///   domain) with 0700; the umask can only narrow these.
/// - **Hostile names and files.** Names pass the [name rule](crate::name::validate_name) before any path
///   is built. A domain directory or key file that is a symlink (or not a directory, or not a
///   regular file) is treated as absent: reads return nothing, listings skip it, `remove` and
///   `remove_domain` leave it alone. Writing to such a domain is refused with an
///   [`Error::Io`](crate::Error::Io); `set` on a key that is a symlink replaces the link itself,
///   never its target. Nothing is created outside the root.
/// - **Leftovers.** Temporary files left by a crash are never listed, and are deleted by the next
///   write to their domain. A directory holding no key (only leftovers) is not a domain. A
///   `remove_domain` that a crash interrupted is finished by the next [`open`](DirArchive::open).
/// - **Names are file names.** On a filesystem that folds case or normalizes Unicode (macOS's
///   default APFS, ext4 directories with `casefold`), names that differ only in case (`a`, `A`)
///   or in normalization (`é`, `e\u{301}`) would meet in one file, against the archive contract.
///   Put the root on a case-sensitive, non-normalizing filesystem. Session ids are lowercase
///   ASCII, so sessions alone never meet this.
///
/// # Concurrency
///
/// Reads take no lock: the atomic rename guarantees they see whole values. Every mutation is
/// serialized by a mutex in this handle and an exclusive `flock` on `<root>/.lock`, so writes are
/// atomic against other threads, other handles and other processes sharing the root:
/// [`compare_and_swap`](Archive::compare_and_swap) (and so `Session::update`) loses no update
/// across processes, and concurrent `set`s are last-writer-wins, never torn. `set_many` holds
/// the lock for all its entries, but a crash part-way leaves the entries written so far. The
/// lock is only as good as `flock` on the filesystem: keep the root on a local filesystem (`flock`
/// over NFS is not reliable).
///
/// [`compare_and_swap_many`](Archive::compare_and_swap_many) compares every key and makes every
/// change under the lock, so it is atomic against every other writer, in any process: no write
/// comes between its comparisons and its changes, and no other swap sees half of it. Readers
/// take no lock, so it is reader-consistent per key only: a read sees each key's old value or
/// its new one, whole, but reads of several keys during the swap may see some keys changed and
/// others not yet. Every new value is first written to its temporary file and synced, so a
/// failure there (a full disk) changes nothing; then the keys change one at a time in the order
/// given, each durable before the next, so a crash part-way (or a rename, unlink or directory
/// sync that fails) leaves the keys changed so far, like `set_many`. Removing a domain's last
/// keys removes its directory.
///
/// # Cost
///
/// Each write creates, fsyncs and renames a file and fsyncs its directory (and the root when a
/// domain appears or disappears). Listing reads the whole directory for every page (it cannot
/// seek by name), keeping only `limit` names in memory, so a full walk of `n` names costs
/// `O(n² / limit)`; each listed domain is also opened to check that it holds a key.
///
/// # Examples
///
/// ```
/// use session_archive::{Archive, DirArchive};
///
/// let dir = tempfile::tempdir()?;
/// let sessions = dir.path().join(".gen/sessions");
/// let archive = DirArchive::open(&sessions)?;
/// let id = "0d0d0c2f-6bb9-405f-6a41-d4fe9acf3dd2";
/// archive.set(id, "session.json", br#"{"Name":"world"}"#)?;
/// let file = sessions.join(id).join("session.json");
/// assert_eq!(std::fs::read(file)?, br#"{"Name":"world"}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DirArchive {
    root: PathBuf,
    root_fd: OwnedFd,
    lock_file: File,
    writer: Mutex<()>,
}

/// Held while mutating: the in-process mutex and the `flock` on the lock file.
struct WriteGuard<'a> {
    lock_file: &'a File,
    _writer: MutexGuard<'a, ()>,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // Unlocking a held flock on an open descriptor cannot fail in practice; if it did, the
        // lock would still be released when the handle (and its descriptor) is dropped.
        let _ = self.lock_file.unlock();
    }
}

impl DirArchive {
    /// Opens the archive rooted at `root`, creating it (mode 0700, with any missing parents) if
    /// it does not exist, and deleting what a crashed `remove_domain` left behind.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) naming the path when `root` exists but is not a directory
    /// or is a symlink (kind [`NotADirectory`](io::ErrorKind::NotADirectory)), or when it cannot
    /// be created or opened (permissions, full disk).
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::{Archive, DirArchive, Error};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let archive = DirArchive::open(dir.path().join("sessions"))?;
    /// assert!(!archive.has_domain("any")?);
    ///
    /// std::fs::write(dir.path().join("file"), b"")?;
    /// assert!(matches!(DirArchive::open(dir.path().join("file")), Err(Error::Io { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        match std::fs::symlink_metadata(&root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) => {
                let what = if meta.file_type().is_symlink() {
                    "the archive root is a symlink, which DirArchive does not follow"
                } else {
                    "the archive root exists and is not a directory"
                };
                return Err(io(root, io::Error::new(io::ErrorKind::NotADirectory, what)));
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                // The directories about to be created, so that each new entry is made durable.
                let created: Vec<&Path> = root
                    .ancestors()
                    .take_while(|dir| !dir.as_os_str().is_empty() && !dir.exists())
                    .collect();
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&root)
                    .map_err(|err| io(&root, err))?;
                for parent in created.iter().filter_map(|dir| dir.parent()) {
                    let parent = if parent.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        parent
                    };
                    File::open(parent)
                        .and_then(|parent| parent.sync_all())
                        .map_err(|err| io(parent, err))?;
                }
            }
            Err(err) => return Err(io(root, err)),
        }
        // Opening with O_NOFOLLOW catches a root swapped for a symlink after the check above.
        let root_fd = rustix::fs::open(&root, dir_flags(), Mode::empty())
            .map_err(|err| io(&root, not_a_directory(err)))?;
        let lock_file = rustix::fs::openat(
            &root_fd,
            LOCK_FILE,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map(File::from)
        .map_err(|err| io(root.join(LOCK_FILE), err.into()))?;
        let archive = DirArchive {
            root,
            root_fd,
            lock_file,
            writer: Mutex::new(()),
        };
        archive.empty_trash()?;
        Ok(archive)
    }

    /// The root directory this archive was opened on.
    ///
    /// # Examples
    ///
    /// ```
    /// use session_archive::DirArchive;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let archive = DirArchive::open(dir.path())?;
    /// assert_eq!(archive.root(), dir.path());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn domain_path(&self, domain: &str) -> PathBuf {
        self.root.join(domain)
    }

    fn key_path(&self, domain: &str, key: &str) -> PathBuf {
        self.root.join(domain).join(key)
    }

    /// Takes the in-process mutex, then the cross-process `flock`.
    fn lock(&self) -> Result<WriteGuard<'_>> {
        let writer = self.writer.lock();
        self.lock_file
            .lock()
            .map_err(|err| io(self.root.join(LOCK_FILE), err))?;
        Ok(WriteGuard {
            lock_file: &self.lock_file,
            _writer: writer,
        })
    }

    /// Opens a domain directory; `None` when it is missing, a symlink or not a directory.
    fn open_domain(&self, domain: &str) -> Result<Option<OwnedFd>> {
        match rustix::fs::openat(&self.root_fd, domain, dir_flags(), Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(err) if is_absent(err) => Ok(None),
            Err(err) => Err(io(self.domain_path(domain), err.into())),
        }
    }

    /// Opens a domain directory for writing, creating it (mode 0700, root fsynced) if missing.
    /// Must be called under the write lock.
    fn create_domain(&self, domain: &str) -> Result<OwnedFd> {
        match rustix::fs::mkdirat(&self.root_fd, domain, Mode::from_raw_mode(0o700)) {
            Ok(()) => rustix::fs::fsync(&self.root_fd).map_err(|err| io(&self.root, err.into()))?,
            Err(Errno::EXIST) => {}
            Err(err) => return Err(io(self.domain_path(domain), err.into())),
        }
        rustix::fs::openat(&self.root_fd, domain, dir_flags(), Mode::empty())
            .map_err(|err| io(self.domain_path(domain), not_a_directory(err)))
    }

    /// Reads one value; symlinks and anything but a regular file count as absent.
    fn read_key(&self, dir: &OwnedFd, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let path = || self.key_path(domain, key);
        // O_NONBLOCK keeps a planted FIFO from blocking the open; it is refused just below.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(dir, key, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(err) if is_absent(err) => return Ok(None),
            Err(err) => return Err(io(path(), err.into())),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|err| io(path(), err.into()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Ok(None);
        }
        let mut value = Vec::new();
        File::from(fd)
            .read_to_end(&mut value)
            .map_err(|err| io(path(), err))?;
        Ok(Some(value))
    }

    /// Whether key `key` of `domain` is a regular file (not following symlinks).
    fn is_regular_file(&self, dir: &OwnedFd, domain: &str, key: &str) -> Result<bool> {
        regular_file(dir, key).map_err(|err| io(self.key_path(domain, key), err.into()))
    }

    /// Whether the domain directory holds at least one key.
    fn holds_a_key(&self, dir: &OwnedFd, domain: &str) -> Result<bool> {
        let mut found = false;
        for_each_name(dir, &self.domain_path(domain), |name, file_type| {
            if is_key(dir, name, file_type) {
                found = true;
            }
            !found
        })?;
        Ok(found)
    }

    /// Deletes temporary files left in a domain directory by a crashed write. Safe only under
    /// the write lock, which every writer holds while its temporary file exists.
    fn clean_temps(&self, dir: &OwnedFd, domain: &str) -> Result<()> {
        let mut temps = Vec::new();
        for_each_name(dir, &self.domain_path(domain), |name, _| {
            if name.starts_with(TEMP_PREFIX) {
                temps.push(name.to_owned());
            }
            true
        })?;
        for temp in temps {
            match rustix::fs::unlinkat(dir, temp.as_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(err) => return Err(io(self.key_path(domain, &temp), err.into())),
            }
        }
        Ok(())
    }

    /// Removes the domain directory if it holds nothing but leftovers. Under the write lock.
    fn remove_if_empty(&self, dir: &OwnedFd, domain: &str) -> Result<()> {
        self.clean_temps(dir, domain)?;
        match rustix::fs::unlinkat(&self.root_fd, domain, AtFlags::REMOVEDIR) {
            Ok(()) => rustix::fs::fsync(&self.root_fd).map_err(|err| io(&self.root, err.into())),
            // Still holds keys (or something that is not ours to delete).
            Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOENT | Errno::NOTDIR) => Ok(()),
            Err(err) => Err(io(self.domain_path(domain), err.into())),
        }
    }

    /// Writes one value atomically and durably. Under the write lock.
    fn write_key(&self, domain: &str, key: &str, value: &[u8]) -> Result<()> {
        let dir = self.create_domain(domain)?;
        self.clean_temps(&dir, domain)?;
        let renamed = self
            .stage_value(&dir, domain, key, value)
            .and_then(|temp| self.rename_staged(&dir, domain, key, &temp));
        if let Err(err) = renamed {
            // The previous value is untouched and the temporary file gone. Drop the domain
            // directory if this write created it (best effort: leftovers are invisible, and
            // deleted by the next write to this domain).
            let _ = self.remove_if_empty(&dir, domain);
            return Err(err);
        }
        rustix::fs::fsync(&dir).map_err(|err| io(self.domain_path(domain), err.into()))
    }

    /// Writes `value` to a new dot-named temporary file in the domain directory (created
    /// exclusively, mode 0600) and fsyncs it, returning its name. On error the temporary file is
    /// gone and the error names the key being written. Under the write lock.
    fn stage_value(&self, dir: &OwnedFd, domain: &str, key: &str, value: &[u8]) -> Result<String> {
        let temp = format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let written = rustix::fs::openat(
            dir,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io::Error::from)
        .and_then(|fd| {
            let mut file = File::from(fd);
            file.write_all(value)?;
            file.sync_all()
        });
        if let Err(err) = written {
            let _ = rustix::fs::unlinkat(dir, temp.as_str(), AtFlags::empty());
            return Err(io(self.key_path(domain, key), err));
        }
        Ok(temp)
    }

    /// Renames the staged temporary file `temp` over the key, atomically replacing its value.
    /// On error the temporary file is gone (best effort) and the key is as it was; the caller
    /// syncs the directory. Under the write lock.
    fn rename_staged(&self, dir: &OwnedFd, domain: &str, key: &str, temp: &str) -> Result<()> {
        if let Err(err) = rustix::fs::renameat(dir, temp, dir, key) {
            let _ = rustix::fs::unlinkat(dir, temp, AtFlags::empty());
            return Err(io(self.key_path(domain, key), err.into()));
        }
        Ok(())
    }

    /// The swap of [`compare_and_swap_many`](Archive::compare_and_swap_many), once the names are
    /// checked. Under the write lock.
    ///
    /// Every key is compared first. Then every new value is written to a temporary file and
    /// synced, before any key changes, so that failing to write one (a full disk) changes
    /// nothing. Then the keys change in the order given, each renamed into place (or unlinked)
    /// and the directory synced before the next, so that a crash, or a failed rename, unlink or
    /// sync, part-way leaves exactly the changes made so far. A domain emptied by the swap is
    /// removed last.
    fn swap_keys(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
        let stored = self.open_domain(domain)?;
        for &(key, expected, _) in swaps {
            let current = match &stored {
                Some(dir) => self.read_key(dir, domain, key)?,
                None => None,
            };
            if current.as_deref() != expected {
                return Ok(false);
            }
        }
        let changes: Vec<(&str, Option<&[u8]>)> = swaps
            .iter()
            .filter(|&&(_, expected, new)| expected != new)
            .map(|&(key, _, new)| (key, new))
            .collect();
        let writes = changes.iter().any(|(_, new)| new.is_some());
        let dir = match stored {
            _ if writes => self.create_domain(domain)?,
            Some(dir) if !changes.is_empty() => dir,
            // Nothing to change: every swap only checks, or removes a key that (with no domain
            // directory) every comparison found absent.
            _ => return Ok(true),
        };
        if writes {
            self.clean_temps(&dir, domain)?;
        }
        let staged = self.stage_all(&dir, domain, &changes)?;
        self.apply_staged(&dir, domain, &staged)?;
        Ok(true)
    }

    /// Writes each new value of a swap to a synced temporary file (`None` for a key to remove).
    /// On a failure nothing has changed: what was staged is dropped, and the domain directory
    /// if the swap created it (best effort, as in `write_key`). Under the write lock.
    fn stage_all<'k>(
        &self,
        dir: &OwnedFd,
        domain: &str,
        changes: &[(&'k str, Option<&[u8]>)],
    ) -> Result<Vec<(&'k str, Option<String>)>> {
        let mut staged: Vec<(&str, Option<String>)> = Vec::with_capacity(changes.len());
        for &(key, new) in changes {
            let temp = match new {
                Some(value) => match self.stage_value(dir, domain, key, value) {
                    Ok(temp) => Some(temp),
                    Err(err) => {
                        discard_staged(dir, &staged);
                        let _ = self.remove_if_empty(dir, domain);
                        return Err(err);
                    }
                },
                None => None,
            };
            staged.push((key, temp));
        }
        Ok(staged)
    }

    /// Makes the staged changes of a swap, in order, each renamed into place (or unlinked) and
    /// the directory synced before the next; a domain emptied by them is removed last. On a
    /// failure the changes made so far stay, and the rest are dropped. Under the write lock.
    fn apply_staged(
        &self,
        dir: &OwnedFd,
        domain: &str,
        staged: &[(&str, Option<String>)],
    ) -> Result<()> {
        let mut done = 0;
        let mut removed = false;
        let applied = staged.iter().try_for_each(|(key, temp)| {
            if let Some(temp) = temp {
                self.rename_staged(dir, domain, key, temp)?;
            } else if self.is_regular_file(dir, domain, key)? {
                rustix::fs::unlinkat(dir, *key, AtFlags::empty())
                    .map_err(|err| io(self.key_path(domain, key), err.into()))?;
                removed = true;
            } else {
                // Compared as present, yet not a regular file now: nothing of ours to remove.
                done += 1;
                return Ok(());
            }
            done += 1;
            rustix::fs::fsync(dir).map_err(|err| io(self.domain_path(domain), err.into()))
        });
        if let Err(err) = applied {
            discard_staged(dir, staged.get(done..).unwrap_or_default());
            let _ = self.remove_if_empty(dir, domain);
            return Err(err);
        }
        if removed {
            self.remove_if_empty(dir, domain)?;
        }
        Ok(())
    }

    /// Removes one key if it is a regular file, and the domain with its last key. Under the
    /// write lock.
    fn remove_key(&self, domain: &str, key: &str) -> Result<bool> {
        self.remove_keys(domain, &[key]).map(|removed| removed > 0)
    }

    /// Removes `keys` of `domain` and returns how many existed: one directory fsync and one
    /// emptiness check for all of them. Under the write lock.
    fn remove_keys(&self, domain: &str, keys: &[&str]) -> Result<usize> {
        let Some(dir) = self.open_domain(domain)? else {
            return Ok(0);
        };
        let mut removed = 0;
        let unlinked = keys.iter().try_for_each(|key| {
            if self.is_regular_file(&dir, domain, key)? {
                rustix::fs::unlinkat(&dir, *key, AtFlags::empty())
                    .map_err(|err| io(self.key_path(domain, key), err.into()))?;
                removed += 1;
            }
            Ok(())
        });
        // Synced even after an error, so that the keys already unlinked are gone for good.
        if removed > 0 {
            rustix::fs::fsync(&dir).map_err(|err| io(self.domain_path(domain), err.into()))?;
        }
        unlinked?;
        self.remove_if_empty(&dir, domain)?;
        Ok(removed)
    }

    /// Deletes `.trash-*` directories left by a `remove_domain` that crashed after its rename.
    fn empty_trash(&self) -> Result<()> {
        let _guard = self.lock()?;
        let mut trash = Vec::new();
        for_each_name(&self.root_fd, &self.root, |name, _| {
            if name.starts_with(TRASH_PREFIX) {
                trash.push(name.to_owned());
            }
            true
        })?;
        for name in trash {
            self.remove_trash(&name)?;
        }
        Ok(())
    }

    /// Deletes the trash directory `name` in the root and everything below it. Under the write
    /// lock.
    fn remove_trash(&self, name: &str) -> Result<()> {
        remove_tree(&self.root_fd, name).map_err(|(path, err)| io(self.root.join(path), err.into()))
    }
}

/// Deletes the temporary files of `staged` values that were never renamed into place (best
/// effort: a leftover is invisible, and deleted by the next write to its domain).
fn discard_staged(dir: &OwnedFd, staged: &[(&str, Option<String>)]) {
    for temp in staged.iter().filter_map(|(_, temp)| temp.as_deref()) {
        let _ = rustix::fs::unlinkat(dir, temp, AtFlags::empty());
    }
}

/// One directory being emptied by [`remove_tree`]: its descriptor, its name in its parent, and
/// the entries still to delete.
struct Emptying {
    dir: OwnedFd,
    name: CString,
    entries: Vec<(CString, FileType)>,
}

impl Emptying {
    /// Opens `name` in `parent` as a directory without following a symlink, and lists it.
    fn open(parent: &OwnedFd, name: CString) -> rustix::io::Result<Self> {
        let dir = rustix::fs::openat(parent, name.as_c_str(), dir_flags(), Mode::empty())?;
        let mut entries = Vec::new();
        for entry in Dir::read_from(&dir)? {
            let entry = entry?;
            let entry_name = entry.file_name();
            if entry_name != c"." && entry_name != c".." {
                entries.push((entry_name.to_owned(), entry.file_type()));
            }
        }
        Ok(Emptying { dir, name, entries })
    }
}

/// Deletes directory `name` in `parent` and everything below it, every step relative to an open
/// directory descriptor: no path is resolved again, and each subdirectory is opened with
/// `O_NOFOLLOW`, so a symlink in the tree is unlinked, never followed. Names need not be UTF-8.
///
/// Depth-first with an explicit stack, so a deep (hostile) tree costs heap and one descriptor per
/// level, never the call stack; running out of descriptors is an error, not a crash. Entries that
/// vanish meanwhile are skipped. The error carries the path, relative to `parent`, of the entry
/// that could not be deleted.
fn remove_tree(parent: &OwnedFd, name: &str) -> Result<(), (PathBuf, Errno)> {
    let path = |stack: &[Emptying], entry: &CStr| -> PathBuf {
        let names = stack.iter().map(|level| level.name.as_c_str());
        names
            .chain([entry])
            .map(|name| Path::new(OsStr::from_bytes(name.to_bytes())))
            .collect()
    };
    let top = CString::new(name).map_err(|_| (PathBuf::from(name), Errno::INVAL))?;
    let mut stack = match Emptying::open(parent, top) {
        Ok(level) => vec![level],
        Err(Errno::NOENT) => return Ok(()),
        Err(err) => return Err((PathBuf::from(name), err)),
    };
    while let Some(level) = stack.last_mut() {
        let Some((entry, file_type)) = level.entries.pop() else {
            // Emptied: remove it from its parent, the level below it on the stack.
            let emptied = stack.pop().map(|level| level.name);
            let Some(emptied) = emptied else { break };
            let parent = stack.last().map_or(parent, |level| &level.dir);
            match rustix::fs::unlinkat(parent, emptied.as_c_str(), AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => continue,
                Err(err) => return Err((path(&stack, &emptied), err)),
            }
        };
        if matches!(file_type, FileType::Directory | FileType::Unknown) {
            match Emptying::open(&level.dir, entry.clone()) {
                Ok(sub) => {
                    stack.push(sub);
                    continue;
                }
                // A symlink or a file: unlinked below like any other.
                Err(Errno::NOTDIR | Errno::LOOP | Errno::MLINK) => {}
                Err(Errno::NOENT) => continue,
                Err(err) => return Err((path(&stack, &entry), err)),
            }
        }
        let Some(level) = stack.last() else { break };
        match rustix::fs::unlinkat(&level.dir, entry.as_c_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(err) => return Err((path(&stack, &entry), err)),
        }
    }
    Ok(())
}

/// Calls `visit` with every UTF-8 name in `dir` (except `.` and `..`) and its type from the
/// directory entry, until `visit` returns `false`.
fn for_each_name(
    dir: &OwnedFd,
    path: &Path,
    mut visit: impl FnMut(&str, FileType) -> bool,
) -> Result<()> {
    let entries = Dir::read_from(dir).map_err(|err| io(path, err.into()))?;
    for entry in entries {
        let entry = entry.map_err(|err| io(path, err.into()))?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        if !visit(name, entry.file_type()) {
            break;
        }
    }
    Ok(())
}

/// The page of the `limit` smallest names in `dir` after `cursor` that `keep` accepts, in order,
/// holding no more than `limit + 1` names at a time.
fn smallest_after(
    dir: &OwnedFd,
    path: &Path,
    cursor: Option<&str>,
    limit: usize,
    keep: impl Fn(&str, FileType) -> bool,
) -> Result<Page> {
    let limit = limit.max(1);
    let mut names = BTreeSet::new();
    for_each_name(dir, path, |name, file_type| {
        if cursor.is_none_or(|after| name > after)
            && names
                .last()
                .is_none_or(|last: &String| names.len() < limit || name < last.as_str())
            && keep(name, file_type)
        {
            names.insert(name.to_owned());
            if names.len() > limit {
                names.pop_last();
            }
        }
        true
    })?;
    Ok(Page::ordered(names.into_iter().collect(), limit))
}

/// Whether `name` in `dir` is a regular file, not following symlinks; `false` when it is missing.
fn regular_file(dir: &OwnedFd, name: &str) -> rustix::io::Result<bool> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile),
        Err(Errno::NOENT) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Whether an entry of a domain directory is a key: a valid name (so no dot-name such as a
/// temporary file) of a regular file. Where the directory entry does not carry the type (some
/// filesystems), the entry is looked up, and one that cannot be is not listed.
fn is_key(dir: &OwnedFd, name: &str, file_type: FileType) -> bool {
    validate_name(NameKind::Key, name).is_ok()
        && match file_type {
            FileType::RegularFile => true,
            FileType::Unknown => regular_file(dir, name).unwrap_or(false),
            _ => false,
        }
}

/// Whether an `openat` error means "treat as absent": missing, a symlink refused by
/// `O_NOFOLLOW`, or not a directory where one was asked for.
fn is_absent(err: Errno) -> bool {
    matches!(
        err,
        Errno::NOENT | Errno::LOOP | Errno::NOTDIR | Errno::MLINK
    )
}

/// Turns the errors of opening a directory with `O_NOFOLLOW` into a clear "not a directory".
fn not_a_directory(err: Errno) -> io::Error {
    match err {
        Errno::LOOP | Errno::NOTDIR | Errno::MLINK => io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory (or a symlink, which DirArchive does not follow)",
        ),
        other => other.into(),
    }
}

impl fmt::Debug for DirArchive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirArchive")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Archive for DirArchive {
    fn get(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>> {
        validate_entry(domain, key)?;
        match self.open_domain(domain)? {
            Some(dir) => self.read_key(&dir, domain, key),
            None => Ok(None),
        }
    }

    fn set(&self, domain: &str, key: &str, value: &[u8]) -> Result<()> {
        validate_entry(domain, key)?;
        let _guard = self.lock()?;
        self.write_key(domain, key, value)
    }

    fn has(&self, domain: &str, key: &str) -> Result<bool> {
        validate_entry(domain, key)?;
        match self.open_domain(domain)? {
            Some(dir) => self.is_regular_file(&dir, domain, key),
            None => Ok(false),
        }
    }

    fn remove(&self, domain: &str, key: &str) -> Result<bool> {
        validate_entry(domain, key)?;
        let _guard = self.lock()?;
        self.remove_key(domain, key)
    }

    fn has_domain(&self, domain: &str) -> Result<bool> {
        validate_domain(domain)?;
        match self.open_domain(domain)? {
            Some(dir) => self.holds_a_key(&dir, domain),
            None => Ok(false),
        }
    }

    fn remove_domain(&self, domain: &str) -> Result<bool> {
        self.remove_domains(&[domain]).map(|removed| removed > 0)
    }

    fn compare_and_swap(
        &self,
        domain: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        validate_entry(domain, key)?;
        let _guard = self.lock()?;
        let current = match self.open_domain(domain)? {
            Some(dir) => self.read_key(&dir, domain, key)?,
            None => None,
        };
        if current.as_deref() != expected {
            return Ok(false);
        }
        match new {
            Some(value) => self.write_key(domain, key, value)?,
            None => {
                self.remove_key(domain, key)?;
            }
        }
        Ok(true)
    }

    /// Compares every key, then changes each in order, under the write lock; see
    /// [the type's documentation](DirArchive#concurrency) for what a reader or a crash can see.
    fn compare_and_swap_many(&self, domain: &str, swaps: &[Swap<'_>]) -> Result<bool> {
        check_swaps(domain, swaps)?;
        if swaps.is_empty() {
            return Ok(true);
        }
        let _guard = self.lock()?;
        self.swap_keys(domain, swaps)
    }

    /// Every group as [`compare_and_swap_many`](Archive::compare_and_swap_many) swaps it, in
    /// order, under one hold of the write lock: no other writer, in any process, comes between
    /// the groups. Each key change is still its own rename (or unlink) and directory sync, so
    /// this saves the lock's round trips, not the syncs; a reader or a crash may see the groups
    /// part-way, as for one group (see [the type's documentation](DirArchive#concurrency)).
    /// After an error the groups before the failing one stay swapped.
    fn compare_and_swap_each(&self, groups: &[SwapGroup<'_>]) -> Result<Vec<bool>> {
        check_groups(groups)?;
        if groups.iter().all(|(_, swaps)| swaps.is_empty()) {
            return Ok(vec![true; groups.len()]);
        }
        let _guard = self.lock()?;
        groups
            .iter()
            .map(|(domain, swaps)| Ok(swaps.is_empty() || self.swap_keys(domain, swaps)?))
            .collect()
    }

    /// Every value read under the write lock, so no writer of this archive (in any process)
    /// changes one between the reads: one snapshot, as far as writers take the lock.
    fn get_each(&self, entries: &[(&str, &str)]) -> Result<Vec<Option<Vec<u8>>>> {
        for (domain, key) in entries {
            validate_entry(domain, key)?;
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = self.lock()?;
        entries
            .iter()
            .map(|&(domain, key)| match self.open_domain(domain)? {
                Some(dir) => self.read_key(&dir, domain, key),
                None => Ok(None),
            })
            .collect()
    }

    /// One [`get_each`](Archive::get_each), which reads its entries at one moment here.
    fn get_many(&self, domain: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        check_keys(domain, keys)?;
        let entries: Vec<(&str, &str)> = keys.iter().map(|key| (domain, *key)).collect();
        self.get_each(&entries)
    }

    fn list_domains(&self, cursor: Option<&str>, limit: usize) -> Result<Page> {
        let mut page = smallest_after(
            &self.root_fd,
            &self.root,
            cursor,
            limit,
            |name, file_type| {
                validate_domain(name).is_ok()
                    && matches!(file_type, FileType::Directory | FileType::Unknown)
            },
        )?;
        // The cursor stays the last candidate's, so a page of emptied domains still moves on.
        let mut names = Vec::with_capacity(page.names.len());
        for domain in page.names {
            if self.has_domain(&domain)? {
                names.push(domain);
            }
        }
        page.names = names;
        Ok(page)
    }

    fn list_keys(&self, domain: &str, cursor: Option<&str>, limit: usize) -> Result<Page> {
        validate_domain(domain)?;
        let Some(dir) = self.open_domain(domain)? else {
            return Ok(Page::default());
        };
        smallest_after(
            &dir,
            &self.domain_path(domain),
            cursor,
            limit,
            |name, file_type| is_key(&dir, name, file_type),
        )
    }

    fn set_many(&self, entries: &[(&str, &str, &[u8])]) -> Result<()> {
        for (domain, key, _) in entries {
            validate_entry(domain, key)?;
        }
        let _guard = self.lock()?;
        entries
            .iter()
            .try_for_each(|(domain, key, value)| self.write_key(domain, key, value))
    }

    fn remove_many(&self, entries: &[(&str, &str)]) -> Result<usize> {
        for (domain, key) in entries {
            validate_entry(domain, key)?;
        }
        let _guard = self.lock()?;
        // Grouped by domain, each in the order given, so that a domain's keys share one fsync.
        let mut by_domain: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for &(domain, key) in entries {
            by_domain.entry(domain).or_default().push(key);
        }
        by_domain.iter().try_fold(0, |removed, (domain, keys)| {
            Ok(removed + self.remove_keys(domain, keys)?)
        })
    }

    /// Renames each domain that holds a key out of sight, syncs the root once for the whole
    /// batch, then deletes the renamed trees.
    fn remove_domains(&self, domains: &[&str]) -> Result<usize> {
        for domain in domains {
            validate_domain(domain)?;
        }
        let _guard = self.lock()?;
        let mut trash = Vec::new();
        let renamed = (|| {
            for domain in domains {
                let Some(dir) = self.open_domain(domain)? else {
                    continue;
                };
                if !self.holds_a_key(&dir, domain)? {
                    self.remove_if_empty(&dir, domain)?;
                    continue;
                }
                // Renaming first makes the domain disappear at once; the contents go afterwards.
                let name = format!("{TRASH_PREFIX}{}", uuid::Uuid::new_v4().simple());
                rustix::fs::renameat(&self.root_fd, *domain, &self.root_fd, name.as_str())
                    .map_err(|err| io(self.domain_path(domain), err.into()))?;
                trash.push(name);
            }
            Ok(())
        })();
        // Synced even after an error, so that the domains already renamed are gone for good.
        let synced = if trash.is_empty() {
            Ok(())
        } else {
            rustix::fs::fsync(&self.root_fd).map_err(|err| io(&self.root, err.into()))
        };
        if synced.is_ok() {
            for name in &trash {
                // Should this fail, the domain is already gone: the trash is invisible and is
                // deleted on the next open.
                let _ = self.remove_trash(name);
            }
        }
        // The first error met is the one reported.
        renamed?;
        synced?;
        Ok(trash.len())
    }
}
