//! SQLite's default page cache, with one key it is handed translated so that a commit no
//! longer scans the whole cache of a database under 1 GiB.
//!
//! When a b-tree rebalance reorders its new pages (`balance_nonroot`), SQLite parks a page
//! for a moment under the number of the lock-byte page, `PENDING_BYTE / page_size + 1`
//! (262,145 for 4 KiB pages). The default cache (`pcache1`) then remembers 262,145 as its
//! largest key, and at every commit it truncates itself above the database's size: while
//! the database is smaller than 1 GiB that gap is wider than its hash table, so it walks
//! every slot and every cached page, on the writer's thread, once per commit that
//! rebalanced. With a 64 MiB cache that took 6 to 9 % of the population registry's CPU at
//! 128 concurrent IssuePersonalId calls.
//!
//! This cache hands every call to the default one, except that the parking key is
//! replaced by the first key above every page the cache has held, which is just as unused
//! and keeps the largest key next to the database's size. The park lasts three calls
//! within one rebalance: the page moves to the parking key, another page takes its
//! number, and the parked page takes the other's. Nothing else fetches the lock-byte
//! page, which SQLite never uses.

use std::ffi::{c_int, c_uint};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use libsqlite3_sys as ffi;

use crate::Error;

/// SQLite's `PENDING_BYTE`: the file offset of the lock byte, 1 GiB unless a test build
/// moves it.
const PENDING_BYTE: u32 = 0x4000_0000;

/// Installs the cache for every connection the process opens from now on. It must run
/// before SQLite is first used in the process (before any connection is opened or VFS
/// registered), and while no other thread uses SQLite, which is why the service binaries
/// call it first thing in `main`. Later calls return the first call's result; a call after
/// SQLite has started fails with `SQLITE_MISUSE` and leaves the default cache in place,
/// which is correct, only slower.
pub fn install_page_cache() -> Result<(), Error> {
    static INSTALLED: OnceLock<Result<(), Error>> = OnceLock::new();
    INSTALLED.get_or_init(install).clone()
}

/// Times a page was parked under a translated key, for tests and diagnostics.
pub fn parked_pages() -> u64 {
    PARKED.load(Ordering::Relaxed)
}

static PARKED: AtomicU64 = AtomicU64::new(0);

/// The default cache's methods, every call of this cache is handed to.
struct DefaultMethods(ffi::sqlite3_pcache_methods2);

// SAFETY: the default methods are immutable function pointers and a null argument; SQLite
// calls them from any thread.
unsafe impl Send for DefaultMethods {}
// SAFETY: as above.
unsafe impl Sync for DefaultMethods {}

static DEFAULT: OnceLock<DefaultMethods> = OnceLock::new();

fn install() -> Result<(), Error> {
    let mut default = ffi::sqlite3_pcache_methods2 {
        iVersion: 0,
        pArg: std::ptr::null_mut(),
        xInit: None,
        xShutdown: None,
        xCreate: None,
        xCachesize: None,
        xPagecount: None,
        xFetch: None,
        xUnpin: None,
        xRekey: None,
        xTruncate: None,
        xDestroy: None,
        xShrink: None,
    };
    // SAFETY: GETPCACHE2 copies the configured (default) methods into `default`.
    let rc = unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_GETPCACHE2,
            &mut default as *mut ffi::sqlite3_pcache_methods2,
        )
    };
    if rc != ffi::SQLITE_OK {
        return Err(Error {
            code: rc,
            message: "cannot read SQLite's page cache methods (SQLite already started)".into(),
        });
    }
    let complete = default.xCreate.is_some()
        && default.xFetch.is_some()
        && default.xRekey.is_some()
        && default.xTruncate.is_some()
        && default.xDestroy.is_some();
    if !complete {
        return Err(Error::misuse("SQLite's default page cache is incomplete"));
    }
    let _ = DEFAULT.set(DefaultMethods(default));
    let methods = ffi::sqlite3_pcache_methods2 {
        iVersion: default.iVersion,
        pArg: default.pArg,
        xInit: default.xInit,
        xShutdown: default.xShutdown,
        xCreate: Some(create),
        xCachesize: Some(cachesize),
        xPagecount: Some(pagecount),
        xFetch: Some(fetch),
        xUnpin: Some(unpin),
        xRekey: Some(rekey),
        xTruncate: Some(truncate),
        xDestroy: Some(destroy),
        xShrink: Some(shrink),
    };
    // SAFETY: SQLite copies the struct; every function in it lives as long as the process.
    let rc = unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_PCACHE2,
            &methods as *const ffi::sqlite3_pcache_methods2,
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(Error {
            code: rc,
            message: "cannot install the page cache (SQLite already started)".into(),
        })
    }
}

fn default_methods() -> &'static ffi::sqlite3_pcache_methods2 {
    &DEFAULT
        .get()
        .expect("installed before any cache is created")
        .0
}

/// One cache: the default cache's, and the key bookkeeping around it. SQLite calls a
/// cache's methods only under its connection's mutex, so plain fields suffice.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// The key SQLite parks pages under: the lock-byte page of this page size.
    parking_key: c_uint,
    /// The key a parked page is really under, or 0 when none is parked.
    parked_at: c_uint,
    /// At least the largest key the default cache holds or remembers.
    max_key: c_uint,
}

impl Cache {
    /// The default cache's key for SQLite's `key`.
    fn inner_key(&self, key: c_uint) -> c_uint {
        if key == self.parking_key && self.parked_at != 0 {
            self.parked_at
        } else {
            key
        }
    }

    fn saw(&mut self, inner_key: c_uint) {
        self.max_key = self.max_key.max(inner_key);
    }
}

/// # Safety
/// `p` is a cache returned by [`create`] and not yet destroyed, used under its
/// connection's mutex.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    // SAFETY: per the contract, `p` is a live `Cache` nobody else borrows now.
    unsafe { &mut *p.cast::<Cache>() }
}

unsafe extern "C" fn create(
    page_size: c_int,
    extra_size: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let create = default_methods().xCreate.expect("checked at install");
    // SAFETY: the arguments are SQLite's own, handed on unchanged.
    let inner = unsafe { create(page_size, extra_size, purgeable) };
    if inner.is_null() {
        return inner;
    }
    let parking_key = c_uint::try_from(page_size)
        .ok()
        .filter(|&size| size > 0)
        .map_or(0, |size| PENDING_BYTE / size + 1);
    Box::into_raw(Box::new(Cache {
        inner,
        parking_key,
        parked_at: 0,
        max_key: 0,
    }))
    .cast()
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    // SAFETY: SQLite's own cache, per the method's contract.
    let cache = unsafe { cache(p) };
    let f = default_methods()
        .xCachesize
        .expect("the default cache has it");
    // SAFETY: the default cache's own handle.
    unsafe { f(cache.inner, pages) }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: as above.
    let cache = unsafe { cache(p) };
    let f = default_methods()
        .xPagecount
        .expect("the default cache has it");
    // SAFETY: the default cache's own handle.
    unsafe { f(cache.inner) }
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create_flag: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: as above.
    let cache = unsafe { cache(p) };
    let key = cache.inner_key(key);
    if create_flag != 0 {
        cache.saw(key);
    }
    let f = default_methods().xFetch.expect("checked at install");
    // SAFETY: the default cache's own handle.
    unsafe { f(cache.inner, key, create_flag) }
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    // SAFETY: as above.
    let cache = unsafe { cache(p) };
    let f = default_methods().xUnpin.expect("the default cache has it");
    // SAFETY: a page of the default cache, handed on unchanged.
    unsafe { f(cache.inner, page, discard) }
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old_key: c_uint,
    new_key: c_uint,
) {
    // SAFETY: as above.
    let cache = unsafe { cache(p) };
    let old_key = cache.inner_key(old_key);
    if old_key == cache.parked_at {
        cache.parked_at = 0;
    }
    debug_assert!(
        new_key != cache.parking_key || cache.parked_at == 0,
        "SQLite parks one page at a time"
    );
    let new_key = if new_key == cache.parking_key && cache.parked_at == 0 {
        // Above every key held, so unused; pages of a growing database take the keys
        // above the old size only after the park ends.
        let key = cache.max_key.saturating_add(1);
        cache.parked_at = key;
        PARKED.fetch_add(1, Ordering::Relaxed);
        key
    } else {
        new_key
    };
    cache.saw(new_key);
    let f = default_methods().xRekey.expect("checked at install");
    // SAFETY: the page is under `old_key` in the default cache, and nothing is under
    // `new_key` (SQLite dropped any page there; a parking key is above every page held).
    unsafe { f(cache.inner, page, old_key, new_key) }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    // SAFETY: as above.
    let cache = unsafe { cache(p) };
    if limit <= cache.max_key {
        // The default cache drops every key from `limit` up, and then remembers
        // `limit - 1` as its largest.
        cache.max_key = limit.saturating_sub(1);
    }
    let f = default_methods().xTruncate.expect("checked at install");
    // SAFETY: the default cache's own handle.
    unsafe { f(cache.inner, limit) }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: SQLite destroys a cache once and never uses it again, so the box made in
    // `create` can be taken back.
    let cache = unsafe { Box::from_raw(p.cast::<Cache>()) };
    let f = default_methods().xDestroy.expect("checked at install");
    // SAFETY: the default cache's own handle, destroyed once.
    unsafe { f(cache.inner) }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: as above.
    let cache = unsafe { cache(p) };
    if let Some(f) = default_methods().xShrink {
        // SAFETY: the default cache's own handle.
        unsafe { f(cache.inner) }
    }
}
