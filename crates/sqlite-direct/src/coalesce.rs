//! A VFS that writes a connection's WAL appends in large writes instead of two small ones
//! per page.
//!
//! SQLite writes each WAL frame as two `pwrite` calls (the 24-byte frame header, then the
//! page), so a commit of 8,000 pages is 16,000 system calls before its `fsync`. On the
//! population writer those calls were about an eighth of the writing thread's time. This VFS
//! wraps the platform's default one and only changes how the WAL is written: consecutive
//! appends are gathered in memory (up to [`BUFFER_BYTES`]) and written with one call: a
//! commit of 8,000 pages makes about 260.
//!
//! Durability and what other connections see are unchanged, because the gathered bytes
//! reach the file before anything that could depend on them:
//! - before the WAL is synced (`xSync`): a commit is durable exactly when it was before;
//! - before the wal-index publishes new frames to readers (`xShmBarrier` on the database
//!   file): with `synchronous = FULL` the sync above has already written them;
//! - before the write lock is released (`xShmLock`): frames of a transaction that rolled
//!   back after spilling pages are written where the next writer, on any connection, will
//!   overwrite them, never later over its frames;
//! - before the WAL is read, truncated, sized or closed, and before a write that does not
//!   continue the gathered bytes (a frame rewritten in place, a new WAL header).
//!
//! Its paced variant ([`url_with_paced_checkpoints`]) also bounds how much of a
//! checkpoint's writes the disk holds at once. A checkpoint copies pages from the WAL into
//! the database file and then syncs that file: left to the sync, tens of megabytes reach
//! the device in one burst, and every WAL sync of every commit meanwhile waits behind them
//! (the open loop's slowest requests came in exactly those bursts). Through the paced
//! variant, each mebibyte (`writeback::STEP_BYTES`) written to a database file is pushed
//! to the disk and waited for (`sync_file_range`) before the next is written, so a
//! commit's sync waits behind at most that much. It is meant for background checkpoints:
//! a writer that checkpoints inline would wait on each step itself. The checkpoint's
//! final sync is SQLite's own, unchanged: pacing only starts the writing earlier.
//!
//! Journals and temporary files are the default VFS's own.
//! Use it only on connections with `synchronous = FULL`: the barrier cannot report a
//! failed write, and with FULL it never has one to make.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

use crate::Error;

/// The name to pass as the connection's VFS (`SqliteConnectOptions::vfs`).
const NAME: &CStr = c"unix-coalesced-wal";
/// The same, with database writes paced.
const PACED_NAME: &CStr = c"unix-coalesced-wal-paced";

/// WAL bytes gathered before they are written anyway: the largest write the default unix
/// VFS makes in one call (it masks a write's length to 17 bits), about 31 frames of 4 KiB
/// pages.
const BUFFER_BYTES: usize = 0x1_ffff;

/// The offset of SQLite's WAL write lock among the `xShmLock` slots (`WAL_WRITE_LOCK`).
const WAL_WRITE_LOCK: c_int = 0;

/// Registers the VFS and its paced variant (once per process) and returns the VFS's name
/// for `SqliteConnectOptions::vfs`.
pub fn wal_coalescing_vfs() -> Result<&'static str, Error> {
    static REGISTERED: OnceLock<Result<(), Error>> = OnceLock::new();
    REGISTERED.get_or_init(register).clone()?;
    Ok(NAME.to_str().expect("the VFS name is ASCII"))
}

/// `url`, a `sqlite:` URL, asking for the paced variant of this VFS (registered first)
/// unless it names a VFS already: for the connections that run background checkpoints,
/// made from a URL, as a pool's are.
pub fn url_with_paced_checkpoints(url: &str) -> Result<String, Error> {
    wal_coalescing_vfs()?;
    let name = PACED_NAME.to_str().expect("the VFS name is ASCII");
    let query = url.split_once('?').map_or("", |(_, query)| query);
    if query.split('&').any(|pair| pair.starts_with("vfs=")) {
        return Ok(url.to_owned());
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}vfs={name}"))
}

/// The default VFS that every call is handed to.
struct BaseVfs(*mut ffi::sqlite3_vfs);

// SAFETY: a registered VFS is an immutable, process-wide object that SQLite itself calls
// from any thread.
unsafe impl Send for BaseVfs {}
// SAFETY: as above.
unsafe impl Sync for BaseVfs {}

static BASE: OnceLock<BaseVfs> = OnceLock::new();

fn register() -> Result<(), Error> {
    // SAFETY: a null name asks for the default VFS; SQLite initialises itself first.
    let base = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    if base.is_null() {
        return Err(Error::misuse("SQLite has no default VFS"));
    }
    // SAFETY: `base` is a registered VFS, valid for the life of the process.
    let mut vfs = unsafe { *base };
    vfs.szOsFile = c_int::try_from(REAL_OFFSET)
        .ok()
        .and_then(|offset| offset.checked_add(vfs.szOsFile))
        .ok_or_else(|| Error::misuse("the default VFS's file is too large to wrap"))?;
    vfs.pNext = ptr::null_mut();
    vfs.xOpen = Some(open);
    let _ = BASE.set(BaseVfs(base));
    // The paced variant is told apart in `open` by its app data, which is otherwise unused.
    static PACED: u8 = 1;
    for (name, app_data) in [
        (NAME, ptr::null_mut()),
        (
            PACED_NAME,
            ptr::from_ref(&PACED).cast_mut().cast::<c_void>(),
        ),
    ] {
        let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
            zName: name.as_ptr(),
            pAppData: app_data,
            ..vfs
        }));
        // SAFETY: `vfs` lives for the rest of the process (leaked), as SQLite requires.
        let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
        if rc != ffi::SQLITE_OK {
            return Err(Error {
                code: rc,
                message: "cannot register the WAL-coalescing VFS".into(),
            });
        }
    }
    Ok(())
}

fn base_vfs() -> *mut ffi::sqlite3_vfs {
    BASE.get().expect("registered before any open").0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    MainDb,
    Wal,
}

/// What SQLite holds for a main database or a WAL opened through this VFS. The default
/// VFS's own file follows it in the same allocation, at [`REAL_OFFSET`].
#[repr(C)]
struct File {
    /// Must come first: SQLite sees this as its `sqlite3_file`.
    base: ffi::sqlite3_file,
    kind: Kind,
    /// For a database, its connection's open WAL; for a WAL, its database. Null when there
    /// is none, and then a WAL's writes are not gathered.
    peer: *mut File,
    /// Gathered WAL bytes, to be written at `pending_offset`.
    pending: Vec<u8>,
    pending_offset: i64,
    /// For a database opened through the paced variant: its file descriptor, for pushing
    /// its writes out in steps; -1 otherwise, or when it could not be confirmed (then its
    /// writes are left to SQLite's sync alone).
    fd: c_int,
    /// For a database: bytes written since they were last pushed out.
    unpushed: usize,
}

/// Where the default VFS's file starts: after ours, 8-byte aligned as SQLite aligns files.
const REAL_OFFSET: usize = std::mem::size_of::<File>().next_multiple_of(8);

/// The default VFS's file inside the allocation that starts at `file`.
///
/// # Safety
/// `file` points at an allocation of the VFS's `szOsFile` bytes.
unsafe fn real_file(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: per the contract, `REAL_OFFSET` is inside the allocation.
    unsafe { file.cast::<u8>().add(REAL_OFFSET) }.cast()
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// Calls the default VFS's method `$method` on `$file`'s own file, or answers `$absent`
/// when that VFS lacks it.
macro_rules! real {
    ($file:expr, $method:ident, $absent:expr $(, $arg:expr)*) => {{
        let real = real_file($file.cast());
        match (*(*real).pMethods).$method {
            Some(method) => method(real $(, $arg)*),
            None => $absent,
        }
    }};
}

/// Writes `$file`'s gathered bytes, then calls the default VFS's method as [`real!`] does;
/// a failed write is answered instead.
macro_rules! after_flush {
    ($file:expr, $method:ident, $absent:expr $(, $arg:expr)*) => {{
        let file = $file;
        let rc = flush(file);
        if rc == ffi::SQLITE_OK {
            real!(file, $method, $absent $(, $arg)*)
        } else {
            rc
        }
    }};
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let base = base_vfs();
    // SAFETY: `base` is the registered default VFS, which always has `xOpen`.
    let base_open = unsafe { (*base).xOpen }.expect("a VFS can open files");
    let kind = if flags & ffi::SQLITE_OPEN_WAL != 0 {
        Kind::Wal
    } else if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
        Kind::MainDb
    } else {
        // Journals and temporary files: the default VFS's own, in place (our files are
        // larger than its, so it fits).
        // SAFETY: SQLite's arguments, passed on unchanged.
        return unsafe { base_open(base, name, file, flags, out_flags) };
    };
    // SAFETY: SQLite allocated `szOsFile` bytes at `file`: ours, then the real file's.
    let real = unsafe { real_file(file) };
    // SAFETY: both point into that allocation. With no methods, SQLite will not call
    // `xClose` on a file that failed to open.
    unsafe {
        (*file).pMethods = ptr::null();
        (*real).pMethods = ptr::null();
    }
    // SAFETY: as the caller's open, on the real file's part of the allocation.
    let rc = unsafe { base_open(base, name, real, flags, out_flags) };
    if rc != ffi::SQLITE_OK {
        // SAFETY: a file whose open failed but that has methods must still be closed.
        unsafe {
            if let Some(close) = (*real).pMethods.as_ref().and_then(|m| m.xClose) {
                close(real);
            }
        }
        return rc;
    }
    let mut peer = ptr::null_mut();
    if kind == Kind::Wal {
        // SAFETY: `name` is the WAL name SQLite passed to this xOpen, for which SQLite
        // returns its database's file.
        let db = unsafe { ffi::sqlite3_database_file_object(name) };
        // SAFETY: `db` is null or a live file; it is ours only if its methods are.
        if !db.is_null() && ptr::eq(unsafe { (*db).pMethods }, &METHODS) {
            peer = db.cast::<File>();
            // SAFETY: `db` is one of our open files; its connection is the caller.
            unsafe { (*peer).peer = file.cast::<File>() };
        }
    }
    // SAFETY: `vfs` is one of the two registered in `register`.
    let paced = !unsafe { (*vfs).pAppData }.is_null();
    let fd = if kind == Kind::MainDb && paced {
        // SAFETY: `real` was opened by the default VFS just above, from `name`.
        unsafe { writeback::descriptor(real, name) }
    } else {
        -1
    };
    // SAFETY: our part of the allocation; `real` is left as its open set it.
    unsafe {
        ptr::write(
            file.cast::<File>(),
            File {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                kind,
                peer,
                pending: Vec::new(),
                pending_offset: 0,
                fd,
                unpushed: 0,
            },
        );
    }
    ffi::SQLITE_OK
}

/// Writes the gathered WAL bytes, if any. They are dropped either way: after a failed
/// write SQLite abandons the transaction they belong to.
///
/// # Safety
/// `file` is one of our open files.
unsafe fn flush(file: *mut File) -> c_int {
    // SAFETY: per the contract; SQLite calls a connection's files from one thread at a time.
    let (data, offset) = unsafe { (&(*file).pending, (*file).pending_offset) };
    if data.is_empty() {
        return ffi::SQLITE_OK;
    }
    let len = c_int::try_from(data.len()).expect("at most BUFFER_BYTES");
    // SAFETY: the real file is open, and the buffer is valid for `len` bytes.
    let rc = unsafe {
        real!(
            file,
            xWrite,
            ffi::SQLITE_IOERR_WRITE,
            data.as_ptr().cast::<c_void>(),
            len,
            offset
        )
    };
    // SAFETY: as above; the write has returned.
    unsafe { (*file).pending.clear() };
    rc
}

/// Flushes the WAL of the database `file`, if it is one with an open WAL.
///
/// # Safety
/// `file` is one of our open files.
unsafe fn flush_peer_wal(file: *mut File) -> c_int {
    // SAFETY: per the contract; a database's peer is its open WAL.
    unsafe {
        if (*file).kind == Kind::MainDb && !(*file).peer.is_null() {
            flush((*file).peer)
        } else {
            ffi::SQLITE_OK
        }
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let file = file.cast::<File>();
    // SAFETY: SQLite closes each file it opened through us once; after this nothing
    // refers to it, so the peer's link to it is cut and our part dropped.
    unsafe {
        let flushed = flush(file);
        let peer = (*file).peer;
        if !peer.is_null() {
            (*peer).peer = ptr::null_mut();
        }
        let closed = real!(file, xClose, ffi::SQLITE_OK);
        ptr::drop_in_place(file);
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe {
        after_flush!(
            file.cast::<File>(),
            xRead,
            ffi::SQLITE_IOERR_READ,
            buf,
            amount,
            offset
        )
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let file = file.cast::<File>();
    // SAFETY: SQLite's arguments for one of our open files; `buf` holds `amount` bytes.
    unsafe {
        let gathering = (*file).kind == Kind::Wal && !(*file).peer.is_null();
        let len = usize::try_from(amount).unwrap_or(0);
        if (*file).fd >= 0 {
            let rc = real!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            (*file).unpushed += len;
            if (*file).unpushed < writeback::STEP_BYTES {
                return rc;
            }
            (*file).unpushed = 0;
            return writeback::push_out((*file).fd);
        }
        if !gathering || len == 0 {
            return real!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset);
        }
        let continues = {
            let this = &*file;
            !this.pending.is_empty()
                && offset == this.pending_offset + this.pending.len() as i64
                && this.pending.len() + len <= BUFFER_BYTES
        };
        if !continues {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            if len >= BUFFER_BYTES {
                return real!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset);
            }
            (*file).pending.reserve_exact(BUFFER_BYTES);
            (*file).pending_offset = offset;
        }
        (*file)
            .pending
            .extend_from_slice(std::slice::from_raw_parts(buf.cast::<u8>(), len));
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe {
        after_flush!(
            file.cast::<File>(),
            xTruncate,
            ffi::SQLITE_IOERR_TRUNCATE,
            size
        )
    }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe { after_flush!(file.cast::<File>(), xSync, ffi::SQLITE_IOERR_FSYNC, flags) }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe {
        after_flush!(
            file.cast::<File>(),
            xFileSize,
            ffi::SQLITE_IOERR_FSTAT,
            size
        )
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe { real!(file.cast::<File>(), xLock, ffi::SQLITE_IOERR_LOCK, level) }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe {
        real!(
            file.cast::<File>(),
            xUnlock,
            ffi::SQLITE_IOERR_UNLOCK,
            level
        )
    }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe {
        real!(
            file.cast::<File>(),
            xCheckReservedLock,
            ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
            out
        )
    }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe {
        after_flush!(
            file.cast::<File>(),
            xFileControl,
            ffi::SQLITE_NOTFOUND,
            op,
            arg
        )
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe { real!(file.cast::<File>(), xSectorSize, 4096) }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe { real!(file.cast::<File>(), xDeviceCharacteristics, 0) }
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe {
        real!(
            file.cast::<File>(),
            xShmMap,
            ffi::SQLITE_IOERR_SHMMAP,
            region,
            size,
            extend,
            out
        )
    }
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let file = file.cast::<File>();
    let releases_write_lock = flags == ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE
        && (offset..offset + n).contains(&WAL_WRITE_LOCK);
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe {
        if releases_write_lock {
            // Committed frames were written at their sync; these can only be frames of
            // a transaction that rolled back, so a failure to write them loses nothing.
            let _ = flush_peer_wal(file);
        }
        real!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags)
    }
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    let file = file.cast::<File>();
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe {
        // With synchronous = FULL the commit's sync has written everything already.
        let _ = flush_peer_wal(file);
        real!(file, xShmBarrier, ())
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe { real!(file.cast::<File>(), xShmUnmap, ffi::SQLITE_OK, delete) }
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files. Without the method there is
    // no mapping, which SQLite handles by reading.
    unsafe {
        real!(
            file.cast::<File>(),
            xFetch,
            {
                *out = ptr::null_mut();
                ffi::SQLITE_OK
            },
            offset,
            amount,
            out
        )
    }
}

unsafe extern "C" fn unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    // SAFETY: SQLite's arguments for one of our open files.
    unsafe { real!(file.cast::<File>(), xUnfetch, ffi::SQLITE_OK, offset, page) }
}

/// A database file's writes pushed to the disk in steps (Linux).
mod writeback {
    use std::ffi::{c_char, c_int, c_void};
    use std::sync::atomic::{AtomicU64, Ordering};

    use libsqlite3_sys as ffi;

    /// Bytes of a database file written between two push-outs. The device holds at most
    /// this much of a checkpoint in front of a commit's WAL sync; smaller steps cost a
    /// system call per step.
    pub(super) const STEP_BYTES: usize = 1 << 20;

    /// Push-outs made by this process (for tests: a database whose descriptor was not
    /// found would silently never make any).
    pub(super) static PUSH_OUTS: AtomicU64 = AtomicU64::new(0);

    /// The start of the unix VFS's `unixFile` (as of SQLite 3.51): its methods, its VFS,
    /// its inode's lock state, then the descriptor. Another layout fails the confirmation
    /// in `descriptor`, and the paced checkpoint's test.
    #[repr(C)]
    struct UnixFileStart {
        methods: *const c_void,
        vfs: *const c_void,
        inode: *const c_void,
        h: c_int,
    }

    /// The descriptor of `real`, a file the default (unix) VFS opened from `name`, or -1.
    /// SQLite offers no call for it, so it is read from the unix VFS's file, then
    /// confirmed: it must be open on the very file `name` names (same device and inode).
    ///
    /// # Safety
    /// `real` is an open file of the default VFS, whose allocation is at least
    /// `UnixFileStart` long; `name` is null or a C string.
    pub(super) unsafe fn descriptor(real: *mut ffi::sqlite3_file, name: *const c_char) -> c_int {
        if name.is_null() || !cfg!(target_os = "linux") {
            return -1;
        }
        // SAFETY: per the contract; an integer read from the allocation, only used once
        // confirmed below.
        let fd = unsafe { (*real.cast::<UnixFileStart>()).h };
        // SAFETY: plain-data structs, filled by the calls.
        let (mut by_fd, mut by_name): (libc::stat, libc::stat) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        // SAFETY: `fstat` of any integer is defined (EBADF); `name` is a C string.
        let confirmed = fd >= 0
            && unsafe { libc::fstat(fd, &mut by_fd) } == 0
            && unsafe { libc::stat(name, &mut by_name) } == 0
            && by_fd.st_dev == by_name.st_dev
            && by_fd.st_ino == by_name.st_ino;
        if confirmed { fd } else { -1 }
    }

    /// Starts writing out every dirty page of the file and waits until they are written.
    /// No cache flush: durability still comes from SQLite's sync. A failure is returned
    /// as a write error, since the kernel reports a writeback error to one waiter only and
    /// the later sync would not see it.
    #[cfg(target_os = "linux")]
    pub(super) fn push_out(fd: c_int) -> c_int {
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: `fd` is a database's descriptor, open while SQLite writes through it.
        if unsafe { libc::sync_file_range(fd, 0, 0, flags) } == 0 {
            PUSH_OUTS.fetch_add(1, Ordering::Relaxed);
            ffi::SQLITE_OK
        } else {
            ffi::SQLITE_IOERR_WRITE
        }
    }

    /// Elsewhere no descriptor is ever confirmed, so this is never called.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn push_out(_fd: c_int) -> c_int {
        ffi::SQLITE_OK
    }
}

#[cfg(test)]
mod tests {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use sqlx::{Connection as _, SqliteConnection};

    use super::*;

    fn options(dir: &tempfile::TempDir) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
    }

    async fn coalescing(dir: &tempfile::TempDir) -> SqliteConnection {
        let options = options(dir).vfs(wal_coalescing_vfs().unwrap());
        SqliteConnection::connect_with(&options).await.unwrap()
    }

    async fn plain(dir: &tempfile::TempDir) -> SqliteConnection {
        SqliteConnection::connect_with(&options(dir)).await.unwrap()
    }

    /// A row's body: large enough to need overflow pages, different for every row.
    fn body(id: i64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| ((id * 31 + i as i64) % 251) as u8)
            .collect()
    }

    async fn insert(conn: &mut SqliteConnection, ids: std::ops::Range<i64>, len: usize) {
        for id in ids {
            sqlx::query("INSERT INTO t (id, body) VALUES (?1, ?2)")
                .bind(id)
                .bind(body(id, len))
                .execute(&mut *conn)
                .await
                .unwrap();
        }
    }

    /// Every row, and the database's own consistency check.
    async fn assert_rows(conn: &mut SqliteConnection, expected: &[(i64, usize)]) {
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(check, "ok");
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT id, body FROM t ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(rows.len(), expected.len());
        for ((id, stored), (expected_id, len)) in rows.iter().zip(expected) {
            assert_eq!(id, expected_id);
            assert!(*stored == body(*id, *len), "row {id} differs");
        }
    }

    const CREATE: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)";

    #[test]
    fn a_url_asks_for_the_paced_variant_unless_it_names_a_vfs() {
        let name = "unix-coalesced-wal-paced";
        assert_eq!(
            url_with_paced_checkpoints("sqlite://data/a.db").unwrap(),
            format!("sqlite://data/a.db?vfs={name}")
        );
        assert_eq!(
            url_with_paced_checkpoints("sqlite:a.db?mode=rwc").unwrap(),
            format!("sqlite:a.db?mode=rwc&vfs={name}")
        );
        assert_eq!(
            url_with_paced_checkpoints("sqlite:a.db?mode=rwc&vfs=unix-none").unwrap(),
            "sqlite:a.db?mode=rwc&vfs=unix-none"
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_paced_checkpoint_pushes_its_writes_out_in_steps_and_keeps_every_row() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let url = url_with_paced_checkpoints(&url).unwrap();
        let mut conn = SqliteConnection::connect(&url).await.unwrap();
        for pragma in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = FULL",
            "PRAGMA wal_autocheckpoint = 0",
        ] {
            sqlx::query(pragma).execute(&mut conn).await.unwrap();
        }
        sqlx::query(CREATE).execute(&mut conn).await.unwrap();
        // About 6 MiB of pages, all in the WAL until the checkpoint copies them.
        let mut tx = conn.begin().await.unwrap();
        insert(&mut tx, 0..2_000, 3_000).await;
        tx.commit().await.unwrap();
        let before = writeback::PUSH_OUTS.load(Ordering::Relaxed);
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(busy, 0, "the checkpoint completed");
        let steps = writeback::PUSH_OUTS.load(Ordering::Relaxed) - before;
        assert!(steps >= 5, "6 MiB written in {steps} steps of 1 MiB");
        conn.close().await.unwrap();
        let expected: Vec<_> = (0..2_000).map(|id| (id, 3_000)).collect();
        assert_rows(&mut plain(&dir).await, &expected).await;
    }

    #[tokio::test]
    async fn commits_are_seen_by_other_connections_and_kept_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = coalescing(&dir).await;
        let mut reader = plain(&dir).await;
        sqlx::query(CREATE).execute(&mut writer).await.unwrap();
        let mut expected = Vec::new();
        // Small commits, then one past the buffer (written as it fills).
        let commits = (0..40)
            .map(|i| (i * 20..i * 20 + 20, 3_000))
            .chain([(800..1_200, 5_000)]);
        for (ids, len) in commits {
            let mut tx = writer.begin().await.unwrap();
            insert(&mut tx, ids.clone(), len).await;
            tx.commit().await.unwrap();
            expected.extend(ids.map(|id| (id, len)));
            let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
                .fetch_one(&mut reader)
                .await
                .unwrap();
            assert_eq!(seen, expected.len() as i64);
        }
        assert_rows(&mut reader, &expected).await;
        writer.close().await.unwrap();
        reader.close().await.unwrap();
        assert_rows(&mut plain(&dir).await, &expected).await;
    }

    #[tokio::test]
    async fn a_rolled_back_spill_never_overwrites_another_connections_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = coalescing(&dir).await;
        let mut other = plain(&dir).await;
        sqlx::query(CREATE).execute(&mut writer).await.unwrap();
        // A cache of a few pages: the transaction's pages spill into the WAL before it
        // ends, and the last of those frames stay gathered.
        sqlx::query("PRAGMA cache_size = 5")
            .execute(&mut writer)
            .await
            .unwrap();
        // An empty WAL: undoing the transaction then re-reads pages from the database
        // file, so nothing reads (and so writes out) the WAL before the write lock goes.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut writer)
            .await
            .unwrap();
        let mut tx = writer.begin().await.unwrap();
        insert(&mut tx, 0..150, 3_000).await;
        tx.rollback().await.unwrap();

        // Another connection commits over the same stretch of the WAL.
        let mut tx = other.begin().await.unwrap();
        insert(&mut tx, 1_000..1_300, 3_000).await;
        tx.commit().await.unwrap();
        // The writer commits again: nothing it gathered before may land now.
        let mut tx = writer.begin().await.unwrap();
        insert(&mut tx, 2_000..2_001, 3_000).await;
        tx.commit().await.unwrap();

        let expected: Vec<_> = (1_000..1_300)
            .chain(2_000..2_001)
            .map(|id| (id, 3_000))
            .collect();
        assert_rows(&mut other, &expected).await;
        writer.close().await.unwrap();
        other.close().await.unwrap();
        assert_rows(&mut plain(&dir).await, &expected).await;
    }
}
