// Part of guest-sdk/src/bindings.rs: written by tools/bindgen.sh, do not edit.
#[used]
#[doc(hidden)]
static __FORCE_SECTION_REF: fn() = super::super::super::__link_custom_section_describing_imports;
/// Severity of a log message.
#[repr(u8)]
#[derive(Clone, Copy, Eq, Ord, PartialEq, PartialOrd)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected but handled.
    Warn,
    /// Something failed.
    Error,
}
impl ::core::fmt::Debug for Level {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        match self {
            Level::Trace => f.debug_tuple("Level::Trace").finish(),
            Level::Debug => f.debug_tuple("Level::Debug").finish(),
            Level::Info => f.debug_tuple("Level::Info").finish(),
            Level::Warn => f.debug_tuple("Level::Warn").finish(),
            Level::Error => f.debug_tuple("Level::Error").finish(),
        }
    }
}
impl Level {
    #[doc(hidden)]
    pub unsafe fn _lift(val: u8) -> Level {
        if !cfg!(debug_assertions) {
            return unsafe { ::core::mem::transmute(val) };
        }
        match val {
            0 => Level::Trace,
            1 => Level::Debug,
            2 => Level::Info,
            3 => Level::Warn,
            4 => Level::Error,
            _ => panic!("invalid enum discriminant"),
        }
    }
}
#[allow(unused_unsafe, clippy::all)]
/// Logs `message` at `level`. The host truncates long messages and may rate-limit.
#[allow(async_fn_in_trait)]
pub fn log(level: Level, message: &str) -> () {
    unsafe {
        let vec0 = message;
        let ptr0 = vec0.as_ptr().cast::<u8>();
        let len0 = vec0.len();
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "cascade:plugin/logging@0.1.0")]
        unsafe extern "C" {
            #[link_name = "log"]
            fn wit_import1(_: i32, _: *mut u8, _: usize);
        }
        #[cfg(not(target_arch = "wasm32"))]
        unsafe extern "C" fn wit_import1(_: i32, _: *mut u8, _: usize) {
            unreachable!()
        }
        wit_import1(level.clone() as i32, ptr0.cast_mut(), len0);
    }
}
