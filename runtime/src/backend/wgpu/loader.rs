//! Keeps the Vulkan loader's probing off the terminal.
//!
//! Mesa's device-select layer, which the Vulkan loader enables implicitly on most Linux
//! systems, looks for a Wayland display while listing adapters (to put the GPU driving the
//! screen first), whenever the instance enables `VK_KHR_wayland_surface`; wgpu always
//! enables it where available. On a headless machine, or anywhere `XDG_RUNTIME_DIR` is not
//! set (a service, a container, `sudo`), libwayland then prints `error: XDG_RUNTIME_DIR is
//! invalid or not set in the environment.` to standard error, which reads like a failure of
//! ours. Nothing fails: the layer falls back to its other ways of ordering adapters.
//!
//! [`route_wayland_log_to_debug`] gives libwayland's client library, if this process loaded
//! it (the layer does), a log handler that sends its messages to our debug log instead.
//! That changes nothing else: which adapters exist, their order, and every environment
//! variable (`MESA_VK_DEVICE_SELECT`, `VK_ICD_FILENAMES`, ...) stay as they were. A Cascade
//! node draws no windows, so libwayland has nothing else to say in this process.

/// Routes libwayland's client log (if the library is loaded) to `tracing::debug!`.
#[cfg(unix)]
pub(super) fn route_wayland_log_to_debug() {
    use std::ffi::{c_char, c_void};

    /// libwayland's `wl_log_func_t`: `void (*)(const char *fmt, va_list args)`. `va_list`
    /// is passed as one pointer-sized value on the 64-bit ABIs (x86-64 passes the array's
    /// address, AArch64 passes the 32-byte struct by reference); the handler never reads it.
    type LogFn = unsafe extern "C" fn(*const c_char, *mut c_void);
    type SetHandler = unsafe extern "C" fn(LogFn);

    unsafe extern "C" fn to_debug(fmt: *const c_char, _args: *mut c_void) {
        if fmt.is_null() {
            return;
        }
        // SAFETY: libwayland passes a NUL-terminated format string.
        let text = unsafe { std::ffi::CStr::from_ptr(fmt) }.to_string_lossy();
        tracing::debug!(
            target: "cascade_runtime::backend",
            "libwayland, probed by the Vulkan loader's device-select layer: {}",
            text.trim()
        );
    }

    // RTLD_NOLOAD: only a library already in the process; never loads libwayland ourselves.
    // SAFETY: plain C calls with a NUL-terminated name; the handle is only used for dlsym.
    let handle =
        unsafe { libc::dlopen(c"libwayland-client.so.0".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return;
    }
    // SAFETY: as above; the symbol, if present, is libwayland's `wl_log_set_handler_client`.
    let symbol = unsafe { libc::dlsym(handle, c"wl_log_set_handler_client".as_ptr()) };
    if !symbol.is_null() {
        // SAFETY: the symbol has the signature `void wl_log_set_handler_client(wl_log_func_t)`.
        let set: SetHandler = unsafe { std::mem::transmute::<*mut c_void, SetHandler>(symbol) };
        // SAFETY: `to_debug` has the handler's C signature and lives for the whole process.
        unsafe { set(to_debug) };
    }
    // The library stays loaded: the loader's layer holds its own reference.
    // SAFETY: `handle` came from dlopen above.
    unsafe { libc::dlclose(handle) };
}

/// Other systems have no libwayland to quiet.
#[cfg(not(unix))]
pub(super) fn route_wayland_log_to_debug() {}
