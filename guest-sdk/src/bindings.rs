// plugin.wit sha256 a03b32f37c63b0e89c8323d1109c01b0bd8d179f01d329a0eee301ea72e9d749: written by tools/bindgen.sh, do not edit.
pub type Request = cascade::plugin::types::Request;
pub type Outcome = cascade::plugin::types::Outcome;
pub type PluginError = cascade::plugin::types::PluginError;
#[doc(hidden)]
#[allow(non_snake_case, unused_unsafe)]
pub unsafe fn _export_handle_cabi<T: Guest>(
    arg0: *mut u8,
    arg1: usize,
    arg2: *mut u8,
    arg3: usize,
    arg4: *mut u8,
    arg5: usize,
) -> *mut u8 {
    unsafe {
        #[cfg(target_arch = "wasm32")]
        _rt::run_ctors_once();
        let result19 = {
            let len0 = arg1;
            let bytes0 = _rt::Vec::from_raw_parts(arg0.cast(), len0, len0);
            let base11 = arg2;
            let len11 = arg3;
            let mut result11 = _rt::Vec::with_capacity(len11);
            for i in 0..len11 {
                let base = base11.add(i * (7 * ::core::mem::size_of::<*const u8>()));
                let e11 = {
                    let l1 = *base.add(0).cast::<*mut u8>();
                    let l2 = *base.add(::core::mem::size_of::<*const u8>()).cast::<usize>();
                    let len3 = l2;
                    let bytes3 = _rt::Vec::from_raw_parts(l1.cast(), len3, len3);
                    let l4 = *base.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>();
                    let l5 = *base.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>();
                    let len6 = l5;
                    let l7 = i32::from(*base.add(4 * ::core::mem::size_of::<*const u8>()).cast::<u8>());
                    let l8 = *base.add(5 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>();
                    let l9 = *base.add(6 * ::core::mem::size_of::<*const u8>()).cast::<usize>();
                    let len10 = l9;
                    cascade::plugin::types::NamedTensor {
                        name: _rt::string_lift(bytes3),
                        tensor: cascade::plugin::types::Tensor {
                            dimensions: _rt::Vec::from_raw_parts(l4.cast(), len6, len6),
                            ty: cascade::plugin::types::TensorType::_lift(l7 as u8),
                            data: _rt::Vec::from_raw_parts(l8.cast(), len10, len10),
                        },
                    }
                };
                result11.push(e11);
            }
            _rt::cabi_dealloc(
                base11,
                len11 * (7 * ::core::mem::size_of::<*const u8>()),
                ::core::mem::size_of::<*const u8>(),
            );
            let base18 = arg4;
            let len18 = arg5;
            let mut result18 = _rt::Vec::with_capacity(len18);
            for i in 0..len18 {
                let base = base18.add(i * (4 * ::core::mem::size_of::<*const u8>()));
                let e18 = {
                    let l12 = *base.add(0).cast::<*mut u8>();
                    let l13 = *base.add(::core::mem::size_of::<*const u8>()).cast::<usize>();
                    let len14 = l13;
                    let bytes14 = _rt::Vec::from_raw_parts(l12.cast(), len14, len14);
                    let l15 = *base.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>();
                    let l16 = *base.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>();
                    let len17 = l16;
                    let bytes17 = _rt::Vec::from_raw_parts(l15.cast(), len17, len17);
                    (_rt::string_lift(bytes14), _rt::string_lift(bytes17))
                };
                result18.push(e18);
            }
            _rt::cabi_dealloc(
                base18,
                len18 * (4 * ::core::mem::size_of::<*const u8>()),
                ::core::mem::size_of::<*const u8>(),
            );
            T::handle(cascade::plugin::types::Request {
                route: _rt::string_lift(bytes0),
                inputs: result11,
                parameters: result18,
            })
        };
        let ptr20 = (&raw mut _RET_AREA.0).cast::<u8>();
        match result19 {
            Ok(e) => {
                *ptr20.add(0).cast::<u8>() = (0i32) as u8;
                use cascade::plugin::types::Outcome as V30;
                match e {
                    V30::Answer(e) => {
                        *ptr20.add(::core::mem::size_of::<*const u8>()).cast::<u8>() = (0i32) as u8;
                        let cascade::plugin::types::Answer {
                            outputs: outputs21,
                            confidence: confidence21,
                            label: label21,
                        } = e;
                        let vec27 = outputs21;
                        let len27 = vec27.len();
                        let layout27 = _rt::alloc::Layout::from_size_align(
                            vec27.len() * (7 * ::core::mem::size_of::<*const u8>()),
                            ::core::mem::size_of::<*const u8>(),
                        )
                        .unwrap();
                        let (result27, _cleanup27) = wit_bindgen::rt::Cleanup::new(layout27);
                        if let Some(cleanup) = _cleanup27 {
                            cleanup.forget();
                        }
                        for (i, e) in vec27.into_iter().enumerate() {
                            let base = result27.add(i * (7 * ::core::mem::size_of::<*const u8>()));
                            {
                                let cascade::plugin::types::NamedTensor { name: name22, tensor: tensor22 } =
                                    e;
                                let vec23 = (name22.into_bytes()).into_boxed_slice();
                                let ptr23 = vec23.as_ptr().cast::<u8>();
                                let len23 = vec23.len();
                                ::core::mem::forget(vec23);
                                *base.add(::core::mem::size_of::<*const u8>()).cast::<usize>() = len23;
                                *base.add(0).cast::<*mut u8>() = ptr23.cast_mut();
                                let cascade::plugin::types::Tensor {
                                    dimensions: dimensions24,
                                    ty: ty24,
                                    data: data24,
                                } = tensor22;
                                let vec25 = (dimensions24).into_boxed_slice();
                                let ptr25 = vec25.as_ptr().cast::<u8>();
                                let len25 = vec25.len();
                                ::core::mem::forget(vec25);
                                *base.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>() = len25;
                                *base.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>() =
                                    ptr25.cast_mut();
                                *base.add(4 * ::core::mem::size_of::<*const u8>()).cast::<u8>() =
                                    (ty24.clone() as i32) as u8;
                                let vec26 = (data24).into_boxed_slice();
                                let ptr26 = vec26.as_ptr().cast::<u8>();
                                let len26 = vec26.len();
                                ::core::mem::forget(vec26);
                                *base.add(6 * ::core::mem::size_of::<*const u8>()).cast::<usize>() = len26;
                                *base.add(5 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>() =
                                    ptr26.cast_mut();
                            }
                        }
                        *ptr20.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>() = len27;
                        *ptr20.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>() = result27;
                        *ptr20.add(4 * ::core::mem::size_of::<*const u8>()).cast::<f32>() =
                            _rt::as_f32(confidence21);
                        match label21 {
                            Some(e) => {
                                *ptr20.add(5 * ::core::mem::size_of::<*const u8>()).cast::<u8>() =
                                    (1i32) as u8;
                                let vec28 = (e.into_bytes()).into_boxed_slice();
                                let ptr28 = vec28.as_ptr().cast::<u8>();
                                let len28 = vec28.len();
                                ::core::mem::forget(vec28);
                                *ptr20.add(7 * ::core::mem::size_of::<*const u8>()).cast::<usize>() = len28;
                                *ptr20.add(6 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>() =
                                    ptr28.cast_mut();
                            }
                            None => {
                                *ptr20.add(5 * ::core::mem::size_of::<*const u8>()).cast::<u8>() =
                                    (0i32) as u8;
                            }
                        };
                    }
                    V30::Escalate(e) => {
                        *ptr20.add(::core::mem::size_of::<*const u8>()).cast::<u8>() = (1i32) as u8;
                        let vec29 = (e.into_bytes()).into_boxed_slice();
                        let ptr29 = vec29.as_ptr().cast::<u8>();
                        let len29 = vec29.len();
                        ::core::mem::forget(vec29);
                        *ptr20.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>() = len29;
                        *ptr20.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>() =
                            ptr29.cast_mut();
                    }
                }
            }
            Err(e) => {
                *ptr20.add(0).cast::<u8>() = (1i32) as u8;
                use cascade::plugin::types::PluginError as V34;
                match e {
                    V34::BadRequest(e) => {
                        *ptr20.add(::core::mem::size_of::<*const u8>()).cast::<u8>() = (0i32) as u8;
                        let vec31 = (e.into_bytes()).into_boxed_slice();
                        let ptr31 = vec31.as_ptr().cast::<u8>();
                        let len31 = vec31.len();
                        ::core::mem::forget(vec31);
                        *ptr20.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>() = len31;
                        *ptr20.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>() =
                            ptr31.cast_mut();
                    }
                    V34::Inference(e) => {
                        *ptr20.add(::core::mem::size_of::<*const u8>()).cast::<u8>() = (1i32) as u8;
                        let vec32 = (e.into_bytes()).into_boxed_slice();
                        let ptr32 = vec32.as_ptr().cast::<u8>();
                        let len32 = vec32.len();
                        ::core::mem::forget(vec32);
                        *ptr20.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>() = len32;
                        *ptr20.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>() =
                            ptr32.cast_mut();
                    }
                    V34::Internal(e) => {
                        *ptr20.add(::core::mem::size_of::<*const u8>()).cast::<u8>() = (2i32) as u8;
                        let vec33 = (e.into_bytes()).into_boxed_slice();
                        let ptr33 = vec33.as_ptr().cast::<u8>();
                        let len33 = vec33.len();
                        ::core::mem::forget(vec33);
                        *ptr20.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>() = len33;
                        *ptr20.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>() =
                            ptr33.cast_mut();
                    }
                }
            }
        };
        ptr20
    }
}
#[doc(hidden)]
#[allow(non_snake_case)]
pub unsafe fn __post_return_handle<T: Guest>(arg0: *mut u8) {
    unsafe {
        let l0 = i32::from(*arg0.add(0).cast::<u8>());
        match l0 {
            0 => {
                let l1 = i32::from(*arg0.add(::core::mem::size_of::<*const u8>()).cast::<u8>());
                match l1 {
                    0 => {
                        let l2 = *arg0.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>();
                        let l3 = *arg0.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>();
                        let base12 = l2;
                        let len12 = l3;
                        for i in 0..len12 {
                            let base = base12.add(i * (7 * ::core::mem::size_of::<*const u8>()));
                            {
                                let l4 = *base.add(0).cast::<*mut u8>();
                                let l5 = *base.add(::core::mem::size_of::<*const u8>()).cast::<usize>();
                                _rt::cabi_dealloc(l4, l5, 1);
                                let l6 = *base.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>();
                                let l7 = *base.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>();
                                let base8 = l6;
                                let len8 = l7;
                                _rt::cabi_dealloc(base8, len8 * 4, 4);
                                let l9 = *base.add(5 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>();
                                let l10 = *base.add(6 * ::core::mem::size_of::<*const u8>()).cast::<usize>();
                                let base11 = l9;
                                let len11 = l10;
                                _rt::cabi_dealloc(base11, len11 * 1, 1);
                            }
                        }
                        _rt::cabi_dealloc(
                            base12,
                            len12 * (7 * ::core::mem::size_of::<*const u8>()),
                            ::core::mem::size_of::<*const u8>(),
                        );
                        let l13 = i32::from(*arg0.add(5 * ::core::mem::size_of::<*const u8>()).cast::<u8>());
                        match l13 {
                            0 => {}
                            _ => {
                                let l14 =
                                    *arg0.add(6 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>();
                                let l15 = *arg0.add(7 * ::core::mem::size_of::<*const u8>()).cast::<usize>();
                                _rt::cabi_dealloc(l14, l15, 1);
                            }
                        }
                    }
                    _ => {
                        let l16 = *arg0.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>();
                        let l17 = *arg0.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>();
                        _rt::cabi_dealloc(l16, l17, 1);
                    }
                }
            }
            _ => {
                let l18 = i32::from(*arg0.add(::core::mem::size_of::<*const u8>()).cast::<u8>());
                match l18 {
                    0 => {
                        let l19 = *arg0.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>();
                        let l20 = *arg0.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>();
                        _rt::cabi_dealloc(l19, l20, 1);
                    }
                    1 => {
                        let l21 = *arg0.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>();
                        let l22 = *arg0.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>();
                        _rt::cabi_dealloc(l21, l22, 1);
                    }
                    _ => {
                        let l23 = *arg0.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>();
                        let l24 = *arg0.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>();
                        _rt::cabi_dealloc(l23, l24, 1);
                    }
                }
            }
        }
    }
}
pub trait Guest {
    /// Handles one request: answer it, ask to escalate it, or fail it.
    #[allow(async_fn_in_trait)]
    fn handle(request: Request) -> Result<Outcome, PluginError>;
}
#[doc(hidden)]
#[macro_export]
macro_rules! __export_world_plugin_cabi {
    ($ty:ident with_types_in $($path_to_types:tt)*) => {
        const _ : () = { #[unsafe (export_name = "handle")] unsafe extern "C" fn
        export_handle(arg0 : * mut u8, arg1 : usize, arg2 : * mut u8, arg3 : usize, arg4
        : * mut u8, arg5 : usize,) -> * mut u8 { unsafe { $($path_to_types)*::
        _export_handle_cabi::<$ty > (arg0, arg1, arg2, arg3, arg4, arg5) } } #[unsafe
        (export_name = "cabi_post_handle")] unsafe extern "C" fn _post_return_handle(arg0
        : * mut u8,) { unsafe { $($path_to_types)*:: __post_return_handle::<$ty > (arg0)
        } } };
    };
}
#[doc(hidden)]
pub use __export_world_plugin_cabi;
#[cfg_attr(target_pointer_width = "64", repr(align(8)))]
#[cfg_attr(target_pointer_width = "32", repr(align(4)))]
struct _RetArea([::core::mem::MaybeUninit<u8>; 8 * ::core::mem::size_of::<*const u8>()]);
static mut _RET_AREA: _RetArea =
    _RetArea([::core::mem::MaybeUninit::uninit(); 8 * ::core::mem::size_of::<*const u8>()]);
#[rustfmt::skip]
#[allow(dead_code, clippy::all)]
pub mod cascade {
    pub mod plugin {
        /// Data types shared by the export and the imports.
        #[allow(dead_code, async_fn_in_trait, unused_imports, clippy::all)]
        pub mod types;
        /// Inference capability: run a model from the node's model registry.
        ///
        /// Shaped like wasi-nn (named graph, named tensors in, named tensors out) but stateless: one
        /// call runs one model once. Only models on the plugin's allowlist in the node config can be
        /// run; calling any other model is a capability violation and ends the request with an error.
        #[allow(dead_code, async_fn_in_trait, unused_imports, clippy::all)]
        pub mod inference;
        /// Logging capability: messages go to the node's `tracing` output, tagged with the plugin.
        #[allow(dead_code, async_fn_in_trait, unused_imports, clippy::all)]
        pub mod logging;
        /// Configuration capability: the plugin's static settings from the node config.
        #[allow(dead_code, async_fn_in_trait, unused_imports, clippy::all)]
        pub mod config;
    }
}
#[rustfmt::skip]
mod _rt {
    #![allow(dead_code, clippy::all)]
    pub use alloc_crate::vec::Vec;
    pub use alloc_crate::string::String;
    pub use alloc_crate::alloc;
    pub unsafe fn string_lift(bytes: Vec<u8>) -> String {
        if cfg!(debug_assertions) {
            String::from_utf8(bytes).unwrap()
        } else {
            unsafe { String::from_utf8_unchecked(bytes) }
        }
    }
    pub unsafe fn cabi_dealloc(ptr: *mut u8, size: usize, align: usize) {
        if size == 0 {
            return;
        }
        unsafe {
            let layout = alloc::Layout::from_size_align_unchecked(size, align);
            alloc::dealloc(ptr, layout);
        }
    }
    pub unsafe fn invalid_enum_discriminant<T>() -> T {
        if cfg!(debug_assertions) {
            panic!("invalid enum discriminant")
        } else {
            unsafe { core::hint::unreachable_unchecked() }
        }
    }
    #[cfg(target_arch = "wasm32")]
    pub fn run_ctors_once() {
        wit_bindgen::rt::run_ctors_once();
    }
    pub fn as_f32<T: AsF32>(t: T) -> f32 {
        t.as_f32()
    }
    pub trait AsF32 {
        fn as_f32(self) -> f32;
    }
    impl<'a, T: Copy + AsF32> AsF32 for &'a T {
        fn as_f32(self) -> f32 {
            (*self).as_f32()
        }
    }
    impl AsF32 for f32 {
        #[inline]
        fn as_f32(self) -> f32 {
            self as f32
        }
    }
    extern crate alloc as alloc_crate;
}
/// Generates `#[unsafe(no_mangle)]` functions to export the specified type as
/// the root implementation of all generated traits.
///
/// For more information see the documentation of `wit_bindgen::generate!`.
///
/// ```rust
/// # macro_rules! __export_cascade_plugin{ ($($t:tt)*) => (); }
/// # trait Guest {}
/// struct MyType;
///
/// impl Guest for MyType {
///     // ...
/// }
///
/// __export_cascade_plugin!(MyType);
/// ```
#[allow(unused_macros)]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin_impl {
    ($ty:ident) => {
        cascade_guest_sdk::__private::bindings::__export_cascade_plugin!($ty
        with_types_in cascade_guest_sdk::__private::bindings);
    };
    ($ty:ident with_types_in $($path_to_types_root:tt)*) => {
        $($path_to_types_root)*:: __export_world_plugin_cabi!($ty with_types_in
        $($path_to_types_root)*); const _ : () = { #[rustfmt::skip] #[cfg(target_arch =
        "wasm32")] #[unsafe (link_section =
        "component-type:wit-bindgen:0.46.0:cascade:plugin@0.1.0:plugin:imports and exports")]
        #[doc(hidden)] #[allow(clippy::octal_escapes)] pub static
        __WIT_BINDGEN_COMPONENT_TYPE : [u8; 995] = *
        b"\
\0asm\x0d\0\x01\0\0\x19\x16wit-component-encoding\x04\0\x07\xe6\x06\x01A\x02\x01\
A\x12\x01B\x14\x01m\x05\x04fp32\x02u8\x02i8\x03i32\x03i64\x04\0\x0btensor-type\x03\
\0\0\x01py\x01p}\x01r\x03\x0adimensions\x02\x02ty\x01\x04data\x03\x04\0\x06tenso\
r\x03\0\x04\x01r\x02\x04names\x06tensor\x05\x04\0\x0cnamed-tensor\x03\0\x06\x01p\
\x07\x01o\x02ss\x01p\x09\x01r\x03\x05routes\x06inputs\x08\x0aparameters\x0a\x04\0\
\x07request\x03\0\x0b\x01ks\x01r\x03\x07outputs\x08\x0aconfidencev\x05label\x0d\x04\
\0\x06answer\x03\0\x0e\x01q\x02\x06answer\x01\x0f\0\x08escalate\x01s\0\x04\0\x07\
outcome\x03\0\x10\x01q\x03\x0bbad-request\x01s\0\x09inference\x01s\0\x08internal\
\x01s\0\x04\0\x0cplugin-error\x03\0\x12\x03\0\x1acascade:plugin/types@0.1.0\x05\0\
\x02\x03\0\0\x0cnamed-tensor\x01B\x08\x02\x03\x02\x01\x01\x04\0\x0cnamed-tensor\x03\
\0\0\x01q\x03\x0dunknown-model\x01s\0\x0einvalid-tensor\x01s\0\x06failed\x01s\0\x04\
\0\x05error\x03\0\x02\x01p\x01\x01j\x01\x04\x01\x03\x01@\x02\x05models\x06inputs\
\x04\0\x05\x04\0\x07compute\x01\x06\x03\0\x1ecascade:plugin/inference@0.1.0\x05\x02\
\x01B\x04\x01m\x05\x05trace\x05debug\x04info\x04warn\x05error\x04\0\x05level\x03\
\0\0\x01@\x02\x05level\x01\x07messages\x01\0\x04\0\x03log\x01\x02\x03\0\x1ccasca\
de:plugin/logging@0.1.0\x05\x03\x01B\x07\x01ks\x01@\x01\x03keys\0\0\x04\0\x03get\
\x01\x01\x01o\x02ss\x01p\x02\x01@\0\0\x03\x04\0\x07get-all\x01\x04\x03\0\x1bcasc\
ade:plugin/config@0.1.0\x05\x04\x02\x03\0\0\x07request\x03\0\x07request\x03\0\x05\
\x02\x03\0\0\x07outcome\x03\0\x07outcome\x03\0\x07\x02\x03\0\0\x0cplugin-error\x03\
\0\x0cplugin-error\x03\0\x09\x01j\x01\x08\x01\x0a\x01@\x01\x07request\x06\0\x0b\x04\
\0\x06handle\x01\x0c\x04\0\x1bcascade:plugin/plugin@0.1.0\x04\0\x0b\x0c\x01\0\x06\
plugin\x03\0\0\0G\x09producers\x01\x0cprocessed-by\x02\x0dwit-component\x070.239\
.0\x10wit-bindgen-rust\x060.46.0";
        };
    };
}
#[doc(inline)]
pub use __export_plugin_impl as __export_cascade_plugin;
#[rustfmt::skip]
#[cfg(target_arch = "wasm32")]
#[unsafe(
    link_section = "component-type:wit-bindgen:0.46.0:cascade:plugin@0.1.0:plugin-with-all-of-its-exports-removed:encoded world"
)]
#[doc(hidden)]
#[allow(clippy::octal_escapes)]
pub static __WIT_BINDGEN_COMPONENT_TYPE: [u8; 1028] = *b"\
\0asm\x0d\0\x01\0\0\x19\x16wit-component-encoding\x04\0\x07\xe7\x06\x01A\x02\x01\
A\x0f\x01B\x14\x01m\x05\x04fp32\x02u8\x02i8\x03i32\x03i64\x04\0\x0btensor-type\x03\
\0\0\x01py\x01p}\x01r\x03\x0adimensions\x02\x02ty\x01\x04data\x03\x04\0\x06tenso\
r\x03\0\x04\x01r\x02\x04names\x06tensor\x05\x04\0\x0cnamed-tensor\x03\0\x06\x01p\
\x07\x01o\x02ss\x01p\x09\x01r\x03\x05routes\x06inputs\x08\x0aparameters\x0a\x04\0\
\x07request\x03\0\x0b\x01ks\x01r\x03\x07outputs\x08\x0aconfidencev\x05label\x0d\x04\
\0\x06answer\x03\0\x0e\x01q\x02\x06answer\x01\x0f\0\x08escalate\x01s\0\x04\0\x07\
outcome\x03\0\x10\x01q\x03\x0bbad-request\x01s\0\x09inference\x01s\0\x08internal\
\x01s\0\x04\0\x0cplugin-error\x03\0\x12\x03\0\x1acascade:plugin/types@0.1.0\x05\0\
\x02\x03\0\0\x0cnamed-tensor\x01B\x08\x02\x03\x02\x01\x01\x04\0\x0cnamed-tensor\x03\
\0\0\x01q\x03\x0dunknown-model\x01s\0\x0einvalid-tensor\x01s\0\x06failed\x01s\0\x04\
\0\x05error\x03\0\x02\x01p\x01\x01j\x01\x04\x01\x03\x01@\x02\x05models\x06inputs\
\x04\0\x05\x04\0\x07compute\x01\x06\x03\0\x1ecascade:plugin/inference@0.1.0\x05\x02\
\x01B\x04\x01m\x05\x05trace\x05debug\x04info\x04warn\x05error\x04\0\x05level\x03\
\0\0\x01@\x02\x05level\x01\x07messages\x01\0\x04\0\x03log\x01\x02\x03\0\x1ccasca\
de:plugin/logging@0.1.0\x05\x03\x01B\x07\x01ks\x01@\x01\x03keys\0\0\x04\0\x03get\
\x01\x01\x01o\x02ss\x01p\x02\x01@\0\0\x03\x04\0\x07get-all\x01\x04\x03\0\x1bcasc\
ade:plugin/config@0.1.0\x05\x04\x02\x03\0\0\x07request\x03\0\x07request\x03\0\x05\
\x02\x03\0\0\x07outcome\x03\0\x07outcome\x03\0\x07\x02\x03\0\0\x0cplugin-error\x03\
\0\x0cplugin-error\x03\0\x09\x04\0;cascade:plugin/plugin-with-all-of-its-exports\
-removed@0.1.0\x04\0\x0b,\x01\0&plugin-with-all-of-its-exports-removed\x03\0\0\0\
G\x09producers\x01\x0cprocessed-by\x02\x0dwit-component\x070.239.0\x10wit-bindge\
n-rust\x060.46.0";
#[inline(never)]
#[doc(hidden)]
pub fn __link_custom_section_describing_imports() {
    wit_bindgen::rt::maybe_link_cabi_realloc();
}
