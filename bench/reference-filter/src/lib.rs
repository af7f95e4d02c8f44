//! Two reference filters for `make bench`, in one module (the plugin configuration picks one):
//!
//! - `empty`: a Rust proxy-wasm filter that does nothing but exist. Envoy still creates a context per
//!   request and calls into the VM for each callback, so its row is the Wasm limit on this host: no
//!   filter written against proxy-wasm can be faster.
//! - `headers_once`: the same, plus one read of the request headers (one `proxy_get_header_map_pairs`
//!   call, the map copied into the VM). missiongate cannot decide without that read, so the gap between
//!   this row and missiongate's hot path is what its own work costs.
//!
//! Built for `wasm32-wasip1` by `make bench` (mk/bench.mk); never part of a deployment.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Empty,
    HeadersOnce,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: Mode::Empty }) });
}}

struct Root {
    mode: Mode,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // The configuration is a plain string: "empty" or "headers_once".
        let mut ptr: *mut u8 = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: the host writes a buffer it allocated through our allocator (proxy_on_memory_allocate)
        // and its size; we take ownership of it and free it.
        let config = unsafe {
            if proxy_get_buffer_bytes(7, 0, usize::MAX, &mut ptr, &mut len) != 0 || ptr.is_null() {
                Vec::new()
            } else {
                Vec::from_raw_parts(ptr, len, len)
            }
        };
        self.mode = match config.trim_ascii() {
            b"" | b"empty" => Mode::Empty,
            b"headers_once" => Mode::HeadersOnce,
            _ => return false,
        };
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { mode: self.mode }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    mode: Mode,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.mode == Mode::HeadersOnce {
            let mut ptr: *mut u8 = std::ptr::null_mut();
            let mut len = 0usize;
            // SAFETY: as above; the serialized map is only measured, then freed.
            unsafe {
                if proxy_get_header_map_pairs(0, &mut ptr, &mut len) == 0 && !ptr.is_null() {
                    let map = Vec::from_raw_parts(ptr, len, len);
                    std::hint::black_box(&map);
                }
            }
        }
        Action::Continue
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
}
