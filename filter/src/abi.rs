//! The proxy-wasm host calls the filter makes, declared here so that no host answer can panic it.
//!
//! The SDK's helpers `panic!` on any status they do not expect and unwrap header names and values
//! as UTF-8 (`get_map`, `get_map_value`, even `get_map_bytes` for names): either aborts the Wasm VM
//! and, failing closed, takes the worker down for good. Every call here returns the raw status
//! (`u32`, so no status the host may add can be undefined behaviour) and hands data over as bytes.
//! Only `dispatch_http_call` stays with the SDK: its answer is routed by the SDK's dispatcher,
//! which only knows callouts the SDK registered (it answers `Ok`, `BadArgument` or
//! `InternalFailure` in Envoy, all of which the SDK maps to a `Result`).

use missiongate_core::head::{decode_pairs, encode_pairs};
use std::ptr::{null, null_mut};

/// A non-`Ok` host status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

/// Host calls made by this VM, counted only in the bench's counting build (`--features hostcalls`):
/// `make bench` reports them per request on each path. Zero cost otherwise.
#[cfg(feature = "hostcalls")]
pub static HOSTCALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One more host call (counting build only).
#[inline(always)]
pub fn counted() {
    #[cfg(feature = "hostcalls")]
    HOSTCALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The host calls counted since the last take (always 0 outside the counting build).
pub fn take_hostcalls() -> u64 {
    #[cfg(feature = "hostcalls")]
    return HOSTCALLS.swap(0, std::sync::atomic::Ordering::Relaxed);
    #[cfg(not(feature = "hostcalls"))]
    0
}

pub const OK: u32 = 0;
pub const NOT_FOUND: u32 = 1;
pub const CAS_MISMATCH: u32 = 8;

/// `proxy_log` levels.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)]
pub enum Level {
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// Header maps.
#[derive(Debug, Clone, Copy)]
pub enum Map {
    RequestHeaders = 0,
    CallResponseHeaders = 6,
}

/// Buffers.
#[derive(Debug, Clone, Copy)]
pub enum Buffer {
    RequestBody = 0,
    CallResponseBody = 4,
    PluginConfiguration = 7,
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_call_foreign_function(
        name_data: *const u8,
        name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
}

fn check(status: u32) -> Result<(), Status> {
    if status == OK {
        Ok(())
    } else {
        Err(Status(status))
    }
}

/// Take ownership of bytes the host allocated in this VM (through the SDK's
/// `proxy_on_memory_allocate`, which hands out a boxed slice of exactly `size` bytes).
fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host wrote `size` bytes into memory it obtained from `proxy_on_memory_allocate`
    // (a `Box<[u8]>` of exactly `size` bytes) and gave its ownership to us.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

pub fn log(level: Level, msg: &str) {
    counted();
    // SAFETY: pointer and length of a live `str`.
    let _ = unsafe { proxy_log(level as u32, msg.as_ptr(), msg.len()) };
}

/// Unix seconds (0 if the host has no clock for us).
pub fn now_secs() -> i64 {
    counted();
    let mut t: u64 = 0;
    // SAFETY: `t` outlives the call.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    if status != OK {
        return 0;
    }
    i64::try_from(t / 1_000_000_000).unwrap_or(0)
}

/// Nanoseconds since the Unix epoch (0 without a clock).
pub fn now_nanos() -> u64 {
    counted();
    let mut t: u64 = 0;
    // SAFETY: `t` outlives the call.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    if status == OK {
        t
    } else {
        0
    }
}

/// Header pairs, names and values as raw bytes.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every pair of a header map, names and values as bytes.
pub fn header_pairs(map: Map) -> Result<Pairs, Status> {
    counted();
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers to locals that outlive the call.
    check(unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) })?;
    // A layout the host never produces is reported like a failed call rather than trusted.
    decode_pairs(&owned(data, size)).ok_or(Status(u32::MAX))
}

/// Up to `max` bytes of a buffer from its start (`Ok(empty)` when there is none).
pub fn buffer(which: Buffer, max: usize) -> Result<Vec<u8>, Status> {
    buffer_at(which, 0, max)
}

/// Up to `max` bytes of a buffer from byte `start` (an empty result when there is none).
pub fn buffer_at(which: Buffer, start: usize, max: usize) -> Result<Vec<u8>, Status> {
    counted();
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers to locals that outlive the call.
    let status = unsafe { proxy_get_buffer_bytes(which as u32, start, max, &mut data, &mut size) };
    match status {
        OK => Ok(owned(data, size)),
        NOT_FOUND => Ok(Vec::new()),
        s => Err(Status(s)),
    }
}

/// Call the host's foreign function `name` (Envoy's `verify_signature`, say): its result bytes.
pub fn call_foreign(name: &str, arguments: &[u8]) -> Result<Vec<u8>, Status> {
    counted();
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: pointers and lengths of live buffers; out-pointers to locals that outlive the call.
    check(unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            arguments.as_ptr(),
            arguments.len(),
            &mut data,
            &mut size,
        )
    })?;
    Ok(owned(data, size))
}

/// Answer the current request locally.
pub fn send_local_response(status: u16, headers: &[(String, String)], body: &[u8]) -> Result<(), Status> {
    counted();
    let map = encode_pairs(headers);
    // SAFETY: pointers and lengths of live buffers; -1: no gRPC status.
    check(unsafe {
        proxy_send_local_response(u32::from(status), null(), 0, body.as_ptr(), body.len(), map.as_ptr(), map.len(), -1)
    })
}

/// Continue the paused request of the effective context.
pub fn resume_request() -> Result<(), Status> {
    counted();
    // SAFETY: no pointers.
    check(unsafe { proxy_continue_stream(0) })
}

/// Reset the request of the effective context.
pub fn reset_request() -> Result<(), Status> {
    counted();
    // SAFETY: no pointers.
    check(unsafe { proxy_close_stream(0) })
}

pub fn set_property(path: &str, value: &[u8]) -> Result<(), Status> {
    counted();
    // SAFETY: pointers and lengths of live buffers.
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// A shared-data value and its CAS (`Ok((None, 0))` when the key does not exist).
pub fn get_shared(key: &str) -> Result<(Option<Vec<u8>>, u32), Status> {
    counted();
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: pointers to a live key and to locals that outlive the call.
    let status = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match status {
        OK => Ok((Some(owned(data, size)), cas)),
        NOT_FOUND => Ok((None, 0)),
        s => Err(Status(s)),
    }
}

/// Set a shared-data value; `cas` 0 sets unconditionally. `Err(Status(CAS_MISMATCH))` on conflict.
pub fn set_shared(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    counted();
    // SAFETY: pointers and lengths of live buffers.
    check(unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) })
}

/// Define a counter.
pub fn define_counter(name: &str) -> Result<u32, Status> {
    counted();
    let mut id = 0u32;
    // SAFETY: pointer to a live name and to a local that outlives the call. 0 = counter.
    check(unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_counter(id: u32, by: i64) -> Result<(), Status> {
    counted();
    // SAFETY: no pointers.
    check(unsafe { proxy_increment_metric(id, by) })
}

pub fn set_tick_period_ms(ms: u32) -> Result<(), Status> {
    counted();
    // SAFETY: no pointers.
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// Make `ctx` the context later host calls act on. `Err` when it no longer exists.
pub fn set_effective_context(ctx: u32) -> Result<(), Status> {
    counted();
    // SAFETY: no pointers.
    check(unsafe { proxy_set_effective_context(ctx) })
}
