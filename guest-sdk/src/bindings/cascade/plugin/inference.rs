// Part of guest-sdk/src/bindings.rs: written by tools/bindgen.sh, do not edit.
#[used]
#[doc(hidden)]
static __FORCE_SECTION_REF: fn() = super::super::super::__link_custom_section_describing_imports;
use super::super::super::_rt;
pub type NamedTensor = super::super::super::cascade::plugin::types::NamedTensor;
/// Why an inference call failed. The plugin may report it or recover.
#[derive(Clone)]
pub enum Error {
    /// The node has no model by that name for this plugin.
    UnknownModel(_rt::String),
    /// The tensors do not match the model's inputs (names, element types, shapes or
    /// byte lengths); the string says which and how.
    InvalidTensor(_rt::String),
    /// The backend failed while running valid inputs.
    Failed(_rt::String),
}
impl ::core::fmt::Debug for Error {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        match self {
            Error::UnknownModel(e) => {
                f.debug_tuple("Error::UnknownModel").field(e).finish()
            }
            Error::InvalidTensor(e) => {
                f.debug_tuple("Error::InvalidTensor").field(e).finish()
            }
            Error::Failed(e) => f.debug_tuple("Error::Failed").field(e).finish(),
        }
    }
}
impl ::core::fmt::Display for Error {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        write!(f, "{:?}", self)
    }
}
impl std::error::Error for Error {}
#[allow(unused_unsafe, clippy::all)]
/// Runs `model` on `inputs` (one per model input, matched by name; the first dimension
/// of every input is the batch) and returns every model output, named as in the graph.
#[allow(async_fn_in_trait)]
pub fn compute(
    model: &str,
    inputs: &[NamedTensor],
) -> Result<_rt::Vec<NamedTensor>, Error> {
    unsafe {
        #[cfg_attr(target_pointer_width = "64", repr(align(8)))]
        #[cfg_attr(target_pointer_width = "32", repr(align(4)))]
        struct RetArea(
            [::core::mem::MaybeUninit<u8>; 4 * ::core::mem::size_of::<*const u8>()],
        );
        let mut ret_area = RetArea(
            [::core::mem::MaybeUninit::uninit(); 4 * ::core::mem::size_of::<*const u8>()],
        );
        let vec0 = model;
        let ptr0 = vec0.as_ptr().cast::<u8>();
        let len0 = vec0.len();
        let vec6 = inputs;
        let len6 = vec6.len();
        let layout6 = _rt::alloc::Layout::from_size_align(
                vec6.len() * (7 * ::core::mem::size_of::<*const u8>()),
                ::core::mem::size_of::<*const u8>(),
            )
            .unwrap();
        let (result6, _cleanup6) = wit_bindgen::rt::Cleanup::new(layout6);
        for (i, e) in vec6.into_iter().enumerate() {
            let base = result6.add(i * (7 * ::core::mem::size_of::<*const u8>()));
            {
                let super::super::super::cascade::plugin::types::NamedTensor {
                    name: name1,
                    tensor: tensor1,
                } = e;
                let vec2 = name1;
                let ptr2 = vec2.as_ptr().cast::<u8>();
                let len2 = vec2.len();
                *base.add(::core::mem::size_of::<*const u8>()).cast::<usize>() = len2;
                *base.add(0).cast::<*mut u8>() = ptr2.cast_mut();
                let super::super::super::cascade::plugin::types::Tensor {
                    dimensions: dimensions3,
                    ty: ty3,
                    data: data3,
                } = tensor1;
                let vec4 = dimensions3;
                let ptr4 = vec4.as_ptr().cast::<u8>();
                let len4 = vec4.len();
                *base.add(3 * ::core::mem::size_of::<*const u8>()).cast::<usize>() = len4;
                *base.add(2 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>() = ptr4
                    .cast_mut();
                *base.add(4 * ::core::mem::size_of::<*const u8>()).cast::<u8>() = (ty3
                    .clone() as i32) as u8;
                let vec5 = data3;
                let ptr5 = vec5.as_ptr().cast::<u8>();
                let len5 = vec5.len();
                *base.add(6 * ::core::mem::size_of::<*const u8>()).cast::<usize>() = len5;
                *base.add(5 * ::core::mem::size_of::<*const u8>()).cast::<*mut u8>() = ptr5
                    .cast_mut();
            }
        }
        let ptr7 = ret_area.0.as_mut_ptr().cast::<u8>();
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "cascade:plugin/inference@0.1.0")]
        unsafe extern "C" {
            #[link_name = "compute"]
            fn wit_import8(_: *mut u8, _: usize, _: *mut u8, _: usize, _: *mut u8);
        }
        #[cfg(not(target_arch = "wasm32"))]
        unsafe extern "C" fn wit_import8(
            _: *mut u8,
            _: usize,
            _: *mut u8,
            _: usize,
            _: *mut u8,
        ) {
            unreachable!()
        }
        wit_import8(ptr0.cast_mut(), len0, result6, len6, ptr7);
        let l9 = i32::from(*ptr7.add(0).cast::<u8>());
        let result34 = match l9 {
            0 => {
                let e = {
                    let l10 = *ptr7
                        .add(::core::mem::size_of::<*const u8>())
                        .cast::<*mut u8>();
                    let l11 = *ptr7
                        .add(2 * ::core::mem::size_of::<*const u8>())
                        .cast::<usize>();
                    let base22 = l10;
                    let len22 = l11;
                    let mut result22 = _rt::Vec::with_capacity(len22);
                    for i in 0..len22 {
                        let base = base22
                            .add(i * (7 * ::core::mem::size_of::<*const u8>()));
                        let e22 = {
                            let l12 = *base.add(0).cast::<*mut u8>();
                            let l13 = *base
                                .add(::core::mem::size_of::<*const u8>())
                                .cast::<usize>();
                            let len14 = l13;
                            let bytes14 = _rt::Vec::from_raw_parts(
                                l12.cast(),
                                len14,
                                len14,
                            );
                            let l15 = *base
                                .add(2 * ::core::mem::size_of::<*const u8>())
                                .cast::<*mut u8>();
                            let l16 = *base
                                .add(3 * ::core::mem::size_of::<*const u8>())
                                .cast::<usize>();
                            let len17 = l16;
                            let l18 = i32::from(
                                *base
                                    .add(4 * ::core::mem::size_of::<*const u8>())
                                    .cast::<u8>(),
                            );
                            let l19 = *base
                                .add(5 * ::core::mem::size_of::<*const u8>())
                                .cast::<*mut u8>();
                            let l20 = *base
                                .add(6 * ::core::mem::size_of::<*const u8>())
                                .cast::<usize>();
                            let len21 = l20;
                            super::super::super::cascade::plugin::types::NamedTensor {
                                name: _rt::string_lift(bytes14),
                                tensor: super::super::super::cascade::plugin::types::Tensor {
                                    dimensions: _rt::Vec::from_raw_parts(
                                        l15.cast(),
                                        len17,
                                        len17,
                                    ),
                                    ty: super::super::super::cascade::plugin::types::TensorType::_lift(
                                        l18 as u8,
                                    ),
                                    data: _rt::Vec::from_raw_parts(l19.cast(), len21, len21),
                                },
                            }
                        };
                        result22.push(e22);
                    }
                    _rt::cabi_dealloc(
                        base22,
                        len22 * (7 * ::core::mem::size_of::<*const u8>()),
                        ::core::mem::size_of::<*const u8>(),
                    );
                    result22
                };
                Ok(e)
            }
            1 => {
                let e = {
                    let l23 = i32::from(
                        *ptr7.add(::core::mem::size_of::<*const u8>()).cast::<u8>(),
                    );
                    let v33 = match l23 {
                        0 => {
                            let e33 = {
                                let l24 = *ptr7
                                    .add(2 * ::core::mem::size_of::<*const u8>())
                                    .cast::<*mut u8>();
                                let l25 = *ptr7
                                    .add(3 * ::core::mem::size_of::<*const u8>())
                                    .cast::<usize>();
                                let len26 = l25;
                                let bytes26 = _rt::Vec::from_raw_parts(
                                    l24.cast(),
                                    len26,
                                    len26,
                                );
                                _rt::string_lift(bytes26)
                            };
                            Error::UnknownModel(e33)
                        }
                        1 => {
                            let e33 = {
                                let l27 = *ptr7
                                    .add(2 * ::core::mem::size_of::<*const u8>())
                                    .cast::<*mut u8>();
                                let l28 = *ptr7
                                    .add(3 * ::core::mem::size_of::<*const u8>())
                                    .cast::<usize>();
                                let len29 = l28;
                                let bytes29 = _rt::Vec::from_raw_parts(
                                    l27.cast(),
                                    len29,
                                    len29,
                                );
                                _rt::string_lift(bytes29)
                            };
                            Error::InvalidTensor(e33)
                        }
                        n => {
                            debug_assert_eq!(n, 2, "invalid enum discriminant");
                            let e33 = {
                                let l30 = *ptr7
                                    .add(2 * ::core::mem::size_of::<*const u8>())
                                    .cast::<*mut u8>();
                                let l31 = *ptr7
                                    .add(3 * ::core::mem::size_of::<*const u8>())
                                    .cast::<usize>();
                                let len32 = l31;
                                let bytes32 = _rt::Vec::from_raw_parts(
                                    l30.cast(),
                                    len32,
                                    len32,
                                );
                                _rt::string_lift(bytes32)
                            };
                            Error::Failed(e33)
                        }
                    };
                    v33
                };
                Err(e)
            }
            _ => _rt::invalid_enum_discriminant(),
        };
        result34
    }
}
